// Scalar-weighted sums: out = a*x + b*y with a and b read on the device from the F32 master
// scalars (math/elementwise.h's CoefArg), and the backward: dx, dy (= or +=) a*dout, b*dout
// while the same pass sums <dout, x> and <dout, y> in double in the two-stage order of
// math/reduce.h; a second launch (one block) adds sign * sum to the F32 gradient scalars.
// No atomics.
// Aliasing as backend.h allows: within an item every input is read before any output is
// written; dy is read after dx is written, so dx == dy (both +=) adds both terms.
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/coef.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/elementwise.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

using math::CoefArg;

template <bool Vec>
__global__ void scaled_sum_forward_kernel(uint16_t* out, const uint16_t* x, CoefArg a,
                                          const uint16_t* y, CoefArg b, int64_t n) {
  const float av = math::coef_value(a), bv = math::coef_value(b);
  if constexpr (Vec) {
    for (int64_t i = global_thread(); i < n / 8; i += grid_threads()) {
      float xv[8], yv[8];
      load8(x + 8 * i, xv);
      load8(y + 8 * i, yv);
#pragma unroll
      for (int k = 0; k < 8; ++k) xv[k] = math::weighted_sum(av, xv[k], bv, yv[k]);
      store8(out + 8 * i, xv);
    }
  } else {
    for (int64_t i = global_thread(); i < n; i += grid_threads())
      store_bf16(out + i, math::weighted_sum(av, load_bf16(x + i), bv, load_bf16(y + i)));
  }
}

// Modes of an output: 0 skipped, 1 assigned (c*d), 2 accumulated (old + c*d rounded once).
__device__ inline float apply(int mode, float old, float c, float d) {
  return mode == 2 ? math::fma_rn(c, d, old) : c * d;
}

// Stage 1 with kReduceThreads threads and math::reduce_blocks(items) blocks when partial is
// set (partial[block] and partial[gridDim.x + block] get the two dots).
template <bool Vec>
__global__ void __launch_bounds__(math::kReduceThreads)
    scaled_sum_backward_kernel(uint16_t* dx, int mx, uint16_t* dy, int my, const uint16_t* dout,
                               const uint16_t* x, CoefArg a, const uint16_t* y, CoefArg b,
                               int64_t n, double* partial) {
  const float av = math::coef_value(a), bv = math::coef_value(b);
  double sx = 0, sy = 0;
  if constexpr (Vec) {
    for (int64_t i = global_thread(); i < n / 8; i += grid_threads()) {
      float d[8], v[8], o[8];
      load8(dout + 8 * i, d);
      if (x) {
        load8(x + 8 * i, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) sx += double(d[k]) * double(v[k]);
      }
      if (y) {
        load8(y + 8 * i, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) sy += double(d[k]) * double(v[k]);
      }
      if (mx) {
        if (mx == 2) load8(dx + 8 * i, o);
#pragma unroll
        for (int k = 0; k < 8; ++k) o[k] = apply(mx, o[k], av, d[k]);
        store8(dx + 8 * i, o);
      }
      if (my) {
        if (my == 2) load8(dy + 8 * i, o);
#pragma unroll
        for (int k = 0; k < 8; ++k) o[k] = apply(my, o[k], bv, d[k]);
        store8(dy + 8 * i, o);
      }
    }
  } else {
    for (int64_t i = global_thread(); i < n; i += grid_threads()) {
      const float d = load_bf16(dout + i);
      if (x) sx += double(d) * double(load_bf16(x + i));
      if (y) sy += double(d) * double(load_bf16(y + i));
      if (mx) store_bf16(dx + i, apply(mx, mx == 2 ? load_bf16(dx + i) : 0.0f, av, d));
      if (my) store_bf16(dy + i, apply(my, my == 2 ? load_bf16(dy + i) : 0.0f, bv, d));
    }
  }
  if (partial) store_block_dots(sx, sy, partial);
}

}  // namespace

// Both dots in one block, a's gradient then b's, as the CPU adds them: with a shared
// gradient scalar two blocks could race.
__global__ void __launch_bounds__(math::kReduceThreads)
    coef_grads_kernel(const double* partial, int count, float* ga, double sa, float* gb, double sb) {
  __shared__ double smem[math::kReduceWarps];
  double ax = 0, ay = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    ax += partial[i];
    ay += partial[count + i];
  }
  const double sx = block_sum(ax, smem), sy = block_sum(ay, smem);
  if (threadIdx.x == 0) {
    if (ga) ga[0] += float(sa * sx);
    if (gb) gb[0] += float(sb * sy);
  }
}

