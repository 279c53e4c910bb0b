// Attention's inputs from the stacked q/k/v projection (backend.h: qkv_forward,
// qkv_backward), one warp per (row, head) doing all three of its heads in one pass: QK norm
// + rotary of q_raw and k_raw and the value residual v = a*v_raw + b*v1 (scaled_sum.cu's
// arithmetic). qkv [N, 3C] is read in place, so
// the projection is one GEMM and q/k/v never need copies out of it.
// The backward walks the heads grid-stride over a grid that is a function of the size
// alone, summing <dv, v_raw> and <dv, v1> in double per thread, then per block (math/
// reduce.h's tree), then over the blocks in coef_grads_kernel: the same bits on every run.
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/coef.cuh"
#include "backend/cuda/math/rms_norm.h"
#include "backend/cuda/math/rotary.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

using math::CoefArg;

// One head of QK norm + rotary for one warp: lane l holds the pairs (x[j], x[j + D/2]) for
// j = l, l + 32, ... (D <= 256: up to 4 pairs, in registers), the head's sum of squares
// (forward) or <dy rotated back, x> (backward) is summed across the warp, then each pair
// is written (math/rotary.h, math/rms_norm.h).
inline constexpr int kMaxPairsPerLane = 4;  // D <= 2 * 32 * 4 = 256


// y = rotary(rms_norm(x)) for one head of D elements at position row cos_t/sin_t (the
// tables' row, D/2 entries); returns the head's rstd (on every lane).
__device__ inline float norm_rotary_head(uint16_t* y, const uint16_t* x, const float* cos_t,
                                         const float* sin_t, int64_t D, float eps, int lane) {
  const int64_t half = D / 2;
  float a[kMaxPairsPerLane], b[kMaxPairsPerLane];
  float ss = 0;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    a[p] = b[p] = 0;
    if (j < half) {
      a[p] = load_bf16(x + j);
      b[p] = load_bf16(x + j + half);
      ss += a[p] * a[p] + b[p] * b[p];
    }
  }
  const float s = math::rms_rstd(warp_allsum(ss), D, eps);
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    if (j < half) {
      float y1, y2;
      math::rotate(a[p] * s, b[p] * s, {cos_t[j], sin_t[j]}, y1, y2);
      store_bf16(y + j, y1);
      store_bf16(y + j + half, y2);
    }
  }
  return s;
}

// dx = the gradient through rotary then rms_norm for one head, given dy, the input x and
// its saved rstd s.
__device__ inline void norm_rotary_head_backward(uint16_t* dx, const uint16_t* dy,
                                                 const uint16_t* x, float s, const float* cos_t,
                                                 const float* sin_t, int64_t D, int lane) {
  const int64_t half = D / 2;
  float g1[kMaxPairsPerLane], g2[kMaxPairsPerLane], x1[kMaxPairsPerLane], x2[kMaxPairsPerLane];
  float dot = 0;
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    g1[p] = g2[p] = x1[p] = x2[p] = 0;
    if (j < half) {
      math::rotate_back(load_bf16(dy + j), load_bf16(dy + j + half), {cos_t[j], sin_t[j]}, g1[p],
                        g2[p]);
      x1[p] = load_bf16(x + j);
      x2[p] = load_bf16(x + j + half);
      dot += g1[p] * x1[p] + g2[p] * x2[p];
    }
  }
  const float coef = math::rms_backward_coef(s, warp_allsum(dot), D);
#pragma unroll
  for (int p = 0; p < kMaxPairsPerLane; ++p) {
    const int64_t j = lane + 32 * p;
    if (j < half) {
      store_bf16(dx + j, math::rms_backward_elem(s, coef, g1[p], x1[p]));
      store_bf16(dx + j + half, math::rms_backward_elem(s, coef, g2[p], x2[p]));
    }
  }
}

