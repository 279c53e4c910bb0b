// A block's input: the lambdas' mix xmix = a*x + b*y and its rms_norm in one pass, one warp
// per row (backend.h: mix_norm_forward/backward). The forward writes xmix and takes the
// row's sum of squares of the rounded values, then reads its own row back (from cache) to
// write n; the separate ops would read xmix from memory again. The backward forms
// g = dres + rms_norm's gradient and hands it straight to the mix's backward (dx = a*g,
// dy += b*g, the dots <g, x> and <g, y>) instead of writing g and reading it back.
// The arithmetic is rms_norm.cu's and scaled_sum.cu's (math/rms_norm.h, math/elementwise.h).
// The backward walks rows grid-stride over a grid that is a function of the size alone and
// reduces its dots as scaled_sum.cu does (double per thread, math/reduce.h's tree per
// block, coef_grads_kernel over the blocks): the same bits on every run.
// skip_mix_norm_forward/backward are the same kernels with a U-net decoder block's skip
// folded in (Skip): xin = h + c*skip is formed where it is read, forward and backward
// (math::weighted_sum, as scaled_sum.cu forms it), so it is never written or read back, and
// the backward also writes dskip = c*dx and sums <dx, skip> for c as a third dot.
// The backward can also add a tensor to dx where it writes it (Add::kTensor: a U-net
// encoder output's gradient from its skip, dx + dskip as axpy would add it) or, where skip
// is h itself, the skip's own share c*dx (Add::kSkip: dskip is then not written at all);
// or, where x is y (the first block's input is x0), add dx into dy instead of writing it
// (Add::kIntoDy).
// Rows whose length is a multiple of 8 with 16-byte aligned data are read 8 at a time.
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/coef.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/rms_norm.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

using math::CoefArg;

// With Skip, x is h and the mix's x is xin = bf16(1*h + c*skip), formed here as
// scaled_sum_forward forms it (math::weighted_sum, whose rounding is spelled out) and never
// stored.
struct SkipArg {
  const uint16_t* skip = nullptr;  // [rows, dim]
  CoefArg c;
};

// xin = bf16(1*h + c*skip), forward and backward alike.
__device__ inline float skip_input(float cv, float h, float skip) {
  return math::round_bf16(math::weighted_sum(1.0f, h, cv, skip));
}

template <bool Vec, bool Skip>
__global__ void mix_norm_forward_kernel(uint16_t* xmix, uint16_t* n, float* rstd,
                                        const uint16_t* x, CoefArg a, const uint16_t* y,
                                        CoefArg b, SkipArg sk, int64_t rows, int64_t dim,
                                        float eps) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const float av = math::coef_value(a), bv = math::coef_value(b);
  const float cv = Skip ? math::coef_value(sk.c) : 0.0f;
  const int64_t o = r * dim;
  float ss = 0;
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float xv[8], yv[8];
      load8(x + o + i, xv);
      load8(y + o + i, yv);
      if constexpr (Skip) {
        float sv[8];
        load8(sk.skip + o + i, sv);
#pragma unroll
        for (int k = 0; k < 8; ++k) xv[k] = skip_input(cv, xv[k], sv[k]);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        xv[k] = math::round_bf16(math::weighted_sum(av, xv[k], bv, yv[k]));
        ss += xv[k] * xv[k];
      }
      store8(xmix + o + i, xv);
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) {
      float xv = load_bf16(x + o + i);
      if constexpr (Skip) xv = skip_input(cv, xv, load_bf16(sk.skip + o + i));
      const float m = math::round_bf16(math::weighted_sum(av, xv, bv, load_bf16(y + o + i)));
      store_bf16(xmix + o + i, m);
      ss += m * m;
    }
  }
  const float s = math::rms_rstd(warp_allsum(ss), dim, eps);
  if (lane == 0) rstd[r] = s;
  // Each lane reads back the elements it wrote itself.
  warp_row_scale<Vec>(n + o, xmix + o, dim, lane, s);
}

