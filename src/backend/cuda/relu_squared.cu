// relu(x)^2 and its gradient from the output, elementwise on bf16 (math/elementwise.h), 8 at
// a time when sizes and addresses allow. y may alias x; dx may alias dy.
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/elementwise.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

template <bool Vec>
__global__ void relu_squared_forward_kernel(uint16_t* y, const uint16_t* x, int64_t n) {
  if constexpr (Vec) {
    for (int64_t i = global_thread(); i < n / 8; i += grid_threads()) {
      float v[8];
      load8(x + 8 * i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = math::relu_squared(v[k]);
      store8(y + 8 * i, v);
    }
  } else {
    for (int64_t i = global_thread(); i < n; i += grid_threads())
      store_bf16(y + i, math::relu_squared(load_bf16(x + i)));
  }
}

template <bool Vec>
__global__ void relu_squared_backward_kernel(uint16_t* dx, const uint16_t* dy, const uint16_t* y,
                                             int64_t n) {
  if constexpr (Vec) {
    for (int64_t i = global_thread(); i < n / 8; i += grid_threads()) {
      float d[8], v[8];
      load8(dy + 8 * i, d);
      load8(y + 8 * i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) d[k] = math::relu_squared_grad(v[k], d[k]);
      store8(dx + 8 * i, d);
    }
  } else {
    for (int64_t i = global_thread(); i < n; i += grid_threads())
      store_bf16(dx + i, math::relu_squared_grad(load_bf16(y + i), load_bf16(dy + i)));
  }
}

}  // namespace

void CudaBackend::relu_squared_forward(Tensor y, const Tensor& x) {
  const char* op = "relu_squared_forward";
  need(op, "y", y, DType::BF16);
  need(op, "x", x, DType::BF16);
  need_numel(op, "y", y, "x", x);
  const int64_t n = x.numel();
  if (n == 0) return;
  auto* py = static_cast<uint16_t*>(y.data);
  const auto* px = static_cast<const uint16_t*>(x.data);
  if (vec8_ok(n, py, px)) {
    const Launch l = elementwise_launch(n / 8);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, relu_squared_forward_kernel<true>)(py, px, n);
  } else {
    const Launch l = elementwise_launch(n);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, relu_squared_forward_kernel<false>)(py, px, n);
  }
  launched(op, "relu_squared_forward_kernel");
}

void CudaBackend::relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& y) {
  const char* op = "relu_squared_backward";
  need(op, "dx", dx, DType::BF16);
  need(op, "dy", dy, DType::BF16);
  need(op, "y", y, DType::BF16);
  need_numel(op, "dx", dx, "y", y);
  need_numel(op, "dy", dy, "y", y);
  const int64_t n = y.numel();
  if (n == 0) return;
  auto* pdx = static_cast<uint16_t*>(dx.data);
  const auto* pdy = static_cast<const uint16_t*>(dy.data);
  const auto* py = static_cast<const uint16_t*>(y.data);
  if (vec8_ok(n, pdx, pdy, py)) {
    const Launch l = elementwise_launch(n / 8);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, relu_squared_backward_kernel<true>)(pdx, pdy, py, n);
  } else {
    const Launch l = elementwise_launch(n);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, relu_squared_backward_kernel<false>)(pdx, pdy, py, n);
  }
  launched(op, "relu_squared_backward_kernel");
}

}  // namespace speedrun::cuda