__global__ void qkv_forward_kernel(uint16_t* q, uint16_t* k, uint16_t* v, float* rstd,
                                   const uint16_t* qkv, const uint16_t* v1src, CoefArg a,
                                   CoefArg b, const float* cos, const float* sin, int64_t heads,
                                   int64_t T, int64_t H, int64_t D, float eps) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= heads) return;
  const int lane = threadIdx.x & 31;
  const int64_t n = r / H, h = r % H, t = n % T, C = H * D, half = D / 2;
  const uint16_t* x = qkv + n * 3 * C + h * D;
  const int64_t o = n * C + h * D;
  const float* ct = cos + t * half;
  const float* st = sin + t * half;
  const float sq = norm_rotary_head(q + o, x, ct, st, D, eps, lane);
  const float sk = norm_rotary_head(k + o, x + C, ct, st, D, eps, lane);
  if (lane == 0) {
    rstd[r] = sq;
    rstd[heads + r] = sk;
  }
  const float av = math::coef_value(a), bv = math::coef_value(b);
  const uint16_t* vr = x + 2 * C;
  const uint16_t* v1 = v1src + n * 3 * C + 2 * C + h * D;
  for (int64_t j = lane; j < D; j += 32)
    store_bf16(v + o + j, av * load_bf16(vr + j) + bv * load_bf16(v1 + j));
}

// math::kReduceThreads threads per block; partial[block] and partial[gridDim.x + block]
// get the block's two dots. At least 4 blocks per SM: without the bound ptxas gives it 90
// registers (2 blocks, a quarter of the warps an SM holds, for a kernel that waits on
// memory); with it 62 and no spills (sm_90a).
__global__ void __launch_bounds__(math::kReduceThreads, 4)
    qkv_backward_kernel(uint16_t* dqkv, uint16_t* dv1, const uint16_t* dq, const uint16_t* dk,
                        const uint16_t* dv, const uint16_t* qkv, const float* rstd,
                        const uint16_t* v1src, CoefArg a, CoefArg b, const float* cos,
                        const float* sin, int64_t heads, int64_t T, int64_t H, int64_t D,
                        bool layer0, double* partial) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * math::kReduceWarps;
  const int64_t C = H * D, half = D / 2;
  const float av = math::coef_value(a), bv = math::coef_value(b);
  double sx = 0, sy = 0;
  for (int64_t r = int64_t(blockIdx.x) * math::kReduceWarps + (threadIdx.x >> 5); r < heads;
       r += warps) {
    const int64_t n = r / H, h = r % H, t = n % T;
    const uint16_t* x = qkv + n * 3 * C + h * D;
    uint16_t* g = dqkv + n * 3 * C + h * D;
    const int64_t o = n * C + h * D;
    const float* ct = cos + t * half;
    const float* st = sin + t * half;
    norm_rotary_head_backward(g, dq + o, x, rstd[r], ct, st, D, lane);
    norm_rotary_head_backward(g + C, dk + o, x + C, rstd[heads + r], ct, st, D, lane);
    const uint16_t* vr = x + 2 * C;
    const uint16_t* v1 = v1src + n * 3 * C + 2 * C + h * D;
    for (int64_t j = lane; j < D; j += 32) {
      const float d = load_bf16(dv + o + j);
      sx += double(d) * double(load_bf16(vr + j));
      sy += double(d) * double(load_bf16(v1 + j));
      const float old = load_bf16(dv1 + o + j);
      if (layer0) {  // dv1 += a*d, then += b*d (each rounded); v_raw's gradient is dv1
        const uint16_t sum = math::f32_to_bf16(math::round_bf16(old + av * d) + bv * d);
        dv1[o + j] = sum;
        g[2 * C + j] = sum;
      } else {
        store_bf16(g + 2 * C + j, av * d);
        store_bf16(dv1 + o + j, old + bv * d);
      }
    }
  }
  store_block_dots(sx, sy, partial);
}