// One element of the backward: g = bf16(dres + the norm's gradient), then the mix's.
__device__ inline void mix_norm_backward_elem(float s, float coef, float dn, float m, float res,
                                              float xv, float yv, float av, float bv, float& dx,
                                              float& dy, double& sx, double& sy) {
  const float g = math::round_bf16(res + math::rms_backward_elem(s, coef, dn, m));
  sx += double(g) * double(xv);
  sy += double(g) * double(yv);
  dx = av * g;
  dy = math::fma_rn(bv, g, dy);
}

// With Skip, the backward recomputes xv from h and skip (skip_input, as the forward), and
// the skip's backward follows with dout = dx as stored (bf16): dskip = c*dx, sz += dx*skip.
__device__ inline void skip_backward_elem(float cv, float skip, float& dx, float& dskip,
                                          double& sz) {
  dx = math::round_bf16(dx);
  dskip = cv * dx;
  sz += double(dx) * double(skip);
}

// What the backward adds to dx after the op's own value (rounded first, as stored):
// nothing, a tensor (dadd), or, where skip is h, the dskip it would otherwise write; or
// where dx goes instead: into dy, where x is y.
enum class Add { kNone, kTensor, kSkip, kIntoDy };

// dx (=) bf16(dx) + add, as axpy_bf16_kernel adds with alpha 1 (the store rounds the sum);
// also for dy (+=) bf16(dx) where dx goes into dy.
__device__ inline void add_to_dx(float& dx, float add) { dx = math::round_bf16(dx) + add; }

// math::kReduceThreads threads per block; partial[block] and partial[gridDim.x + block]
// get the block's two dots (with Skip, partial[2 * gridDim.x + block] the third). x is h
// with Skip. dadd is read with Add::kTensor; dskip is written with Skip and Add::kNone.
template <bool Vec, bool Skip, Add A>
__global__ void __launch_bounds__(math::kReduceThreads)
    mix_norm_backward_kernel(uint16_t* dx, uint16_t* dy, const uint16_t* dres, const uint16_t* dn,
                             const uint16_t* xmix, const float* rstd, const uint16_t* x,
                             CoefArg a, const uint16_t* y, CoefArg b, SkipArg sk,
                             uint16_t* dskip, const uint16_t* dadd, int64_t rows, int64_t dim,
                             double* partial) {
  static_assert(A != Add::kSkip || Skip, "Add::kSkip adds the skip's own gradient");
  static_assert(A != Add::kIntoDy || !Skip, "Add::kIntoDy is the first block's, no skip");
  constexpr bool kWriteSkip = Skip && A == Add::kNone;
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * math::kReduceWarps;
  const float av = math::coef_value(a), bv = math::coef_value(b);
  const float cv = Skip ? math::coef_value(sk.c) : 0.0f;
  double sx = 0, sy = 0, sz = 0;
  for (int64_t r = int64_t(blockIdx.x) * math::kReduceWarps + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const int64_t o = r * dim;
    const float dot = warp_row_dot<Vec>(dn + o, xmix + o, dim, lane);
    const float s = rstd[r];
    const float coef = math::rms_backward_coef(s, warp_allsum(dot), dim);
    if constexpr (Vec) {
      for (int64_t i = lane * 8; i < dim; i += 256) {
        float p[8], q[8], res[8], xv[8], yv[8], gx[8], gy[8], sv[8], gs[8], ad[8];
        load8(dn + o + i, p);
        load8(xmix + o + i, q);
        load8(dres + o + i, res);
        load8(x + o + i, xv);
        load8(y + o + i, yv);
        load8(dy + o + i, gy);
        if constexpr (A == Add::kTensor) load8(dadd + o + i, ad);
        if constexpr (Skip) {
          load8(sk.skip + o + i, sv);
#pragma unroll
          for (int k = 0; k < 8; ++k) xv[k] = skip_input(cv, xv[k], sv[k]);
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          mix_norm_backward_elem(s, coef, p[k], q[k], res[k], xv[k], yv[k], av, bv, gx[k], gy[k],
                                 sx, sy);
          if constexpr (Skip) skip_backward_elem(cv, sv[k], gx[k], gs[k], sz);
          if constexpr (A == Add::kTensor) add_to_dx(gx[k], ad[k]);
          if constexpr (A == Add::kSkip) add_to_dx(gx[k], math::round_bf16(gs[k]));
          if constexpr (A == Add::kIntoDy) add_to_dx(gy[k], math::round_bf16(gx[k]));
        }
        if constexpr (A != Add::kIntoDy) store8(dx + o + i, gx);
        store8(dy + o + i, gy);
        if constexpr (kWriteSkip) store8(dskip + o + i, gs);
      }
    } else {
      for (int64_t i = lane; i < dim; i += 32) {
        float xv = load_bf16(x + o + i), sv = 0, gx, gs, gy = load_bf16(dy + o + i);
        if constexpr (Skip) {
          sv = load_bf16(sk.skip + o + i);
          xv = skip_input(cv, xv, sv);
        }
        mix_norm_backward_elem(s, coef, load_bf16(dn + o + i), load_bf16(xmix + o + i),
                               load_bf16(dres + o + i), xv, load_bf16(y + o + i), av, bv, gx, gy,
                               sx, sy);
        if constexpr (Skip) skip_backward_elem(cv, sv, gx, gs, sz);
        if constexpr (kWriteSkip) store_bf16(dskip + o + i, gs);
        if constexpr (A == Add::kTensor) add_to_dx(gx, load_bf16(dadd + o + i));
        if constexpr (A == Add::kSkip) add_to_dx(gx, math::round_bf16(gs));
        if constexpr (A == Add::kIntoDy) add_to_dx(gy, math::round_bf16(gx));
        if constexpr (A != Add::kIntoDy) store_bf16(dx + o + i, gx);
        store_bf16(dy + o + i, gy);
      }
    }
  }
  if constexpr (Skip)
    store_block_dots(sx, sy, sz, partial);
  else
    store_block_dots(sx, sy, partial);
}

}  // namespace

