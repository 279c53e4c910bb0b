// PyTorch's Adam fused over F32 p, g, m, v (math/adam.h): the scalars in double on the
// host once per call, the element update in fp32 on the device.
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

}  // namespace

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
