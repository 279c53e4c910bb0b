// The scalar coefficients of the weighted sums (backend.h's Coef) on the device, shared by
// scaled_sum.cu, mix_norm.cu and qkv.cu: a Coef as the kernels read it, and stage 2 of the
// reduction that adds sign * <dout, x> to a coefficient's F32 gradient.
#pragma once
#include "backend/backend.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/elementwise.h"
#include "backend/cuda/math/reduce.h"

namespace speedrun::cuda {

// Stage 1's end in a kernel that sums two dots for coefficients: the block's totals, by
// math/reduce.h's tree, to partial[blockIdx.x] and partial[gridDim.x + blockIdx.x]. Every
// thread of the block (math::kReduceThreads) calls it.
__device__ inline void store_block_dots(double sx, double sy, double* partial) {
  __shared__ double smem[math::kReduceWarps];
  sx = block_sum(sx, smem);
  sy = block_sum(sy, smem);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = sx;
    partial[gridDim.x + blockIdx.x] = sy;
  }
}

// The same with a third dot, to partial[2 * gridDim.x + blockIdx.x].
__device__ inline void store_block_dots(double sx, double sy, double sz, double* partial) {
  __shared__ double smem[math::kReduceWarps];
  sx = block_sum(sx, smem);
  sy = block_sum(sy, smem);
  sz = block_sum(sz, smem);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = sx;
    partial[gridDim.x + blockIdx.x] = sy;
    partial[2 * gridDim.x + blockIdx.x] = sz;
  }
}

// Blocks of math::kReduceThreads for a kernel that gives each warp a row (or head) and walks
// `rows` grid-stride: one warp per row up to math::kMaxPartials blocks, a function of the
// size alone, so the dots' order is too.
inline int warp_rows_reduce_blocks(int64_t rows) {
  const int64_t want = (rows + math::kReduceWarps - 1) / math::kReduceWarps;
  return int(want < math::kMaxPartials ? want : math::kMaxPartials);
}

// c's value and gradient pointers (checked F32 on the device), its sign and offset.
math::CoefArg coef_arg(const char* op, const char* name, const Coef& c);

// One block of math::kReduceThreads: sums partial[0 .. count) and partial[count ..
// 2*count) in the order of reduce_partials_kernel, then ga[0] += sa * first and gb[0] +=
// sb * second, in that order (a and b may share one gradient scalar: the value
// residual's (1 - lamb) and lamb). Either pointer may be null.
__global__ void __launch_bounds__(math::kReduceThreads)
    coef_grads_kernel(const double* partial, int count, float* ga, double sa, float* gb,
                      double sb);

}  // namespace speedrun::cuda