void CudaBackend::mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x,
                                   const Coef& a, const Tensor& y, const Coef& b, double eps) {
  mix_norm_forward_on("mix_norm_forward", xmix, n, rstd, x, nullptr, nullptr, a, y, b, eps);
}

void CudaBackend::skip_mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& h,
                                        const Tensor& skip, const Coef& c, const Coef& a,
                                        const Tensor& y, const Coef& b, double eps) {
  mix_norm_forward_on("skip_mix_norm_forward", xmix, n, rstd, h, &skip, &c, a, y, b, eps);
}

void CudaBackend::mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                                    const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                    const Coef& a, const Tensor& y, const Coef& b,
                                    const Tensor& dadd) {
  mix_norm_backward_on("mix_norm_backward", dx, nullptr, dy, dres, dn, xmix, rstd, x, nullptr,
                       nullptr, a, y, b, dadd);
}

void CudaBackend::skip_mix_norm_backward(Tensor dx, Tensor dskip, Tensor dy, const Tensor& dres,
                                         const Tensor& dn, const Tensor& xmix, const Tensor& rstd,
                                         const Tensor& h, const Tensor& skip, const Coef& c,
                                         const Coef& a, const Tensor& y, const Coef& b) {
  mix_norm_backward_on("skip_mix_norm_backward", dx, &dskip, dy, dres, dn, xmix, rstd, h, &skip,
                       &c, a, y, b, Tensor{});
}