CoefArg coef_arg(const char* op, const char* name, const Coef& c) {
  CoefArg r;
  r.sign = c.sign;
  r.offset = c.offset;
  if (!c.value_param.empty()) {
    need(op, name, c.value_param, DType::F32);
    r.value = static_cast<const float*>(c.value_param.data);
  }
  if (!c.grad_param.empty()) {
    need(op, name, c.grad_param, DType::F32);
    r.grad = static_cast<float*>(c.grad_param.data);
  }
  return r;
}

void CudaBackend::scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                                     const Coef& b) {
  const char* op = "scaled_sum_forward";
  need(op, "out", out, DType::BF16);
  need(op, "x", x, DType::BF16);
  need(op, "y", y, DType::BF16);
  need_numel(op, "out", out, "x", x);
  need_numel(op, "out", out, "y", y);
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  const int64_t n = out.numel();
  if (n == 0) return;
  auto* po = static_cast<uint16_t*>(out.data);
  const auto* px = static_cast<const uint16_t*>(x.data);
  const auto* py = static_cast<const uint16_t*>(y.data);
  if (vec8_ok(n, po, px, py)) {
    const Launch l = elementwise_launch(n / 8);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, scaled_sum_forward_kernel<true>)(po, px, ca, py, cb, n);
  } else {
    const Launch l = elementwise_launch(n);
    SR_LAUNCH(l.blocks, l.threads, 0, stream_, scaled_sum_forward_kernel<false>)(po, px, ca, py, cb, n);
  }
  launched(op, "scaled_sum_forward_kernel");
}

void CudaBackend::scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y,
                                      const Tensor& dout, const Tensor& x, const Coef& a,
                                      const Tensor& y, const Coef& b) {
  const char* op = "scaled_sum_backward";
  need(op, "dout", dout, DType::BF16);
  const std::pair<const char*, const Tensor*> given[] = {{"dx", &dx}, {"dy", &dy}, {"x", &x}, {"y", &y}};
  for (const auto& [name, t] : given)
    if (!t->empty()) {
      need(op, name, *t, DType::BF16);
      need_numel(op, name, *t, "dout", dout);
    }
  check(dx.empty() || dx.data != dy.data || (acc_x && acc_y), "cuda scaled_sum_backward: dx "
        "and dy are the same buffer, which needs acc_x and acc_y");
  const CoefArg ca = coef_arg(op, "a", a), cb = coef_arg(op, "b", b);
  const int64_t n = dout.numel();
  if (n == 0) return;
  const int mx = dx.empty() ? 0 : acc_x ? 2 : 1;
  const int my = dy.empty() ? 0 : acc_y ? 2 : 1;
  // A coefficient's gradient needs its tensor (backend.h: no x, no dot).
  float* ga = x.empty() ? nullptr : ca.grad;
  float* gb = y.empty() ? nullptr : cb.grad;
  const bool reduce = ga || gb;
  auto* pdx = static_cast<uint16_t*>(dx.data);
  auto* pdy = static_cast<uint16_t*>(dy.data);
  const auto* pdo = static_cast<const uint16_t*>(dout.data);
  const auto* px = ga ? static_cast<const uint16_t*>(x.data) : nullptr;
  const auto* py = gb ? static_cast<const uint16_t*>(y.data) : nullptr;
  const bool vec = vec8_ok(n, pdx, pdy, pdo) && vec8_ok(n, px, py);
  const int64_t items = vec ? n / 8 : n;
  double* partial = nullptr;
  int64_t blocks = elementwise_launch(items).blocks;
  int threads = kThreads;
  if (reduce) {
    partial = static_cast<double*>(
        scratch(partials_, kPartialsBytes, "reduction partials"));
    blocks = math::reduce_blocks(items);
    threads = math::kReduceThreads;
  }
  if (vec)
    SR_LAUNCH(blocks, threads, 0, stream_, scaled_sum_backward_kernel<true>)(pdx, mx, pdy, my, pdo, px, ca,
                                                                      py, cb, n, partial);
  else
    SR_LAUNCH(blocks, threads, 0, stream_, scaled_sum_backward_kernel<false>)(pdx, mx, pdy, my, pdo, px,
                                                                       ca, py, cb, n, partial);
  launched(op, "scaled_sum_backward_kernel");
  if (!reduce) return;
  SR_LAUNCH(1, math::kReduceThreads, 0, stream_, coef_grads_kernel)(partial, int(blocks), ga, a.sign, gb,
                                                              b.sign);
  launched(op, "coef_grads_kernel");
}

}  // namespace speedrun::cuda
