// rms_norm over the last dimension, no weight, one warp per row: the row's sum of squares
// (or of dy*x) in fp32 across the warp, then the elementwise pass (math/rms_norm.h).
// Rows whose length is a multiple of 8 and whose data is 16-byte aligned are read 8 bf16
// at a time. y may alias x, dx may alias dy: each element is read before it is written,
// by the same thread.
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/rms_norm.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

template <bool Vec>
__global__ void rms_norm_forward_kernel(uint16_t* y, float* rstd, const uint16_t* x, int64_t rows,
                                        int64_t dim, float eps) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const uint16_t* xr = x + r * dim;
  uint16_t* yr = y + r * dim;
  float ss = 0;
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float v[8];
      load8(xr + i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) ss += v[k] * v[k];
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) {
      const float v = load_bf16(xr + i);
      ss += v * v;
    }
  }
  const float s = math::rms_rstd(warp_allsum(ss), dim, eps);
  if (lane == 0) rstd[r] = s;
  warp_row_scale<Vec>(yr, xr, dim, lane, s);
}

template <bool Vec>
__global__ void rms_norm_backward_kernel(uint16_t* dx, const uint16_t* dy, const uint16_t* x,
                                         const float* rstd, int64_t rows, int64_t dim,
                                         bool accumulate) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const uint16_t* xr = x + r * dim;
  const uint16_t* dyr = dy + r * dim;
  uint16_t* dxr = dx + r * dim;
  const float dot = warp_row_dot<Vec>(dyr, xr, dim, lane);
  const float s = rstd[r];
  const float coef = math::rms_backward_coef(s, warp_allsum(dot), dim);
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float a[8], b[8], o[8];
      load8(dyr + i, a);
      load8(xr + i, b);
      if (accumulate) load8(dxr + i, o);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float g = math::rms_backward_elem(s, coef, a[k], b[k]);
        o[k] = accumulate ? o[k] + g : g;
      }
      store8(dxr + i, o);
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) {
      const float g = math::rms_backward_elem(s, coef, load_bf16(dyr + i), load_bf16(xr + i));
      store_bf16(dxr + i, accumulate ? load_bf16(dxr + i) + g : g);
    }
  }
}

}  // namespace

void CudaBackend::rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) {
  const char* op = "rms_norm_forward";
  need(op, "y", y, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need(op, "x", x, DType::BF16);
  need_numel(op, "y", y, "x", x);
  const int64_t rows = x.rows(), dim = x.cols();
  check(rstd.numel() == rows, "cuda rms_norm_forward: rstd ", rstd.shape_str(), " for ", rows,
        " rows");
  if (rows == 0 || dim == 0) return;
  const Launch l = warp_rows_launch(rows);
  if (vec8_ok(dim, y.data, x.data))
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, rms_norm_forward_kernel<true>)(
        static_cast<uint16_t*>(y.data), static_cast<float*>(rstd.data),
        static_cast<const uint16_t*>(x.data), rows, dim, float(eps));
  else
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, rms_norm_forward_kernel<false>)(
        static_cast<uint16_t*>(y.data), static_cast<float*>(rstd.data),
        static_cast<const uint16_t*>(x.data), rows, dim, float(eps));
  launched(op, "rms_norm_forward_kernel");
}

void CudaBackend::rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x,
                                    const Tensor& rstd, bool accumulate) {
  const char* op = "rms_norm_backward";
  need(op, "dx", dx, DType::BF16);
  need(op, "dy", dy, DType::BF16);
  need(op, "x", x, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need_numel(op, "dx", dx, "x", x);
  need_numel(op, "dy", dy, "x", x);
  const int64_t rows = x.rows(), dim = x.cols();
  check(rstd.numel() == rows, "cuda rms_norm_backward: rstd ", rstd.shape_str(), " for ", rows,
        " rows");
  if (rows == 0 || dim == 0) return;
  const Launch l = warp_rows_launch(rows);
  if (vec8_ok(dim, dx.data, dy.data, x.data))
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, rms_norm_backward_kernel<true>)(
        static_cast<uint16_t*>(dx.data), static_cast<const uint16_t*>(dy.data),
        static_cast<const uint16_t*>(x.data), static_cast<const float*>(rstd.data), rows, dim,
        accumulate);
  else
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, rms_norm_backward_kernel<false>)(
        static_cast<uint16_t*>(dx.data), static_cast<const uint16_t*>(dy.data),
        static_cast<const uint16_t*>(x.data), static_cast<const float*>(rstd.data), rows, dim,
        accumulate);
  launched(op, "rms_norm_backward_kernel");
}

}  // namespace speedrun::cuda
