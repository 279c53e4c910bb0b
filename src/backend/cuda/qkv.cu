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
// j = l, l + 32, ... (P pairs, in registers: P = 2 at D = 128, at most 4), the head's sum
// of squares (forward) or <dy rotated back, x> (backward) is summed across the warp, then
// each pair is written (math/rotary.h, math/rms_norm.h). A kernel loads every value of its
// (row, head) before the first sum: ptxas moves no load across the warp's shuffles or across
// a store that may alias it, so loads in between made a chain of memory round trips.
inline constexpr int kMaxPairsPerLane = 4;  // D <= 2 * 32 * 4 = 256

// One head's pairs (x[j], x[j + D/2]) for this lane's j = lane + 32 p (zeros past D/2).
template <int P>
struct HeadPairs {
  float a[P], b[P];
};
template <int P>
__device__ inline HeadPairs<P> load_head(const uint16_t* __restrict__ x, int64_t half, int lane) {
  HeadPairs<P> h;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t j = lane + 32 * p;
    h.a[p] = j < half ? load_bf16(x + j) : 0.f;
    h.b[p] = j < half ? load_bf16(x + j + half) : 0.f;
  }
  return h;
}

// y = rotary(rms_norm(x)) for one head of D elements, its pairs loaded (load_head), at the
// position whose cos/sin this lane holds for its j; returns the head's rstd (on every lane).
template <int P>
__device__ inline float norm_rotary_head(uint16_t* __restrict__ y, const HeadPairs<P>& x,
                                         const float (&cs)[P],
                                         const float (&sn)[P], int64_t D,
                                         float eps, int lane) {
  const int64_t half = D / 2;
  float ss = 0;
#pragma unroll
  for (int p = 0; p < P; ++p)
    if (lane + 32 * p < half) ss += x.a[p] * x.a[p] + x.b[p] * x.b[p];
  const float s = math::rms_rstd(warp_allsum(ss), D, eps);
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t j = lane + 32 * p;
    if (j < half) {
      float y1, y2;
      math::rotate(x.a[p] * s, x.b[p] * s, {cs[p], sn[p]}, y1, y2);
      store_bf16(y + j, y1);
      store_bf16(y + j + half, y2);
    }
  }
  return s;
}

// dx = the gradient through rotary then rms_norm for one head, given dy and the input x
// (loaded: load_head), its saved rstd s, and this lane's cos/sin.
template <int P>
__device__ inline void norm_rotary_head_backward(uint16_t* __restrict__ dx, const HeadPairs<P>& dy,
                                                 const HeadPairs<P>& x, float s,
                                                 const float (&cs)[P],
                                                 const float (&sn)[P], int64_t D,
                                                 int lane) {
  const int64_t half = D / 2;
  float g1[P], g2[P];
  float dot = 0;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    g1[p] = g2[p] = 0;
    if (lane + 32 * p < half) {
      math::rotate_back(dy.a[p], dy.b[p], {cs[p], sn[p]}, g1[p], g2[p]);
      dot += g1[p] * x.a[p] + g2[p] * x.b[p];
    }
  }
  const float coef = math::rms_backward_coef(s, warp_allsum(dot), D);
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t j = lane + 32 * p;
    if (j < half) {
      store_bf16(dx + j, math::rms_backward_elem(s, coef, g1[p], x.a[p]));
      store_bf16(dx + j + half, math::rms_backward_elem(s, coef, g2[p], x.b[p]));
    }
  }
}

// This lane's cos/sin of position row t for its pairs' j (zeros past D/2).
template <int P>
__device__ inline void load_rotary(float (&cs)[P], float (&sn)[P],
                                   const float* __restrict__ cos, const float* __restrict__ sin,
                                   int64_t t, int64_t half, int lane) {
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int64_t j = lane + 32 * p;
    cs[p] = j < half ? cos[t * half + j] : 0.f;
    sn[p] = j < half ? sin[t * half + j] : 0.f;
  }
}

// Loads q's and k's pairs, their position's cos/sin, v_raw and v1, then sums (see the top).
template <int P>
__global__ void qkv_forward_kernel(uint16_t* __restrict__ q, uint16_t* __restrict__ k,
                                   uint16_t* __restrict__ v, float* __restrict__ rstd,
                                   const uint16_t* __restrict__ qkv,
                                   const uint16_t* __restrict__ v1src, CoefArg a, CoefArg b,
                                   const float* __restrict__ cos, const float* __restrict__ sin,
                                   int64_t heads, int64_t T, int64_t H, int64_t D, float eps) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= heads) return;
  const int lane = threadIdx.x & 31;
  const int64_t n = r / H, h = r % H, t = n % T, C = H * D, half = D / 2;
  const uint16_t* x = qkv + n * 3 * C + h * D;
  const int64_t o = n * C + h * D;
  const HeadPairs<P> xq = load_head<P>(x, half, lane), xk = load_head<P>(x + C, half, lane);
  float cs[P], sn[P];
  load_rotary(cs, sn, cos, sin, t, half, lane);
  const uint16_t* vr = x + 2 * C;
  const uint16_t* v1 = v1src + n * 3 * C + 2 * C + h * D;
  float xv[2 * P], x1[2 * P];
#pragma unroll
  for (int i = 0; i < 2 * P; ++i) {
    const int64_t j = lane + 32 * i;
    xv[i] = j < D ? load_bf16(vr + j) : 0.f;
    x1[i] = j < D ? load_bf16(v1 + j) : 0.f;
  }
  const float av = math::coef_value(a), bv = math::coef_value(b);
  const float sq = norm_rotary_head(q + o, xq, cs, sn, D, eps, lane);
  const float sk = norm_rotary_head(k + o, xk, cs, sn, D, eps, lane);
  if (lane == 0) {
    rstd[r] = sq;
    rstd[heads + r] = sk;
  }
