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

template <bool Vec>
__global__ void mix_norm_forward_kernel(uint16_t* xmix, uint16_t* n, float* rstd,
                                        const uint16_t* x, CoefArg a, const uint16_t* y,
                                        CoefArg b, int64_t rows, int64_t dim, float eps) {
  const int64_t r = int64_t(blockIdx.x) * kWarpRowsPerBlock + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x & 31;
  const float av = math::coef_value(a), bv = math::coef_value(b);
  const int64_t o = r * dim;
  float ss = 0;
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float xv[8], yv[8];
      load8(x + o + i, xv);
      load8(y + o + i, yv);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        xv[k] = math::round_bf16(av * xv[k] + bv * yv[k]);
        ss += xv[k] * xv[k];
      }
      store8(xmix + o + i, xv);
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) {
      const float m = math::round_bf16(av * load_bf16(x + o + i) + bv * load_bf16(y + o + i));
      store_bf16(xmix + o + i, m);
      ss += m * m;
    }
  }
  const float s = math::rms_rstd(warp_allsum(ss), dim, eps);
  if (lane == 0) rstd[r] = s;
  // Each lane reads back the elements it wrote itself.
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float v[8];
      load8(xmix + o + i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] *= s;
      store8(n + o + i, v);
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) store_bf16(n + o + i, load_bf16(xmix + o + i) * s);
  }
}

// One element of the backward: g = bf16(dres + the norm's gradient), then the mix's.
__device__ inline void mix_norm_backward_elem(float s, float coef, float dn, float m, float res,
                                              float xv, float yv, float av, float bv, float& dx,
                                              float& dy, double& sx, double& sy) {
  const float g = math::round_bf16(res + math::rms_backward_elem(s, coef, dn, m));
  sx += double(g) * double(xv);
  sy += double(g) * double(yv);
  dx = av * g;
  dy = dy + bv * g;
}

// math::kReduceThreads threads per block; partial[block] and partial[gridDim.x + block]
// get the block's two dots.
template <bool Vec>
__global__ void __launch_bounds__(math::kReduceThreads)
    mix_norm_backward_kernel(uint16_t* dx, uint16_t* dy, const uint16_t* dres, const uint16_t* dn,
                             const uint16_t* xmix, const float* rstd, const uint16_t* x,
                             CoefArg a, const uint16_t* y, CoefArg b, int64_t rows, int64_t dim,
                             double* partial) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * math::kReduceWarps;
  const float av = math::coef_value(a), bv = math::coef_value(b);
  double sx = 0, sy = 0;
  for (int64_t r = int64_t(blockIdx.x) * math::kReduceWarps + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const int64_t o = r * dim;
    float dot = 0;
    if constexpr (Vec) {
      for (int64_t i = lane * 8; i < dim; i += 256) {
        float p[8], q[8];
        load8(dn + o + i, p);
        load8(xmix + o + i, q);
#pragma unroll
        for (int k = 0; k < 8; ++k) dot += p[k] * q[k];
      }
    } else {
      for (int64_t i = lane; i < dim; i += 32) dot += load_bf16(dn + o + i) * load_bf16(xmix + o + i);
    }
    const float s = rstd[r];
    const float coef = math::rms_backward_coef(s, warp_allsum(dot), dim);
    if constexpr (Vec) {
      for (int64_t i = lane * 8; i < dim; i += 256) {
        float p[8], q[8], res[8], xv[8], yv[8], gx[8], gy[8];
        load8(dn + o + i, p);
        load8(xmix + o + i, q);
        load8(dres + o + i, res);
        load8(x + o + i, xv);
        load8(y + o + i, yv);
        load8(dy + o + i, gy);
#pragma unroll
        for (int k = 0; k < 8; ++k)
          mix_norm_backward_elem(s, coef, p[k], q[k], res[k], xv[k], yv[k], av, bv, gx[k], gy[k],
                                 sx, sy);
        store8(dx + o + i, gx);
        store8(dy + o + i, gy);
      }
    } else {
      for (int64_t i = lane; i < dim; i += 32) {
        float gx, gy = load_bf16(dy + o + i);
        mix_norm_backward_elem(s, coef, load_bf16(dn + o + i), load_bf16(xmix + o + i),
                               load_bf16(dres + o + i), load_bf16(x + o + i),
                               load_bf16(y + o + i), av, bv, gx, gy, sx, sy);
        store_bf16(dx + o + i, gx);
        store_bf16(dy + o + i, gy);
      }
    }
  }
  store_block_dots(sx, sy, partial);
}

}  // namespace

