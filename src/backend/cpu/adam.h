// PyTorch's Adam (no weight decay), one step over n elements; p, m, v updated in place,
// g read. step counts from 1. Scalars (bias corrections, step size) in double as PyTorch
// computes them on the host; per-element math in T, in the order of PyTorch's fused kernel.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cpu/reduce.h"
#include "core/error.h"

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace speedrun::cpu {

namespace detail {
template <class T>
struct AdamScalars {
  T b1, omb1, b2, omb2, step_size, bc2_sqrt, eps;
};

template <class T>
inline void adam_span(T* p, const T* g, T* m, T* v, int64_t n, const AdamScalars<T>& s) {
  int64_t i = 0;
#ifdef __AVX__
  // std::sqrt does not vectorise under -fmath-errno; the same IEEE operations, 8 at a time.
  if constexpr (std::is_same_v<T, float>) {
    const __m256 b1 = _mm256_set1_ps(s.b1), omb1 = _mm256_set1_ps(s.omb1);
    const __m256 b2 = _mm256_set1_ps(s.b2), omb2 = _mm256_set1_ps(s.omb2);
    const __m256 step = _mm256_set1_ps(s.step_size), bc2 = _mm256_set1_ps(s.bc2_sqrt);
    const __m256 eps = _mm256_set1_ps(s.eps);
    for (; i + 8 <= n; i += 8) {
      const __m256 gi = _mm256_loadu_ps(g + i);
      const __m256 mi =
          _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(omb1, gi));
      const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                      _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
      _mm256_storeu_ps(m + i, mi);
      _mm256_storeu_ps(v + i, vi);
      const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
      const __m256 upd = _mm256_div_ps(_mm256_mul_ps(step, mi), denom);
      _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i), upd));
    }
  }
#endif
  for (; i < n; ++i) {
    const T gi = g[i];
    const T mi = s.b1 * m[i] + s.omb1 * gi;
    const T vi = s.b2 * v[i] + s.omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const T denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
    p[i] -= s.step_size * mi / denom;
  }
}
}  // namespace detail

template <class T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, double lr, double beta1, double beta2,
               double eps, int64_t step) {
  check(step >= 1, "adam_step: step ", step, " must count from 1");
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  const detail::AdamScalars<T> s{T(beta1),     T(1.0 - beta1),          T(beta2), T(1.0 - beta2),
                                 T(lr / bc1), T(std::sqrt(bc2)), T(eps)};
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
#pragma omp parallel for schedule(static) if (parallel: n >= kParallelMin)
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t i0 = k * kReduceChunk;
    const int64_t len = n - i0 < kReduceChunk ? n - i0 : kReduceChunk;
    detail::adam_span(p + i0, g + i0, m + i0, v + i0, len, s);
  }
}

}  // namespace speedrun::cpu