void CudaBackend::mix_norm_forward_on(const char* op, Tensor xmix, Tensor n, Tensor rstd,
                                      const Tensor& x, const Tensor* skip, const Coef* c,
                                      const Coef& a, const Tensor& y, const Coef& b, double eps) {
  need(op, "xmix", xmix, DType::BF16);
  need(op, "n", n, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need(op, skip ? "h" : "x", x, DType::BF16);
  need(op, "y", y, DType::BF16);
  need_numel(op, "xmix", xmix, "x", x);
  need_numel(op, "n", n, "x", x);
  need_numel(op, "y", y, "x", x);
  SkipArg sk;
  if (skip) {
    need(op, "skip", *skip, DType::BF16);
    need_numel(op, "skip", *skip, "h", x);
    sk.skip = static_cast<const uint16_t*>(skip->data);
    sk.c = coef_arg(op, "c", *c);
  }
  const int64_t rows = x.rows(), dim = x.cols();
  check(rstd.numel() == rows, "cuda ", op, ": rstd ", rstd.shape_str(), " for ", rows, " rows");
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  if (rows == 0 || dim == 0) return;
  const Launch l = warp_rows_launch(rows);
  auto* pm = static_cast<uint16_t*>(xmix.data);
  auto* pn = static_cast<uint16_t*>(n.data);
  const auto* px = static_cast<const uint16_t*>(x.data);
  const auto* py = static_cast<const uint16_t*>(y.data);
  auto* pr = static_cast<float*>(rstd.data);
  const bool vec = vec8_ok(dim, pm, pn, px, py) && vec8_ok(dim, sk.skip);
  // SR_LAUNCH names one kernel: the four instances spelled out.
#define SR_MIX_NORM_FORWARD(VEC, SKIP)                                                     \
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, mix_norm_forward_kernel<VEC, SKIP>)(           \
      pm, pn, pr, px, ca, py, cb, sk, rows, dim, float(eps))
  if (skip && vec) SR_MIX_NORM_FORWARD(true, true);
  else if (skip) SR_MIX_NORM_FORWARD(false, true);
  else if (vec) SR_MIX_NORM_FORWARD(true, false);
  else SR_MIX_NORM_FORWARD(false, false);
#undef SR_MIX_NORM_FORWARD
  launched(op, "mix_norm_forward_kernel");
}

