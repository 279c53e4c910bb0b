// PyTorch's Adam fused over F32 p, g, m, v (math/adam.h): the scalars in double on the
// host once per call, the element update in fp32 on the device. adam_steps runs it over
// many parameters in one launch (plan.h tensor_block_starts), each at its own lr, and
// writes the bf16 compute copy from the updated value while it is in a register; a
// parameter of 8k elements at aligned addresses (the embedding and the head) is read and
// written 16 bytes at a time, 8 elements per loop step.
#include <algorithm>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/adam.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                            math::AdamScalars s) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    float pi = p[i], mi = m[i], vi = v[i];
    math::adam_update(pi, g[i], mi, vi, s);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// Up to kMaxLaunchTensors parameters: blocks [start[k], start[k + 1]) update tensor k.
struct AdamBatch {
  TensorTable t;
  float* p[kMaxLaunchTensors];
  const float* g[kMaxLaunchTensors];
  float* m[kMaxLaunchTensors];
  float* v[kMaxLaunchTensors];
  uint16_t* copy[kMaxLaunchTensors];  // null: none
  float step_size[kMaxLaunchTensors];  // lr / bias correction 1, per parameter
};

// s: the scalars every parameter shares (its step_size replaced by the batch's).
__global__ void adam_batch_kernel(AdamBatch b, math::AdamScalars s) {
  const TensorBlock t = tensor_block(b.t);
  s.step_size = b.step_size[t.k];
  float *p = b.p[t.k], *m = b.m[t.k], *v = b.v[t.k];
  const float* g = b.g[t.k];
  uint16_t* copy = b.copy[t.k];
  const int64_t items = b.t.items(t.k);
  if (b.t.vec[t.k]) {
    for (int64_t i = t.first; i < items; i += t.stride) {
      float pi[8], gi[8], mi[8], vi[8];
      load8f(p + 8 * i, pi);
      load8f(g + 8 * i, gi);
      load8f(m + 8 * i, mi);
      load8f(v + 8 * i, vi);
#pragma unroll
      for (int e = 0; e < 8; ++e) math::adam_update(pi[e], gi[e], mi[e], vi[e], s);
      store8f(p + 8 * i, pi);
      store8f(m + 8 * i, mi);
      store8f(v + 8 * i, vi);
      if (copy) store8(copy + 8 * i, pi);
    }
    return;
  }
  for (int64_t i = t.first; i < items; i += t.stride) {
    float pi = p[i], mi = m[i], vi = v[i];
    math::adam_update(pi, g[i], mi, vi, s);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (copy) copy[i] = math::f32_to_bf16(pi);
  }
}

}  // namespace

void CudaBackend::adam_steps(const std::vector<AdamTensor>& ts, const AdamArgs& a) {
  const char* op = "adam_steps";
  check(a.step >= 1, "cuda adam_steps: step ", a.step, " must count from 1");
  for (const AdamTensor& t : ts) {
    need(op, "p", t.p, DType::F32);
    need(op, "g", t.g, DType::F32);
    need(op, "m", t.m, DType::F32);
    need(op, "v", t.v, DType::F32);
    need_numel(op, "p", t.p, "g", t.g);
    need_numel(op, "p", t.p, "m", t.m);
    need_numel(op, "p", t.p, "v", t.v);
    if (!t.copy.empty()) {
      need(op, "copy", t.copy, DType::BF16);
      need_numel(op, "p", t.p, "copy", t.copy);
    }
  }
  // The scalars as adam_step computes them; only the step size depends on the lr.
  const math::AdamScalars shared = math::adam_scalars(0, a.beta1, a.beta2, a.eps, a.step);
  for (size_t first = 0; first < ts.size(); first += kMaxLaunchTensors) {
    AdamBatch b{};
    b.t.count = int(std::min<size_t>(ts.size() - first, kMaxLaunchTensors));
    for (int k = 0; k < b.t.count; ++k) {
      const AdamTensor& t = ts[first + size_t(k)];
      b.t.n[k] = t.p.numel();
      b.p[k] = static_cast<float*>(t.p.data);
      b.g[k] = static_cast<const float*>(t.g.data);
      b.m[k] = static_cast<float*>(t.m.data);
      b.v[k] = static_cast<float*>(t.v.data);
      b.copy[k] = static_cast<uint16_t*>(t.copy.data);
      b.step_size[k] = math::adam_scalars(t.lr, a.beta1, a.beta2, a.eps, a.step).step_size;
      b.t.vec[k] = vec8_ok(b.t.n[k], b.p[k], b.g[k], b.m[k], b.v[k]) && vec8_ok(0, b.copy[k]);
    }
    SR_LAUNCH(b.t.grid(), kThreads, 0, stream_, adam_batch_kernel)(b, shared);
    launched(op, "adam_batch_kernel");
  }
}

void CudaBackend::adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) {
  const char* op = "adam_step";
  need(op, "p", p, DType::F32);
  need(op, "g", g, DType::F32);
  need(op, "m", m, DType::F32);
  need(op, "v", v, DType::F32);
  need_numel(op, "p", p, "g", g);
  need_numel(op, "p", p, "m", m);
  need_numel(op, "p", p, "v", v);
  check(a.step >= 1, "cuda adam_step: step ", a.step, " must count from 1");
  const int64_t n = p.numel();
  if (n == 0) return;
  const math::AdamScalars s = math::adam_scalars(a.lr, a.beta1, a.beta2, a.eps, a.step);
  const Launch l = elementwise_launch(n);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, adam_kernel)(
      static_cast<float*>(p.data), static_cast<const float*>(g.data), static_cast<float*>(m.data),
      static_cast<float*>(v.data), n, s);
  launched(op, "adam_kernel");
}

}  // namespace speedrun::cuda