// The shapes of both ops; returns C.
int64_t check_qkv(const char* op, const Tensor& qkv, const Tensor& v1src, const Tensor& rstd,
                  const Tensor& cos, const Tensor& sin, int64_t T, int64_t H,
                  std::initializer_list<std::pair<const char*, const Tensor*>> nc) {
  need(op, "qkv", qkv, DType::BF16);
  need(op, "v1src", v1src, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need(op, "cos", cos, DType::F32);
  need(op, "sin", sin, DType::F32);
  const int64_t N = qkv.rows(), C = qkv.cols() / 3;
  check(qkv.cols() % 3 == 0, "cuda ", op, ": qkv ", qkv.shape_str(), " is not [N, 3C]");
  check(v1src.rows() == N && v1src.cols() == 3 * C, "cuda ", op, ": v1src ", v1src.shape_str(),
        " is not qkv's shape ", qkv.shape_str());
  check(rstd.numel() == 2 * N * H, "cuda ", op, ": rstd ", rstd.shape_str(), " is not [2, ",
        N * H, "]");
  for (const auto& [name, t] : nc) {
    need(op, name, *t, DType::BF16);
    check(t->rows() == N && t->cols() == C, "cuda ", op, ": ", name, " ", t->shape_str(),
          " is not [", N, ", ", C, "]");
  }
  check(H >= 1 && C % H == 0, "cuda ", op, ": width ", C, " is not a multiple of ", H, " heads");
  const int64_t D = C / H;
  check(D % 2 == 0 && D <= 2 * 32 * kMaxPairsPerLane, "cuda ", op, ": head dim ", D,
        " must be even and at most ", 2 * 32 * kMaxPairsPerLane);
  check(T >= 1 && cos.rows() >= T && cos.cols() == D / 2 && sin.rows() == cos.rows() &&
            sin.cols() == cos.cols(),
        "cuda ", op, ": rotary tables ", cos.shape_str(), " / ", sin.shape_str(),
        " do not hold ", T, " positions of ", D / 2, " frequencies");
  return C;
}

}  // namespace

void CudaBackend::qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                              const Tensor& v1src, const Coef& a, const Coef& b,
                              const Tensor& cos, const Tensor& sin, int64_t T, int64_t H,
                              double eps) {
  const char* op = "qkv_forward";
  const int64_t C = check_qkv(op, qkv, v1src, rstd, cos, sin, T, H, {{"q", &q}, {"k", &k}, {"v", &v}});
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  const int64_t heads = qkv.rows() * H, D = C / H;
  if (heads == 0) return;
  const Launch l = warp_rows_launch(heads);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, qkv_forward_kernel)(
      static_cast<uint16_t*>(q.data), static_cast<uint16_t*>(k.data),
      static_cast<uint16_t*>(v.data), static_cast<float*>(rstd.data),
      static_cast<const uint16_t*>(qkv.data), static_cast<const uint16_t*>(v1src.data), ca, cb,
      static_cast<const float*>(cos.data), static_cast<const float*>(sin.data), heads, T, H, D,
      float(eps));
  launched(op, "qkv_forward_kernel");
}

void CudaBackend::qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk,
                               const Tensor& dv, const Tensor& qkv, const Tensor& rstd,
                               const Tensor& v1src, const Coef& a, const Coef& b,
                               const Tensor& cos, const Tensor& sin, int64_t T, int64_t H) {
  const char* op = "qkv_backward";
  const int64_t C = check_qkv(op, qkv, v1src, rstd, cos, sin, T, H,
                              {{"dv1", &dv1}, {"dq", &dq}, {"dk", &dk}, {"dv", &dv}});
  need(op, "dqkv", dqkv, DType::BF16);
  need_numel(op, "dqkv", dqkv, "qkv", qkv);
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  const int64_t heads = qkv.rows() * H, D = C / H;
  if (heads == 0) return;
  const int blocks = warp_rows_reduce_blocks(heads);
  auto* partial = static_cast<double*>(
      scratch(partials_, kPartialsBytes, "reduction partials"));
  SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, qkv_backward_kernel)(
      static_cast<uint16_t*>(dqkv.data), static_cast<uint16_t*>(dv1.data),
      static_cast<const uint16_t*>(dq.data), static_cast<const uint16_t*>(dk.data),
      static_cast<const uint16_t*>(dv.data), static_cast<const uint16_t*>(qkv.data),
      static_cast<const float*>(rstd.data), static_cast<const uint16_t*>(v1src.data), ca, cb,
      static_cast<const float*>(cos.data), static_cast<const float*>(sin.data), heads, T, H, D,
      v1src.data == qkv.data, partial);
  launched(op, "qkv_backward_kernel");
  if (!ca.grad && !cb.grad) return;
  SR_LAUNCH(1, math::kReduceThreads, 0, stream_, coef_grads_kernel)(partial, blocks, ca.grad,
                                                                    a.sign, cb.grad, b.sign);
  launched(op, "coef_grads_kernel");
}

}  // namespace speedrun::cuda