#pragma unroll
  for (int i = 0; i < 2 * P; ++i) {
    const int64_t j = lane + 32 * i;
    if (j < D) store_bf16(v + o + j, math::weighted_sum(av, xv[i], bv, x1[i]));
  }
}

// math::kReduceThreads threads per block; partial[block] and partial[gridDim.x + block]
// get the block's two dots. Each warp issues all of a (row, head)'s loads (dq, dk, q, k,
// cos/sin, dv, v_raw, v1, dv1) before its first sum, as the forward; the bound keeps the
// registers that takes (80 at D = 128, 121 at 256; sm_90a, no spills) to 3 blocks per SM
// (2 above D = 128), where 4 blocks of a load-after-store chain per warp ran before.
template <int P>
__global__ void __launch_bounds__(math::kReduceThreads, P <= 2 ? 3 : 2)
    qkv_backward_kernel(uint16_t* __restrict__ dqkv, uint16_t* __restrict__ dv1,
                        const uint16_t* __restrict__ dq, const uint16_t* __restrict__ dk,
                        const uint16_t* __restrict__ dv, const uint16_t* __restrict__ qkv,
                        const float* __restrict__ rstd, const uint16_t* __restrict__ v1src,
                        CoefArg a, CoefArg b, const float* __restrict__ cos,
                        const float* __restrict__ sin, int64_t heads, int64_t T, int64_t H, int64_t D,
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
    // Every load of the (row, head) first, as the forward's.
    const HeadPairs<P> gq = load_head<P>(dq + o, half, lane), xq = load_head<P>(x, half, lane);
    const HeadPairs<P> gk = load_head<P>(dk + o, half, lane), xk = load_head<P>(x + C, half, lane);
    float cs[P], sn[P];
    load_rotary(cs, sn, cos, sin, t, half, lane);
    const float rq = rstd[r], rk = rstd[heads + r];
    const uint16_t* vr = x + 2 * C;
    const uint16_t* v1 = v1src + n * 3 * C + 2 * C + h * D;
    float d[2 * P], xv[2 * P], x1[2 * P], old[2 * P];
#pragma unroll
    for (int i = 0; i < 2 * P; ++i) {
      const int64_t j = lane + 32 * i;
      const bool in = j < D;
      d[i] = in ? load_bf16(dv + o + j) : 0.f;
      xv[i] = in ? load_bf16(vr + j) : 0.f;
      x1[i] = in ? load_bf16(v1 + j) : 0.f;
      old[i] = in ? load_bf16(dv1 + o + j) : 0.f;
    }
    norm_rotary_head_backward(g, gq, xq, rq, cs, sn, D, lane);
    norm_rotary_head_backward(g + C, gk, xk, rk, cs, sn, D, lane);
#pragma unroll
    for (int i = 0; i < 2 * P; ++i) {
      const int64_t j = lane + 32 * i;
      if (j >= D) break;
      sx += double(d[i]) * double(xv[i]);
      sy += double(d[i]) * double(x1[i]);
      if (layer0) {  // dv1 += a*d, then += b*d (each rounded); v_raw's gradient is dv1
        const float once = math::round_bf16(math::fma_rn(av, d[i], old[i]));
        const uint16_t sum = math::f32_to_bf16(math::fma_rn(bv, d[i], once));
        dv1[o + j] = sum;
        g[2 * C + j] = sum;
      } else {
        store_bf16(g + 2 * C + j, av * d[i]);
        store_bf16(dv1 + o + j, math::fma_rn(bv, d[i], old[i]));
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

// Calls f.template operator()<P>() with P = the pairs per lane of head dim D (1-4): each
// kernel holds a head's values in P-sized arrays, so D = 128 keeps 2 pairs, not 4.
template <class F>
void with_pairs_per_lane(int64_t D, const F& f) {
  switch ((D / 2 + 31) / 32) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    default: f.template operator()<4>(); break;
  }
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
  const auto launch = [&]<int P>() {
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, qkv_forward_kernel<P>)(
        static_cast<uint16_t*>(q.data), static_cast<uint16_t*>(k.data),
        static_cast<uint16_t*>(v.data), static_cast<float*>(rstd.data),
        static_cast<const uint16_t*>(qkv.data), static_cast<const uint16_t*>(v1src.data), ca, cb,
        static_cast<const float*>(cos.data), static_cast<const float*>(sin.data), heads, T, H, D,
        float(eps));
  };
  with_pairs_per_lane(D, launch);
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
  const auto launch = [&]<int P>() {
    SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, qkv_backward_kernel<P>)(
        static_cast<uint16_t*>(dqkv.data), static_cast<uint16_t*>(dv1.data),
        static_cast<const uint16_t*>(dq.data), static_cast<const uint16_t*>(dk.data),
        static_cast<const uint16_t*>(dv.data), static_cast<const uint16_t*>(qkv.data),
        static_cast<const float*>(rstd.data), static_cast<const uint16_t*>(v1src.data), ca, cb,
        static_cast<const float*>(cos.data), static_cast<const float*>(sin.data), heads, T, H, D,
        v1src.data == qkv.data, partial);
  };
  with_pairs_per_lane(D, launch);
  launched(op, "qkv_backward_kernel");
  if (!ca.grad && !cb.grad) return;
  SR_LAUNCH(1, math::kReduceThreads, 0, stream_, coef_grads_kernel)(partial, blocks, ca.grad,
                                                                    a.sign, cb.grad, b.sign);
  launched(op, "coef_grads_kernel");
}

}  // namespace speedrun::cuda