void CudaBackend::mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x,
                                   const Coef& a, const Tensor& y, const Coef& b, double eps) {
  const char* op = "mix_norm_forward";
  need(op, "xmix", xmix, DType::BF16);
  need(op, "n", n, DType::BF16);
  need(op, "rstd", rstd, DType::F32);
  need(op, "x", x, DType::BF16);
  need(op, "y", y, DType::BF16);
  need_numel(op, "xmix", xmix, "x", x);
  need_numel(op, "n", n, "x", x);
  need_numel(op, "y", y, "x", x);
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
  if (vec8_ok(dim, pm, pn, px, py))
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, mix_norm_forward_kernel<true>)(
        pm, pn, pr, px, ca, py, cb, rows, dim, float(eps));
  else
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, mix_norm_forward_kernel<false>)(
        pm, pn, pr, px, ca, py, cb, rows, dim, float(eps));
  launched(op, "mix_norm_forward_kernel");
}

void CudaBackend::mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                                    const Tensor& xmix, const Tensor& rstd, const Tensor& x,
                                    const Coef& a, const Tensor& y, const Coef& b) {
  const char* op = "mix_norm_backward";
  const std::pair<const char*, const Tensor*> given[] = {
      {"dx", &dx}, {"dy", &dy}, {"dres", &dres}, {"dn", &dn}, {"xmix", &xmix}, {"y", &y}};
  need(op, "x", x, DType::BF16);
  for (const auto& [name, t] : given) {
    need(op, name, *t, DType::BF16);
    need_numel(op, name, *t, "x", x);
  }
  need(op, "rstd", rstd, DType::F32);
  const int64_t rows = x.rows(), dim = x.cols();
  check(rstd.numel() == rows, "cuda ", op, ": rstd ", rstd.shape_str(), " for ", rows, " rows");
  check(dy.data != dx.data && dy.data != dres.data, "cuda ", op,
        ": dy must not alias dx or dres (it accumulates)");
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  if (rows == 0 || dim == 0) return;
  const int blocks = warp_rows_reduce_blocks(rows);
  auto* partial = static_cast<double*>(
      scratch(partials_, sizeof(double) * 2 * math::kMaxPartials, "reduction partials"));
  auto* pdx = static_cast<uint16_t*>(dx.data);
  auto* pdy = static_cast<uint16_t*>(dy.data);
  const auto* pres = static_cast<const uint16_t*>(dres.data);
  const auto* pdn = static_cast<const uint16_t*>(dn.data);
  const auto* pm = static_cast<const uint16_t*>(xmix.data);
  const auto* px = static_cast<const uint16_t*>(x.data);
  const auto* py = static_cast<const uint16_t*>(y.data);
  const auto* pr = static_cast<const float*>(rstd.data);
  if (vec8_ok(dim, pdx, pdy, pres, pdn) && vec8_ok(dim, pm, px, py))
    SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, mix_norm_backward_kernel<true>)(
        pdx, pdy, pres, pdn, pm, pr, px, ca, py, cb, rows, dim, partial);
  else
    SR_LAUNCH(blocks, math::kReduceThreads, 0, stream_, mix_norm_backward_kernel<false>)(
        pdx, pdy, pres, pdn, pm, pr, px, ca, py, cb, rows, dim, partial);
  launched(op, "mix_norm_backward_kernel");
  if (!ca.grad && !cb.grad) return;
  SR_LAUNCH(1, math::kReduceThreads, 0, stream_, coef_grads_kernel)(partial, blocks, ca.grad,
                                                                    a.sign, cb.grad, b.sign);
  launched(op, "coef_grads_kernel");
}

}  // namespace speedrun::cuda
