// Row helpers for the loss: tanh and exp over whole rows. float rows use glibc's vector math
// library (libmvec, AVX2, <= 4 ulp) because std::tanh/std::exp never vectorise under the
// default -fmath-errno; double rows (the test oracle) and other platforms use std::.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#include <immintrin.h>
#define SPEEDRUN_CPU_LIBMVEC 1
// glibc's x86-64 vector function ABI ('d' = AVX2, N8 = 8 lanes, v = vector argument).
extern "C" __m256 _ZGVdN8v_tanhf(__m256);
extern "C" __m256 _ZGVdN8v_expf(__m256);
#endif

namespace speedrun::cpu {

// y[i] = tanh(x[i] / d) (=) for i < n; returns max(-1, max_i y[i]). y may alias x.
template <class T>
inline T tanh_div_max(T* y, const T* x, T d, int64_t n) {
  T m = T(-1);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = std::tanh(x[i] / d);
    m = y[i] > m ? y[i] : m;
  }
  return m;
}

// y[i] = exp(a*x[i] - b) (=) for i < n; returns sum_i y[i] in double, summed in a fixed
// order (8 lanes). y may alias x.
template <class T>
inline double exp_affine_sum(T* y, const T* x, T a, T b, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      y[i + l] = std::exp(a * x[i + l] - b);
      acc[l] += double(y[i + l]);
    }
  for (int l = 0; i + l < n; ++l) {
    y[i + l] = std::exp(a * x[i + l] - b);
    acc[l] += double(y[i + l]);
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

#ifdef SPEEDRUN_CPU_LIBMVEC
template <>
inline float tanh_div_max<float>(float* y, const float* x, float d, int64_t n) {
  const __m256 vd = _mm256_set1_ps(d);
  __m256 vm = _mm256_set1_ps(-1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 t = _ZGVdN8v_tanhf(_mm256_div_ps(_mm256_loadu_ps(x + i), vd));
    _mm256_storeu_ps(y + i, t);
    vm = _mm256_max_ps(vm, t);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  float m = -1.0f;
  for (float v : lanes) m = v > m ? v : m;
  for (; i < n; ++i) {
    y[i] = std::tanh(x[i] / d);
    m = y[i] > m ? y[i] : m;
  }
  return m;
}

template <>
inline double exp_affine_sum<float>(float* y, const float* x, float a, float b, int64_t n) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(_mm256_mul_ps(va, _mm256_loadu_ps(x + i)), vb));
    _mm256_storeu_ps(y + i, e);
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double l[4], h[4];
  _mm256_store_pd(l, lo);
  _mm256_store_pd(h, hi);
  double s = ((l[0] + h[0]) + (l[1] + h[1])) + ((l[2] + h[2]) + (l[3] + h[3]));
  for (; i < n; ++i) {
    y[i] = std::exp(a * x[i] - b);
    s += double(y[i]);
  }
  return s;
}
#endif

}  // namespace speedrun::cpu
