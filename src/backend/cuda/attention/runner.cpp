// AttentionRunner: validates a call, keeps the device copy of the work lists for the
// current masks (plan.h), and enqueues the kernels (kernels.h) on the backend's stream.
//
// Work lists are uploaded only when the masks change (MaskCache: every layer's forward and
// the backward of a micro-batch reuse them). An upload is written into one of two pinned
// staging buffers and copied asynchronously on the stream; the host waits only for the copy
// that last used the same staging buffer, two plans back, so it can run ahead of the GPU.
// The device copy is overwritten in stream order, after every kernel that read the old one.
// Buffers are sized for the largest plan of the call's B and T (plan_bytes_bound) when
// first needed, and reused: a step allocates nothing, however the masks change. Growing (a
// larger B or T) waits for the stream, since queued kernels may still read the old buffer.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/attention/attention.h"
#include "backend/cuda/attention/kernels.h"
#include "backend/cuda/attention/plan.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

using attn::PlanLayout;
using attn::PlanView;

namespace {

void cuda_ok(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) fail(op, ": ", what, " failed: ", cudaGetErrorString(e));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The shapes of one call, checked against the contract of backend.h.
struct Shapes {
  int64_t B, T, N, C, H, D;
};

Shapes check_shapes(const char* op, const Tensor& q, const std::vector<BlockMask>& masks,
                    int64_t H) {
  Shapes s{};
  s.B = int64_t(masks.size());
  check(s.B >= 1, op, ": no masks; pass one BlockMask per sequence");
  check(H >= 1, op, ": H = ", H, " must be >= 1");
  s.N = q.rows();
  s.C = q.cols();
  check(s.N >= 1 && s.N % s.B == 0, op, ": ", s.N, " rows do not split into ", s.B, " sequences");
  check(s.C % H == 0, op, ": width C = ", s.C, " is not a multiple of H = ", H);
  s.T = s.N / s.B;
  s.H = H;
  s.D = s.C / H;
  check(attn::supported_head_dim(s.D), op, ": head dim D = ", s.D,
        " has no CUDA kernel (64 and 128 do)");
  check(masks[0].T == s.T, op, ": the masks were built for T = ", masks[0].T,
        " but the tensors hold ", s.B, " sequences of T = ", s.T);
  return s;
}

void check_tensor(const char* op, const char* name, const Tensor& t, DType dtype,
                  int64_t rows, int64_t cols) {
  check(!t.empty(), op, ": ", name, " is empty");
  check(t.device == Device::CUDA, op, ": ", name, " is not on the CUDA device");
  check(t.dtype == dtype, op, ": ", name, " is ", dtype_name(t.dtype), ", expected ",
        dtype_name(dtype));
  check(t.rows() == rows && t.cols() == cols, op, ": ", name, " has shape ", t.shape_str(),
        ", expected ", rows, " x ", cols);
  check(aligned16(t.data), op, ": ", name, " is not 16-byte aligned");
}

void check_stats(const char* op, const char* name, const Tensor& t, const Shapes& s) {
  check(!t.empty() && t.device == Device::CUDA && t.dtype == DType::F32, op, ": ", name,
        " must be an F32 tensor on the CUDA device");
  check(t.numel() == s.B * s.H * s.T, op, ": ", name, " has shape ", t.shape_str(),
        ", expected [B, H, T] = [", s.B, ", ", s.H, ", ", s.T, "]");
}

}  // namespace

struct AttentionRunner::Impl {
  cudaStream_t stream = nullptr;
  attn::MaskCache cache;
  PlanLayout layout;
  PlanView view{};
  void* plan_dev = nullptr;
  size_t plan_cap = 0;
  void* pinned[2] = {nullptr, nullptr};
  size_t pinned_cap[2] = {0, 0};
  cudaEvent_t copied[2] = {nullptr, nullptr};
  int slot = 0;
  std::vector<attn::WorkItem> order;  // scratch of write_plan
  void* delta = nullptr;              // backward scratch [B, H, T] fp32
  size_t delta_cap = 0;
  attn::Tiling tiling = attn::Tiling::kWide;  // chunk sizes (plan.h), for this GPU
  attn::ForwardKernel forward_kernel = attn::ForwardKernel::kMma;
  attn::BackwardKernel backward_kernel = attn::BackwardKernel::kMma;
  attn::ItemOrder item_order = attn::ItemOrder::kLongestFirst;
  bool prepared_wgmma[2] = {false, false};      // the wgmma forward's, D = 64 / 128
  bool prepared_bwd_wgmma[2] = {false, false};
  bool prepared_fwd[2] = {false, false};  // shared-memory limits raised, D = 64 / 128
  bool prepared_bwd[2] = {false, false};

