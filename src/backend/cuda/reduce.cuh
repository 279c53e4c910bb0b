// Stage 2 of the deterministic reductions (math/reduce.h), shared by reduce.cu,
// scaled_sum.cu and muon.cu: one block per problem sums that problem's `count` partials
// (problem p's start at partials + p * count) and hands the total to finish(total, p) on
// thread 0.
#pragma once
#include "backend/cuda/kernels.cuh"

namespace speedrun::cuda {

template <class Finish>
__global__ void __launch_bounds__(math::kReduceThreads)
    reduce_partials_kernel(const double* partials, int count, Finish finish) {
  __shared__ double smem[math::kReduceWarps];
  const double* p = partials + int64_t(blockIdx.x) * count;
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += p[i];
  const double total = block_sum(acc, smem);
  if (threadIdx.x == 0) finish(total, int(blockIdx.x));
}

}  // namespace speedrun::cuda
