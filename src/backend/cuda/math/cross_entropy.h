// Softcap + cross entropy over one row of logits in fp32 (backend.h's
// softcap_cross_entropy): z = cap*tanh(l/cap), loss = logsumexp(z) - z[target], and the
// gradient grad_scale * (softmax(z) - onehot) * (1 - tanh^2). The kernel keeps an online
// (max, sum of exp(z - max)) per thread and merges them; softcap_ce_row() applies the
// same functions to a row in order, for the host test.
// z is never below -cap, so a state starts at max = -cap: merging two states never
// subtracts infinities. A NaN logit makes the sum, and so the loss, NaN.
#pragma once
#include <math.h>

#include <cstdint>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

struct SoftmaxState {
  float m;  // running max of z (>= -cap)
  float s;  // sum of exp(z - m)
};

SR_HD inline SoftmaxState softmax_start(float cap) { return {-cap, 0.0f}; }

// z = cap * tanh(l / cap); th = tanh(l / cap) (for the gradient).
SR_HD inline float softcap(float l, float cap, float& th) {
  th = tanhf(l / cap);
  return cap * th;
}

SR_HD inline void softmax_add(SoftmaxState& st, float z) {
  if (z > st.m) {
    st.s = st.s * expf(st.m - z) + 1.0f;
    st.m = z;
  } else {
    st.s += expf(z - st.m);
  }
}

SR_HD inline SoftmaxState softmax_merge(SoftmaxState a, SoftmaxState b) {
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

SR_HD inline float ce_loss(SoftmaxState st, float z_target) {
  return st.m + logf(st.s) - z_target;
}

// dL/dl for one logit, L = grad_scale * loss; inv_s = 1 / st.s.
SR_HD inline float ce_grad(float z, float th, bool is_target, SoftmaxState st, float inv_s,
                           float grad_scale) {
  const float p = expf(z - st.m) * inv_s;
  return grad_scale * (p - (is_target ? 1.0f : 0.0f)) * (1.0f - th * th);
}

// One row in order (host test): *loss (=); with backward, l (=) the gradient.
inline void softcap_ce_row(float* l, float* loss, int32_t target, int64_t V, float cap,
                           float grad_scale, bool backward) {
  SoftmaxState st = softmax_start(cap);
  float th = 0;
  for (int64_t v = 0; v < V; ++v) softmax_add(st, softcap(l[v], cap, th));
  const float zt = softcap(l[target], cap, th);
  *loss = ce_loss(st, zt);
  if (!backward) return;
  const float inv = 1.0f / st.s;
  for (int64_t v = 0; v < V; ++v) {
    const float z = softcap(l[v], cap, th);
    l[v] = ce_grad(z, th, v == target, st, inv, grad_scale);
  }
}

}  // namespace speedrun::cuda::math
