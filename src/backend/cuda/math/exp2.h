// 2^x as the kernels take it: on the GPU one ex2.approx.ftz.f32 (MUFU.EX2, 2 ulp); exp2f
// adds ~3 instructions to produce subnormal results, expf a range reduction of ~8 more.
// A result below 2^-126 (the smallest normal fp32 and bf16) is flushed to +0, on the host
// too, so the CPU emulator of CUDA and the host tests see what the GPU gives: where these
// kernels call it (softmax terms and probabilities, x <= 0), such a value is nothing beside
// the max's 1 and a gradient below the smallest normal bf16. 2^-inf = +0; NaN stays NaN.
#pragma once
#include <math.h>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

SR_HD inline float exp2_ftz(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  const float y = exp2f(x);
  return y < 1.17549435e-38f ? 0.0f : y;
#endif
}

}  // namespace speedrun::cuda::math