  // Makes p hold at least `bytes`, allocating `want` (>= bytes) where it must grow.
  void grow_device(void*& p, size_t& cap, size_t bytes, size_t want, const char* op,
                   const char* what) {
    if (bytes <= cap) return;
    cuda_ok(cudaStreamSynchronize(stream), op, "waiting for the stream before growing a buffer");
    if (p) cuda_ok(cudaFree(p), op, "cudaFree");
    p = nullptr;
    cap = 0;
    cuda_ok(cudaMalloc(&p, want), op, what);
    cap = want;
  }

  // Makes the device hold the work lists of `masks`; returns the kernels' view of them.
  const PlanView& ensure_plan(const char* op, const std::vector<BlockMask>& masks) {
    if (cache.matches(masks)) return view;
    cache.forget();  // until the new plan is fully enqueued
    const PlanLayout L = attn::plan_layout(op, masks);
    // Masks from build_block_mask never pass the bound; others grow the buffers to their size.
    const size_t want = std::max(L.bytes, attn::plan_bytes_bound(L.B, L.T));
    const int s = slot;
    cuda_ok(cudaEventSynchronize(copied[s]), op, "waiting for an earlier plan upload");
    // Both staging buffers at once, so the next plan (the other buffer's) allocates nothing.
    for (int k : {s, s ^ 1}) {
      if (L.bytes <= pinned_cap[k]) continue;
      if (pinned[k]) {
        cuda_ok(cudaEventSynchronize(copied[k]), op, "waiting for an earlier plan upload");
        cuda_ok(cudaFreeHost(pinned[k]), op, "cudaFreeHost");
      }
      pinned[k] = nullptr;
      pinned_cap[k] = 0;
      cuda_ok(cudaMallocHost(&pinned[k], want), op, "cudaMallocHost (plan staging)");
      pinned_cap[k] = want;
    }
    attn::write_plan(masks, L, pinned[s], order, item_order);
    grow_device(plan_dev, plan_cap, L.bytes, want, op, "cudaMalloc (plan)");
    cuda_ok(cudaMemcpyAsync(plan_dev, pinned[s], L.bytes, cudaMemcpyHostToDevice, stream), op,
            "plan upload");
    cuda_ok(cudaEventRecord(copied[s], stream), op, "cudaEventRecord");
    slot ^= 1;
    layout = L;
    view = attn::plan_view(L, plan_dev);
    cache.remember(masks);
    return view;
  }

  void check_grid(const char* op, int64_t items, int64_t H) {
    check(attn::grid_size(items, H) <= INT32_MAX, op, ": ", items, " tiles x ", H,
          " heads exceed one launch; split the micro-batch");
  }
};

namespace {

// SPEEDRUN_ATTENTION_<which>: mma (or unset) or wgmma; whether it asks for wgmma.
bool wants_wgmma(const char* variable, const char* which) {
  const char* v = std::getenv(variable);
  if (v == nullptr || *v == 0 || std::strcmp(v, "mma") == 0) return false;
  check(std::strcmp(v, "wgmma") == 0, variable, "=", v, " is not a ", which,
        " kernel: use mma (every GPU, the default) or wgmma (Hopper)");
  return true;
}

// SPEEDRUN_ATTENTION_ORDER: longest (or unset) or tiles.
attn::ItemOrder order_from_environment() {
  const char* v = std::getenv("SPEEDRUN_ATTENTION_ORDER");
  if (v == nullptr || *v == 0 || std::strcmp(v, "longest") == 0) return attn::ItemOrder::kLongestFirst;
  check(std::strcmp(v, "tiles") == 0, "SPEEDRUN_ATTENTION_ORDER=", v, " is not an order of the ",
        "attention's work: use longest (the longest tile lists first, the default) or tiles "
        "((sequence, tile) order)");
  return attn::ItemOrder::kTiles;
}

// Refuses a wgmma kernel set (the forward's or the backward's: `what`, chosen by `variable`)
// where it cannot run: a GPU other than sm_90, or a build without sm_90a code for it
// (`built`: the SASS version its kernels run as here).
void check_wgmma_runs(int dev, const char* what, const char* variable, int built) {
  int major = 0, minor = 0;
  cuda_ok(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "AttentionRunner",
          "reading the GPU's compute capability");
  cuda_ok(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "AttentionRunner",
          "reading the GPU's compute capability");
  check(major == 9, "cuda attention: the wgmma ", what, " (", variable, "=wgmma) runs on ",
        "Hopper GPUs (sm_90) only, and GPU ", dev, " is sm_", major, minor, ": unset ", variable,
        " (or set it to mma)");
  // binaryVersion reads 90 for a plain "90" build too, whose wgmma calls are traps.
  check(built >= 90 && build_has_wgmma(), "cuda attention: the wgmma ", what, " needs code built ",
        "for sm_90a, and this build has none for GPU ", dev, " (it runs its sm_", built, " code; ",
        "built for ", build_cuda_architectures(),
        "): build with CMAKE_CUDA_ARCHITECTURES including 90a, or unset ", variable);
}

}  // namespace

