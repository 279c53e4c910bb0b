// QK norm + rotary, fused, one warp per (row, head): lane l holds the pairs
// (x[j], x[j + D/2]) for j = l, l + 32, ... (D <= 256: up to 4 pairs, in registers), the
// head's sum of squares is summed across the warp, then each pair is normed and rotated
// (math/rotary.h, math/rms_norm.h). The backward rotates dy back, then applies rms_norm's
// backward with the saved rstd. y may alias x and dx may alias dy: every lane reads its
// pairs before the warp's sum, and writes them after it.
// Also the rotary tables (rotary_tables, rotary_tables_at).
#include <vector>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/rms_norm.h"
#include "backend/cuda/math/rotary.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

constexpr int kMaxPairsPerLane = 4;  // D <= 2 * 32 * 4 = 256

__global__ void head_norm_rotary_forward_kernel(uint16_t* y, float* rstd, const uint16_t* x,
                                                const float* cos, const float* sin, int64_t heads_total,
                                                int64_t T, int64_t H, int64_t D, float eps) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= heads_total) return;
  const int lane = threadIdx.x & 31;
  const int64_t half = D / 2, t = (r / H) % T;
  const uint16_t* xr = x + r * D;
  float a[kMaxPairsPerLane], b[kMaxPairsPerLane];
  float ss = 0;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    a[p] = b[p] = 0;
    if (j < half) {
      a[p] = load_bf16(xr + j);
      b[p] = load_bf16(xr + j + half);
      ss += a[p] * a[p] + b[p] * b[p];
    }
  }
  const float s = math::rms_rstd(warp_allsum(ss), D, eps);
  if (lane == 0) rstd[r] = s;
  uint16_t* yr = y + r * D;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    if (j < half) {
      float y1, y2;
      math::rotate(a[p] * s, b[p] * s, {cos[t * half + j], sin[t * half + j]}, y1, y2);
      store_bf16(yr + j, y1);
      store_bf16(yr + j + half, y2);
    }
  }
}

__global__ void head_norm_rotary_backward_kernel(uint16_t* dx, const uint16_t* dy,
                                                 const uint16_t* x, const float* rstd,
                                                 const float* cos, const float* sin,
                                                 int64_t heads_total, int64_t T, int64_t H,
                                                 int64_t D) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= heads_total) return;
  const int lane = threadIdx.x & 31;
  const int64_t half = D / 2, t = (r / H) % T;
  const uint16_t* xr = x + r * D;
  const uint16_t* dyr = dy + r * D;
  float g1[kMaxPairsPerLane], g2[kMaxPairsPerLane], x1[kMaxPairsPerLane], x2[kMaxPairsPerLane];
  float dot = 0;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    g1[p] = g2[p] = x1[p] = x2[p] = 0;
    if (j < half) {
      math::rotate_back(load_bf16(dyr + j), load_bf16(dyr + j + half),
                        {cos[t * half + j], sin[t * half + j]}, g1[p], g2[p]);
      x1[p] = load_bf16(xr + j);
      x2[p] = load_bf16(xr + j + half);
      dot += g1[p] * x1[p] + g2[p] * x2[p];
    }
  }
  const float s = rstd[r];
  const float coef = math::rms_backward_coef(s, warp_allsum(dot), D);
  uint16_t* dxr = dx + r * D;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    if (j < half) {
      store_bf16(dxr + j, math::rms_backward_elem(s, coef, g1[p], x1[p]));
      store_bf16(dxr + j + half, math::rms_backward_elem(s, coef, g2[p], x2[p]));
    }
  }
}

__global__ void rotary_tables_kernel(float* cos, float* sin, const float* inv_freq, int64_t rows,
                                     int64_t half, int64_t start) {
  for (int64_t i = global_thread(); i < rows * half; i += grid_threads()) {
    const int64_t t = i / half, j = i % half;
    const math::CosSin cs = math::rotary_entry(start + t, inv_freq[j]);
    cos[i] = cs.c;
    sin[i] = cs.s;
  }
}