void CudaBackend::mix_norm_backward_on(const char* op, Tensor dx, const Tensor* dskip, Tensor dy,
                                       const Tensor& dres, const Tensor& dn, const Tensor& xmix,
                                       const Tensor& rstd, const Tensor& x, const Tensor* skip,
                                       const Coef* c, const Coef& a, const Tensor& y,
                                       const Coef& b, const Tensor& dadd) {
  // dx empty: x is y, dx goes into dy (Add::kIntoDy).
  const bool into_dy = dx.empty() && !skip;
  const std::pair<const char*, const Tensor*> given[] = {
      {"dx", &dx}, {"dy", &dy}, {"dres", &dres}, {"dn", &dn}, {"xmix", &xmix}, {"y", &y}};
  need(op, skip ? "h" : "x", x, DType::BF16);
  for (const auto& [name, t] : given) {
    if (t == &dx && into_dy) continue;
    need(op, name, *t, DType::BF16);
    need_numel(op, name, *t, "x", x);
  }
  if (into_dy) {
    check(x.data == y.data, "cuda ", op, ": dx may be left empty only where x is y (the same tensor)");
    check(dadd.empty(), "cuda ", op, ": no dadd without a dx to add it to");
  }
  need(op, "rstd", rstd, DType::F32);
  const int64_t rows = x.rows(), dim = x.cols();
  check(rstd.numel() == rows, "cuda ", op, ": rstd ", rstd.shape_str(), " for ", rows, " rows");
  check(dy.data != dx.data && dy.data != dres.data, "cuda ", op,
        ": dy must not alias dx or dres (it accumulates)");
  SkipArg sk;
  uint16_t* pds = nullptr;
  const uint16_t* padd = nullptr;
  Add add = Add::kNone;
  if (skip) {
    need(op, "skip", *skip, DType::BF16);
    need_numel(op, "skip", *skip, "h", x);
    if (dskip->empty()) {  // skip is h: its share c*dx is added to dx
      check(skip->data == x.data, "cuda ", op,
            ": dskip may be left empty only where skip is h (the same tensor)");
      add = Add::kSkip;
    } else {
      need(op, "dskip", *dskip, DType::BF16);
      need_numel(op, "dskip", *dskip, "h", x);
      for (const auto& [name, t] : given)
        check(dskip->data != t->data, "cuda ", op, ": dskip must not alias ", name);
      check(dskip->data != x.data && dskip->data != skip->data, "cuda ", op,
            ": dskip must not alias h or skip");
      pds = static_cast<uint16_t*>(dskip->data);
    }
    sk.skip = static_cast<const uint16_t*>(skip->data);
    sk.c = coef_arg(op, "c", *c);
  }
  if (into_dy) add = Add::kIntoDy;
  if (!dadd.empty()) {
    check(!skip, "cuda ", op, ": dadd is mix_norm_backward's alone");
    need(op, "dadd", dadd, DType::BF16);
    need_numel(op, "dadd", dadd, "x", x);
    check(dadd.data != dx.data && dadd.data != dy.data, "cuda ", op,
          ": dadd must not alias dx or dy");
    padd = static_cast<const uint16_t*>(dadd.data);
    add = Add::kTensor;
  }
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  if (rows == 0 || dim == 0) return;
  const int blocks = warp_rows_reduce_blocks(rows);
  auto* partial = static_cast<double*>(
      scratch(partials_, kPartialsBytes, "reduction partials"));
  auto* pdx = static_cast<uint16_t*>(dx.data);
  auto* pdy = static_cast<uint16_t*>(dy.data);
  const auto* pres = static_cast<const uint16_t*>(dres.data);
  const auto* pdn = static_cast<const uint16_t*>(dn.data);
  const auto* pm = static_cast<const uint16_t*>(xmix.data);
  const auto* px = static_cast<const uint16_t*>(x.data);
  const auto* py = static_cast<const uint16_t*>(y.data);
  const auto* pr = static_cast<const float*>(rstd.data);
  const bool vec = vec8_ok(dim, pdx, pdy, pres, pdn) && vec8_ok(dim, pm, px, py) &&
                   vec8_ok(dim, sk.skip, pds, padd);
  // SR_LAUNCH names one kernel: the ten instances spelled out.
#define SR_MIX_NORM_BACKWARD(VEC, SKIP, ADD)                                                \
  SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_,                                       \
            mix_norm_backward_kernel<VEC, SKIP, Add::ADD>)(pdx, pdy, pres, pdn, pm, pr, px, ca, \
                                                           py, cb, sk, pds, padd, rows, dim,  \
                                                           partial)
  if (add == Add::kSkip) {
    if (vec) SR_MIX_NORM_BACKWARD(true, true, kSkip);
    else SR_MIX_NORM_BACKWARD(false, true, kSkip);
  } else if (skip) {
    if (vec) SR_MIX_NORM_BACKWARD(true, true, kNone);
    else SR_MIX_NORM_BACKWARD(false, true, kNone);
  } else if (add == Add::kTensor) {
    if (vec) SR_MIX_NORM_BACKWARD(true, false, kTensor);
    else SR_MIX_NORM_BACKWARD(false, false, kTensor);
  } else if (add == Add::kIntoDy) {
    if (vec) SR_MIX_NORM_BACKWARD(true, false, kIntoDy);
    else SR_MIX_NORM_BACKWARD(false, false, kIntoDy);
  } else {
    if (vec) SR_MIX_NORM_BACKWARD(true, false, kNone);
    else SR_MIX_NORM_BACKWARD(false, false, kNone);
  }
#undef SR_MIX_NORM_BACKWARD
  launched(op, "mix_norm_backward_kernel");
  if (ca.grad || cb.grad) {
    SR_LAUNCH(1, math::kReduceThreads, 0, stream_, coef_grads_kernel)(partial, blocks, ca.grad,
                                                                      a.sign, cb.grad, b.sign);
    launched(op, "coef_grads_kernel");
  }
  if (sk.c.grad) {  // the third dot, partial[2 * blocks ..), as coef_grads_kernel's second
    SR_LAUNCH(1, math::kReduceThreads, 0, stream_, coef_grads_kernel)(partial + blocks, blocks,
                                                                      nullptr, 0.0, sk.c.grad,
                                                                      c->sign);
    launched(op, "coef_grads_kernel");
  }
}

}  // namespace speedrun::cuda
