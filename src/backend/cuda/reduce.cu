// sum_into: a tensor's sum in double added to a device F64 scalar, in the two-stage order
// of math/reduce.h (fixed partials, then one block; no atomics, no host synchronisation).
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/reduce.cuh"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

__device__ inline double as_f64(float v) { return v; }
__device__ inline double as_f64(double v) { return v; }
__device__ inline double as_f64(uint16_t v) { return math::bf16_to_f32(v); }

// Stage 1: partial[block] = the block's elements, in math::two_stage_sum's order.
template <class T>
__global__ void __launch_bounds__(math::kReduceThreads)
    sum_partials_kernel(double* partial, const T* x, int64_t n) {
  __shared__ double smem[math::kReduceWarps];
  double acc = 0;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) acc += as_f64(x[i]);
  const double s = block_sum(acc, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

struct AddToF64 {
  double* acc;
  __device__ void operator()(double total, int) const { acc[0] += total; }
};

}  // namespace

void CudaBackend::reduce_into_f64(double* acc, const Tensor& t, const char* op) {
  const int64_t n = t.numel();
  const int blocks = math::reduce_blocks(n);
  auto* partial = static_cast<double*>(
      scratch(partials_, kPartialsBytes, "reduction partials"));
  switch (t.dtype) {
    case DType::F32:
      SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, sum_partials_kernel<float>)(
          partial, static_cast<const float*>(t.data), n);
      break;
    case DType::F64:
      SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, sum_partials_kernel<double>)(
          partial, static_cast<const double*>(t.data), n);
      break;
    case DType::BF16:
      SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, sum_partials_kernel<uint16_t>)(
          partial, static_cast<const uint16_t*>(t.data), n);
      break;
    default:
      fail("cuda ", op, ": dtype ", dtype_name(t.dtype), " is not supported (F32, F64, BF16)");
  }
  launched(op, "sum_partials_kernel");
  SR_LAUNCH(1, math::kReduceThreads, 0, stream_, reduce_partials_kernel<AddToF64>)(partial, blocks, AddToF64{acc});
  launched(op, "reduce_partials_kernel");
}

void CudaBackend::sum_into(Tensor acc, const Tensor& t) {
  const char* op = "sum_into";
  need(op, "acc", acc, DType::F64);
  check(acc.numel() == 1, "cuda sum_into: the accumulator must be one F64 element, got ",
        acc.shape_str());
  need(op, "t", t, t.dtype);
  if (t.numel() == 0) return;
  reduce_into_f64(static_cast<double*>(acc.data), t, op);
}

}  // namespace speedrun::cuda