void check_heads(const char* op, const Tensor& x, const Tensor& cos, const Tensor& sin,
                 const Tensor& rstd, int64_t T, int64_t H) {
  check(H >= 1 && x.cols() % H == 0, "cuda ", op, ": width ", x.cols(), " is not a multiple of ",
        H, " heads");
  const int64_t D = x.cols() / H;
  check(D % 2 == 0 && D <= 2 * 32 * kMaxPairsPerLane, "cuda ", op, ": head dim ", D,
        " must be even and at most ", 2 * 32 * kMaxPairsPerLane);
  check(T >= 1 && cos.rows() >= T && cos.cols() == D / 2 && sin.rows() == cos.rows() &&
            sin.cols() == cos.cols(),
        "cuda ", op, ": rotary tables ", cos.shape_str(), " / ", sin.shape_str(),
        " do not hold ", T, " positions of ", D / 2, " frequencies");
  check(rstd.numel() == x.rows() * H, "cuda ", op, ": rstd ", rstd.shape_str(), " for ",
        x.rows(), " rows of ", H, " heads");
}

}  // namespace

void CudaBackend::head_norm_rotary_forward(Tensor y, Tensor rstd, const Tensor& x,
                                           const Tensor& cos, const Tensor& sin, int64_t T,
                                           int64_t H, double eps) {
  const char* op = "head_norm_rotary_forward";
  need(op, "y", y, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need(op, "x", x, DType::BF16);
  need(op, "cos", cos, DType::F32);
  need(op, "sin", sin, DType::F32);
  need_numel(op, "y", y, "x", x);
  check_heads(op, x, cos, sin, rstd, T, H);
  const int64_t heads = x.rows() * H, D = x.cols() / H;
  if (heads == 0) return;
  const Launch l = warp_rows_launch(heads);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, head_norm_rotary_forward_kernel)(
      static_cast<uint16_t*>(y.data), static_cast<float*>(rstd.data),
      static_cast<const uint16_t*>(x.data), static_cast<const float*>(cos.data),
      static_cast<const float*>(sin.data), heads, T, H, D, float(eps));
  launched(op, "head_norm_rotary_forward_kernel");
}

void CudaBackend::head_norm_rotary_backward(Tensor dx, const Tensor& dy, const Tensor& x,
                                            const Tensor& rstd, const Tensor& cos,
                                            const Tensor& sin, int64_t T, int64_t H) {
  const char* op = "head_norm_rotary_backward";
  need(op, "dx", dx, DType::BF16);
  need(op, "dy", dy, DType::BF16);
  need(op, "x", x, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need(op, "cos", cos, DType::F32);
  need(op, "sin", sin, DType::F32);
  need_numel(op, "dx", dx, "x", x);
  need_numel(op, "dy", dy, "x", x);
  check_heads(op, x, cos, sin, rstd, T, H);
  const int64_t heads = x.rows() * H, D = x.cols() / H;
  if (heads == 0) return;
  const Launch l = warp_rows_launch(heads);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, head_norm_rotary_backward_kernel)(
      static_cast<uint16_t*>(dx.data), static_cast<const uint16_t*>(dy.data),
      static_cast<const uint16_t*>(x.data), static_cast<const float*>(rstd.data),
      static_cast<const float*>(cos.data), static_cast<const float*>(sin.data), heads, T, H, D);
  launched(op, "head_norm_rotary_backward_kernel");
}

void CudaBackend::rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) {
  const char* op = "rotary_tables";
  need(op, "cos", cos, DType::F32);
  need(op, "sin", sin, DType::F32);
  check(cos.rows() == sin.rows() && cos.cols() == sin.cols(), "cuda rotary_tables: cos ",
        cos.shape_str(), " and sin ", sin.shape_str(), " differ");
  check(start >= 0, "cuda rotary_tables_at: start position ", start, " must be >= 0");
  const int64_t rows = cos.rows(), half = cos.cols();
  if (rows == 0 || half == 0) return;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) inv[size_t(j)] = math::rotary_inv_freq(j, 2 * half, base);
  auto* d_inv = static_cast<float*>(
      scratch(rotary_freq_, inv.size() * sizeof(float), "the rotary frequencies"));
  upload_bytes(d_inv, inv.data(), inv.size() * sizeof(float), op);
  const Launch l = elementwise_launch(rows * half);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, rotary_tables_kernel)(static_cast<float*>(cos.data),
                                                            static_cast<float*>(sin.data), d_inv,
                                                            rows, half, start);
  launched(op, "rotary_tables_kernel");
}

void CudaBackend::rotary_tables(Tensor cos, Tensor sin, double base) {
  rotary_tables_at(cos, sin, base, 0);
}

}  // namespace speedrun::cuda
