// The head's softcap + cross entropy, fused, row-parallel. logits [R, V] raw lm_head outputs,
// losses [R] (=), targets [R] in [0, V) (else speedrun::Error, nothing written); cap > 0.
// z = cap*tanh(l/cap); losses[r] = logsumexp(z_r) - z_r[target_r] (max-subtracted). If backward,
// logits are overwritten (=) with dL/dl for L = grad_scale * sum_r losses[r], that is
// grad_scale * (softmax(z_r) - onehot(target_r)) * (1 - (z/cap)^2).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "backend/cpu/vec_math.h"
#include "core/error.h"

namespace speedrun::cpu {

template <class T>
void softcap_cross_entropy(T* logits, T* losses, const int32_t* targets, int64_t R, int64_t V,
                           T cap, T grad_scale, bool backward) {
  check(cap > T(0), "softcap_cross_entropy: cap ", cap, " must be positive");
  for (int64_t r = 0; r < R; ++r)
    check(targets[r] >= 0 && targets[r] < V, "softcap_cross_entropy: target ", targets[r],
          " of row ", r, " is outside the vocabulary [0, ", V, ")");
#pragma omp parallel
  {
    // Per-thread rows of tanh(l/cap) and exp(z - max z); OpenMP threads persist, so these
    // are allocated once per thread and vocabulary size.
    thread_local std::vector<T> th_buf, e_buf;
    th_buf.resize(size_t(V));
    e_buf.resize(size_t(V));
    T* th = th_buf.data();
    T* e = e_buf.data();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      T* l = logits + r * V;
      const T zmax = cap * tanh_div_max(th, l, cap, V);  // z = cap*th is monotone in th
      const double sum = exp_affine_sum(e, th, cap, zmax, V);
      const double lse = double(zmax) + std::log(sum);
      const int64_t tgt = targets[r];
      losses[r] = T(lse - double(cap * th[tgt]));
      if (backward) {
        const T inv = T(1.0 / sum);
        for (int64_t v = 0; v < V; ++v) l[v] = grad_scale * (e[v] * inv) * (T(1) - th[v] * th[v]);
        l[tgt] = grad_scale * (e[tgt] * inv - T(1)) * (T(1) - th[tgt] * th[tgt]);
      }
    }
  }
}

}  // namespace speedrun::cpu
