// SR_HD marks arithmetic shared by the CUDA kernels and the host: under nvcc it is
// __host__ __device__, under a plain C++ compiler it is nothing, so tests/test_cuda_math.cpp
// checks these functions with g++ against the CPU backend, without a GPU or CUDA runtime.
#pragma once

#ifdef __CUDACC__
#define SR_HD __host__ __device__
#else
#define SR_HD
#endif

#include <cmath>

namespace speedrun::cuda::math {

// a * b + c rounded once, the same at every call site. A compiler may contract a * b + c
// into a fused multiply-add or not, and for a * b + c * d choose which product to fuse,
// call site by call site (nvcc does by default, and so does g++ for an FMA-capable host):
// two kernels that must give each other's bits (a multi-tensor optimizer and its single
// op, a vectorised loop and its scalar tail) then differ in the last bit. Kernel arithmetic
// that adds a product says which rounding it wants with this.
SR_HD inline float fma_rn(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

}  // namespace speedrun::cuda::math
