// Softcap + cross entropy over one row of logits in fp32 (backend.h's
// softcap_cross_entropy): z = cap*tanh(l/cap), loss = logsumexp(z) - z[target], and the
// gradient grad_scale * (softmax(z) - onehot) * (1 - tanh^2). The kernel keeps an online
// (max, sum) per thread and merges them; softcap_ce_row() applies the same functions to a
// row in order, for the host test.
// On a GPU the kernel's instructions cost as much as its bytes (two passes over the V =
// 50,304 logits of a row, each a tanh and an exp per logit; bench/head_sass.sh counts
// them), so the math is written for few of them: logits are kept in base 2, t = z * log2(e) = th * (cap * log2(e)), so an exp is
// one MUFU.EX2 (math/exp2.h), and l / cap is l * (1 / cap) (a multiply; a correctly
// rounded fp32 division is ~10 instructions). Each moves a result by about an fp32 ulp of
// its operand, far inside the bf16 rounding of the logits themselves.
// t is never below -k (z >= -cap), so a state starts at max = -k: merging two states never
// subtracts infinities. A NaN logit makes the sum, and so the loss, NaN.
#pragma once
#include <math.h>

#include <cstdint>

#include "backend/cuda/math/exp2.h"
#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

// What a row's math needs of the cap, formed once per kernel.
struct Softcap {
  float inv_cap;  // 1 / cap
  float k;        // cap * log2(e): t = th * k
};

SR_HD inline Softcap softcap_of(float cap) { return {1.0f / cap, cap * kLog2e}; }

// th = tanh(l / cap); returns t = z * log2(e), the softcapped logit in base 2.
SR_HD inline float softcap2(float l, Softcap c, float& th) {
  th = tanhf(l * c.inv_cap);
  return th * c.k;
}

struct SoftmaxState {
  float m;  // running max of t (>= -k)
  float s;  // sum of 2^(t - m)
};

SR_HD inline SoftmaxState softmax_start(Softcap c) { return {-c.k, 0.0f}; }

// Sums that add a product round it as one fma (fma_rn, math/hd.h): the streaming kernel
// and the one that keeps the row in shared memory must give each other's bits.
SR_HD inline void softmax_add(SoftmaxState& st, float t) {
  if (t > st.m) {
    st.s = fma_rn(st.s, exp2_ftz(st.m - t), 1.0f);
    st.m = t;
  } else {
    st.s += exp2_ftz(t - st.m);
  }
}

SR_HD inline SoftmaxState softmax_merge(SoftmaxState a, SoftmaxState b) {
  const float m = fmaxf(a.m, b.m);
  return {m, fma_rn(a.s, exp2_ftz(a.m - m), b.s * exp2_ftz(b.m - m))};
}

// logsumexp(z) - z[target], back in natural units. m - t first: exact where the target is
// near the max (Sterbenz), so a small loss keeps its digits.
SR_HD inline float ce_loss(SoftmaxState st, float t_target) {
  return ((st.m - t_target) + log2f(st.s)) * kLn2;
}

// dL/dl for one logit, L = grad_scale * loss; inv_s = 1 / st.s.
SR_HD inline float ce_grad(float t, float th, bool is_target, SoftmaxState st, float inv_s,
                           float grad_scale) {
  const float p = exp2_ftz(t - st.m) * inv_s;
  return grad_scale * (p - (is_target ? 1.0f : 0.0f)) * fma_rn(-th, th, 1.0f);
}

// One row in order (host test): *loss (=); with backward, l (=) the gradient.
inline void softcap_ce_row(float* l, float* loss, int32_t target, int64_t V, float cap,
                           float grad_scale, bool backward) {
  const Softcap c = softcap_of(cap);
  SoftmaxState st = softmax_start(c);
  float th = 0;
  for (int64_t v = 0; v < V; ++v) softmax_add(st, softcap2(l[v], c, th));
  const float tt = softcap2(l[target], c, th);
  *loss = ce_loss(st, tt);
  if (!backward) return;
  const float inv = 1.0f / st.s;
  for (int64_t v = 0; v < V; ++v) {
    const float t = softcap2(l[v], c, th);
    l[v] = ce_grad(t, th, v == target, st, inv, grad_scale);
  }
}

}  // namespace speedrun::cuda::math
