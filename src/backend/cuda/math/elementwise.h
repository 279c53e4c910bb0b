// Elementwise arithmetic of the CUDA kernels in fp32: relu^2 (written as the CPU writes it,
// so a NaN propagates the same way), scaled sums and their coefficients, axpy.
#pragma once
#include <math.h>

#include <cmath>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

// relu(x)^2 = ((x + |x|)/2)^2; its derivative times dy from the output y = relu(x)^2:
// 2 sqrt(y) dy, as the CPU's (sqrtf is correctly rounded: nvcc's default -prec-sqrt=true).
SR_HD inline float relu_squared(float x) {
  const float r = (x + fabsf(x)) * 0.5f;
  return r * r;
}
SR_HD inline float relu_squared_grad(float y, float dy) {
  const float r = sqrtf(y);
  return (r + r) * dy;
}

// a*x + b*y in fp32 as fma(a, x, b*y): b*y rounded, then one rounding of the rest. The one
// expression of every weighted sum (scaled_sum.cu, mix_norm.cu), with its rounding spelled
// out, so that a sum formed in one kernel and formed again in another has the same bits
// whatever the compiler would contract (with a = 1, fma(a, x, b*y) and fma(b, y, a*x)
// round differently), on the GPU and in the emulated build.
SR_HD inline float weighted_sum(float a, float x, float b, float y) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, x, __fmul_rn(b, y));
#else
  const float by = b * y;
  return std::fma(a, x, by);
#endif
}

// A Coef (backend.h) on the device: offset + sign * value[0] evaluated in fp32 as
// PyTorch evaluates (1 - lamb), or offset alone when there is no parameter. The sign is
// +-1, so the product is exact and a contracted fma rounds as the sum alone does.
struct CoefArg {
  const float* value = nullptr;  // master scalar (F32) or null
  float* grad = nullptr;         // gradient scalar (F32) or null
  double sign = 1.0;
  double offset = 0.0;
};

SR_HD inline float coef_value(const CoefArg& c) {
  return c.value ? float(c.offset) + float(c.sign) * c.value[0] : float(c.offset);
}

}  // namespace speedrun::cuda::math
