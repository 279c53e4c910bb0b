// rms_norm's arithmetic in fp32 (backend.h: y = x * rstd, rstd = 1/sqrt(mean(x^2) + eps);
// dx = rstd*dy - rstd^3/dim * x * sum(dy*x)), shared by rms_norm.cu, qkv.cu
// and the host test. The kernels sum a row across a warp; rms_norm_row_* below are the
// same formulas over a row in order, which tests/test_cuda_math.cpp checks against the
// CPU backend.
#pragma once
#include <math.h>

#include <cstdint>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

SR_HD inline float rms_rstd(float sumsq, int64_t dim, float eps) {
  return 1.0f / sqrtf(sumsq / float(dim) + eps);
}

// The coefficient of x in the backward: rstd^3 * sum(dy*x) / dim.
SR_HD inline float rms_backward_coef(float rstd, float dot_dy_x, int64_t dim) {
  return rstd * rstd * rstd * dot_dy_x / float(dim);
}

// rstd*dy - coef*x, the first product fused (fma_rn): rms_norm, mix_norm and qkv round it alike.
SR_HD inline float rms_backward_elem(float rstd, float coef, float dy, float x) {
  return fma_rn(rstd, dy, -(coef * x));
}

// Row references (fp32, in order) for the host test.
inline void rms_norm_row_forward(float* y, float* rstd, const float* x, int64_t dim, float eps) {
  float ss = 0;
  for (int64_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  *rstd = rms_rstd(ss, dim, eps);
  for (int64_t i = 0; i < dim; ++i) y[i] = x[i] * *rstd;
}

inline void rms_norm_row_backward(float* dx, const float* dy, const float* x, float rstd,
                                  int64_t dim) {
  float dot = 0;
  for (int64_t i = 0; i < dim; ++i) dot += dy[i] * x[i];
  const float k = rms_backward_coef(rstd, dot, dim);
  for (int64_t i = 0; i < dim; ++i) dx[i] = rms_backward_elem(rstd, k, dy[i], x[i]);
}

}  // namespace speedrun::cuda::math