AttentionRunner::AttentionRunner(void* stream, std::optional<attn::Tiling> tiling,
                                 std::optional<attn::ForwardKernel> forward,
                                 std::optional<attn::BackwardKernel> backward,
                                 std::optional<attn::ItemOrder> order)
    : impl_(std::make_unique<Impl>()) {
  impl_->stream = static_cast<cudaStream_t>(stream);
  impl_->item_order = order ? *order : order_from_environment();
  if (tiling) {
    impl_->tiling = *tiling;
  } else {
    // The current device's per-block limit picks the chunks (plan.h, tiling_for).
    int dev = 0, optin = 0;
    cuda_ok(cudaGetDevice(&dev), "AttentionRunner", "cudaGetDevice");
    cuda_ok(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
            "AttentionRunner", "reading the GPU's shared memory per block");
    const std::string gpu = "GPU " + std::to_string(dev);
    impl_->tiling = attn::tiling_for(size_t(optin), gpu.c_str());
  }
  impl_->forward_kernel =
      forward ? *forward
              : (wants_wgmma("SPEEDRUN_ATTENTION_FORWARD", "forward") ? attn::ForwardKernel::kWgmma
                                                                       : attn::ForwardKernel::kMma);
  impl_->backward_kernel =
      backward ? *backward
               : (wants_wgmma("SPEEDRUN_ATTENTION_BACKWARD", "backward") ? attn::BackwardKernel::kWgmma
                                                                          : attn::BackwardKernel::kMma);
  int dev = 0;
  if (impl_->forward_kernel == attn::ForwardKernel::kWgmma ||
      impl_->backward_kernel == attn::BackwardKernel::kWgmma)
    cuda_ok(cudaGetDevice(&dev), "AttentionRunner", "cudaGetDevice");
  if (impl_->forward_kernel == attn::ForwardKernel::kWgmma)
    check_wgmma_runs(dev, "forward", "SPEEDRUN_ATTENTION_FORWARD", attn::forward_wgmma_binary_version());
  if (impl_->backward_kernel == attn::BackwardKernel::kWgmma)
    check_wgmma_runs(dev, "backward", "SPEEDRUN_ATTENTION_BACKWARD", attn::backward_wgmma_binary_version());
  for (cudaEvent_t& e : impl_->copied)
    cuda_ok(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "AttentionRunner",
            "cudaEventCreate");
}

AttentionRunner::~AttentionRunner() {
  Impl& m = *impl_;
  cudaStreamSynchronize(m.stream);  // queued kernels and copies still use the buffers
  for (int s = 0; s < 2; ++s) {
    if (m.copied[s]) cudaEventDestroy(m.copied[s]);
    if (m.pinned[s]) cudaFreeHost(m.pinned[s]);
  }
  if (m.plan_dev) cudaFree(m.plan_dev);
  if (m.delta) cudaFree(m.delta);
}

void AttentionRunner::forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                              const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                              double scale) {
  const char* op = "cuda attention_forward";
  const Shapes s = check_shapes(op, q, masks, H);
  check_tensor(op, "q", q, DType::BF16, s.N, s.C);
  check_tensor(op, "k", k, DType::BF16, s.N, s.C);
  check_tensor(op, "v", v, DType::BF16, s.N, s.C);
  check_tensor(op, "out", out, DType::BF16, s.N, s.C);
  check_stats(op, "lse", lse, s);
  check(out.data != q.data && out.data != k.data && out.data != v.data, op,
        ": out must not alias q, k or v");
  Impl& m = *impl_;
  const PlanView& plan = m.ensure_plan(op, masks);
  m.check_grid(op, plan.n_q_items, H);
  const int di = s.D == 64 ? 0 : 1;
  const bool wgmma = m.forward_kernel == attn::ForwardKernel::kWgmma;
  bool& prepared = wgmma ? m.prepared_wgmma[di] : m.prepared_fwd[di];
  if (!prepared) {
    cuda_ok(wgmma ? attn::prepare_forward_wgmma(int(s.D)) : attn::prepare_forward(int(s.D), m.tiling),
            op, "cudaFuncSetAttribute");
    prepared = true;
  }
  attn::ForwardArgs a{};
  a.plan = plan;
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  a.out = out.data;
  a.lse = static_cast<float*>(lse.data);
  a.ld = s.C;
  a.H = int(H);
  a.scale = float(scale);
  cuda_ok(wgmma ? attn::launch_forward_wgmma(int(s.D), a, m.stream)
                : attn::launch_forward(int(s.D), m.tiling, a, m.stream),
          op, "kernel launch");
}

void AttentionRunner::backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout,
                               const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& out, const Tensor& lse,
                               const std::vector<BlockMask>& masks, int64_t H, double scale) {
  const char* op = "cuda attention_backward";
  const Shapes s = check_shapes(op, q, masks, H);
  check_tensor(op, "q", q, DType::BF16, s.N, s.C);
  check_tensor(op, "k", k, DType::BF16, s.N, s.C);
  check_tensor(op, "v", v, DType::BF16, s.N, s.C);
  check_tensor(op, "out", out, DType::BF16, s.N, s.C);
  check_tensor(op, "dout", dout, DType::BF16, s.N, s.C);
  check_tensor(op, "dq", dq, DType::BF16, s.N, s.C);
  check_tensor(op, "dk", dk, DType::BF16, s.N, s.C);
  check_tensor(op, "dv", dv, DType::BF16, s.N, s.C);
  check_stats(op, "lse", lse, s);
  for (const void* in : {dout.data, q.data, k.data, v.data, out.data, lse.data})
    check(in != dq.data && in != dk.data && in != dv.data, op,
          ": dq, dk, dv must not alias the inputs");
  Impl& m = *impl_;
  const PlanView& plan = m.ensure_plan(op, masks);
  m.check_grid(op, plan.n_q_items, H);
  const size_t delta_bytes = size_t(s.B * s.H * s.T) * sizeof(float);
  m.grow_device(m.delta, m.delta_cap, delta_bytes, delta_bytes, op, "cudaMalloc (backward scratch)");
  const int di = s.D == 64 ? 0 : 1;
  const bool wgmma = m.backward_kernel == attn::BackwardKernel::kWgmma;
  bool& prepared = wgmma ? m.prepared_bwd_wgmma[di] : m.prepared_bwd[di];
  if (!prepared) {
    cuda_ok(wgmma ? attn::prepare_backward_wgmma(int(s.D)) : attn::prepare_backward(int(s.D), m.tiling),
            op, "cudaFuncSetAttribute");
    prepared = true;
  }
  attn::BackwardArgs a{};
  a.plan = plan;
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  a.out = out.data;
  a.dout = dout.data;
  a.lse = static_cast<const float*>(lse.data);
  a.delta = static_cast<float*>(m.delta);
  a.dq = dq.data;
  a.dk = dk.data;
  a.dv = dv.data;
  a.ld = s.C;
  a.N = s.N;
  a.H = int(H);
  a.scale = float(scale);
  cuda_ok(wgmma ? attn::launch_backward_wgmma(int(s.D), a, m.stream)
                : attn::launch_backward(int(s.D), m.tiling, a, m.stream),
          op, "kernel launch");
}

attn::Tiling AttentionRunner::tiling() const { return impl_->tiling; }

attn::ForwardKernel AttentionRunner::forward_kernel() const { return impl_->forward_kernel; }

attn::BackwardKernel AttentionRunner::backward_kernel() const { return impl_->backward_kernel; }
attn::ItemOrder AttentionRunner::item_order() const { return impl_->item_order; }

size_t AttentionRunner::device_bytes() const { return impl_->plan_cap + impl_->delta_cap; }

}  // namespace speedrun::cuda
