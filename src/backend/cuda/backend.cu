// The CUDA backend's class: construction on one GPU, the precision policy, memory
// (allocation with peak tracking, uploads through a pinned staging ring, downloads,
// copies), launch checks, scratch memory, and attention forwarded to the flash-attention
// runner (attention/attention.h).
#include <algorithm>
#include <cstring>
#include <string>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/plan.h"
#include "core/error.h"
#include "core/stall_watchdog.h"

namespace speedrun::cuda {

namespace {
// The pinned ring for small uploads (tokens, targets, decode rows): a micro-batch's
// tokens (64K x 4 bytes) fit one slot, more go a slot at a time; a slot is reused once the
// copy that last read it has run, so the host may refill its own buffer as soon as upload()
// returns.
constexpr int kStagingSlots = 8;
constexpr size_t kStagingSlotBytes = size_t(1) << 20;
// Uploads up to half the ring go through it (a micro-batch's tokens and targets, up to 512K
// each); larger ones (weights) wait for their copy instead.
constexpr size_t kStagedUploadBytes = kStagingSlots / 2 * kStagingSlotBytes;
}  // namespace

std::string CudaBackend::numerics() const {
  cudaDeviceProp p{};
  check_cuda(cudaGetDeviceProperties(&p, gpu_), "numerics", "reading the GPU's properties");
  std::string s =
      "cuda, " + std::string(p.name) + ", sm_" + std::to_string(p.major) + std::to_string(p.minor);
  // The attention kernels sum in their own orders (SPEEDRUN_ATTENTION_FORWARD / _BACKWARD);
  // the default, mma.sync for both, says nothing, as before they could be chosen.
  const bool fwd = attention_->forward_kernel() == attn::ForwardKernel::kWgmma;
  const bool bwd = attention_->backward_kernel() == attn::BackwardKernel::kWgmma;
  if (fwd && bwd)
    s += ", wgmma attention forward and backward";
  else if (fwd || bwd)
    s += fwd ? ", wgmma attention forward" : ", wgmma attention backward";
  return s;
}

CudaBackend::CudaBackend(int gpu, const std::string& gemm_algos)
    : gpu_(gpu), sync_each_launch_(sync_after_each_op()), gemm_tune_given_(gemm_tune_setting()) {
  gemm_tune_ = gemm_tune_given_.value_or(1);
  const std::string dev = "GPU " + std::to_string(gpu);
  check_cuda(cudaSetDevice(gpu), "init", ("cudaSetDevice(" + std::to_string(gpu) + ")").c_str());
  const std::string unsupported = gpu_problem(gpu);
  check(unsupported.empty(), "--device cuda: ", unsupported);
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "init",
             ("creating a stream on " + dev).c_str());
  try {
    check_cublas(cublasLtCreate(&lt_), "init", ("cublasLtCreate on " + dev).c_str());
    gemm_workspace_ = device_alloc(kGemmWorkspaceBytes, "the cuBLASLt workspace");
    open_gemm_record(gemm_algos);
    staging_.resize(kStagingSlots);
    for (StagingSlot& s : staging_) {
      check_cuda(cudaHostAlloc(&s.host, kStagingSlotBytes, cudaHostAllocDefault), "init",
                 "allocating pinned staging memory");
      check_cuda(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "init",
                 "creating a staging event");
    }
    attention_ = std::make_unique<AttentionRunner>(static_cast<void*>(stream_));
  } catch (...) {
    teardown();
    throw;
  }
}

CudaBackend::~CudaBackend() { teardown(); }

void CudaBackend::teardown() noexcept {
  // Nothing here may throw: errors are ignored, the process is ending or unwinding.
  attention_.reset();
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [key, e] : gemms_) {
    if (e.a) cublasLtMatrixLayoutDestroy(e.a);
    if (e.b) cublasLtMatrixLayoutDestroy(e.b);
    if (e.c) cublasLtMatrixLayoutDestroy(e.c);
    if (e.desc) cublasLtMatmulDescDestroy(e.desc);
  }
  gemms_.clear();
  for (Scratch* s : {&partials_, &sort_, &ns_, &decode_rows_, &decode_scores_, &rotary_freq_}) {
    if (s->ptr) cudaFree(s->ptr);
    *s = Scratch{};
  }
  if (gemm_workspace_) cudaFree(gemm_workspace_);
  gemm_workspace_ = nullptr;
  for (StagingSlot& s : staging_) {
    if (s.done) cudaEventDestroy(s.done);
    if (s.host) cudaFreeHost(s.host);
  }
  staging_.clear();
  if (lt_) cublasLtDestroy(lt_);
  lt_ = nullptr;
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
}

void CudaBackend::check_precision(const Precision& p) const {
  check(p == named_precision(PrecisionChoice::BF16), "cuda backend: precision ", p.str(),
        " is not supported; use --dtype bf16 or auto, or --device cpu");
}

// ---- launches and scratch --------------------------------------------------------------------

void CudaBackend::launched(const char* op, const char* kernel) {
  const std::string what = std::string("kernel ") + kernel;
  check_cuda(cudaGetLastError(), op, ("launching " + what).c_str());
  if (sync_each_launch_) {
    // A kernel that never ends is named by the run's watchdog, where there is one.
    const auto w = StallWatchdog::watch_process_wait("cuda " + std::string(op) + ": " + what +
                                                     " (SPEEDRUN_CUDA_SYNC)");
    check_cuda(cudaStreamSynchronize(stream_), op, (what + " (SPEEDRUN_CUDA_SYNC)").c_str());
  }
}

void* CudaBackend::scratch(Scratch& s, size_t bytes, const char* what) {
  if (s.bytes >= bytes && s.ptr) return s.ptr;
  if (s.ptr) device_free(s.ptr);
  s = Scratch{};
  s.ptr = device_alloc(bytes, what);
  s.bytes = bytes;
  return s.ptr;
}

// ---- memory ----------------------------------------------------------------------------

void* CudaBackend::device_alloc(size_t bytes, const std::string& what) {
  const size_t n = bytes < 256 ? 256 : (bytes + 255) / 256 * 256;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, n);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(oom_message(what, bytes, free_b, total_b, held_, gpu_));
  }
  check_cuda(e, "allocate", ("cudaMalloc of " + format_bytes(double(bytes)) + " for " + what).c_str());
  const cudaError_t z = cudaMemsetAsync(p, 0, n, stream_);
  if (z != cudaSuccess) {
    // p is not yet tracked in sizes_: free it here, or nothing ever will.
    cudaFree(p);
    check_cuda(z, "allocate", "zero-filling new memory");
  }
  sizes_[p] = n;
  held_ += n;
  if (held_ > peak_) peak_ = held_;
  return p;
}

void CudaBackend::device_free(void* p) {
  if (p == nullptr) return;
  // Work still queued may read this memory: let it finish first.
  check_cuda(cudaStreamSynchronize(stream_), "release", "waiting for queued work");
  const auto it = sizes_.find(p);
  check(it != sizes_.end(), "cuda release: ", p, " was not allocated by this backend");
  held_ -= it->second;
  sizes_.erase(it);
  check_cuda(cudaFree(p), "release", "cudaFree");
}

void* CudaBackend::allocate(size_t bytes) { return device_alloc(bytes, "tensors"); }

void CudaBackend::release(void* p) { device_free(p); }

void CudaBackend::upload_bytes(void* dst, const void* host, size_t bytes, const char* op) {
  if (bytes == 0) return;
  if (bytes <= kStagedUploadBytes) {
    // Through the ring a slot at a time: a micro-batch of more tokens than one slot holds
    // (over 256K) waits only for the slots' earlier copies, never for the queued step.
    auto* d = static_cast<uint8_t*>(dst);
    const auto* h = static_cast<const uint8_t*>(host);
    for (size_t at = 0; at < bytes; at += kStagingSlotBytes) {
      const size_t n = std::min(kStagingSlotBytes, bytes - at);
      StagingSlot& s = staging_[next_slot_];
      next_slot_ = (next_slot_ + 1) % staging_.size();
      check_cuda(cudaEventSynchronize(s.done), op, "waiting for a staging buffer");
      std::memcpy(s.host, h + at, n);
      check_cuda(cudaMemcpyAsync(d + at, s.host, n, cudaMemcpyHostToDevice, stream_), op,
                 "copying to the GPU");
      check_cuda(cudaEventRecord(s.done, stream_), op, "recording a staging event");
    }
  } else {
    // Large uploads (weights, checkpoints) come from pageable memory: copy and wait, so the
    // host buffer is free to change when this returns.
    check_cuda(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_), op,
               "copying to the GPU");
    check_cuda(cudaStreamSynchronize(stream_), op, "waiting for the copy to the GPU");
  }
  if (sync_each_launch_) check_cuda(cudaStreamSynchronize(stream_), op, "copy (SPEEDRUN_CUDA_SYNC)");
}

void CudaBackend::upload(Tensor dst, const void* host) {
  check(dst.device == Device::CUDA && !dst.empty(), "cuda upload: the destination ",
        dst.shape_str(), " is not a GPU tensor");
  upload_bytes(dst.data, host, dst.bytes(), "upload");
}

void CudaBackend::download(void* host, const Tensor& src) {
  check(src.device == Device::CUDA && !src.empty(), "cuda download: the source ",
        src.shape_str(), " is not a GPU tensor");
  if (src.bytes() == 0) return;
  check_cuda(cudaMemcpyAsync(host, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_),
             "download", "copying from the GPU");
  check_cuda(cudaStreamSynchronize(stream_), "download", "waiting for the copy from the GPU");
}

void CudaBackend::copy(Tensor dst, const Tensor& src) {
  check(dst.dtype == src.dtype, "cuda copy: dst is ", dtype_name(dst.dtype), " but src is ",
        dtype_name(src.dtype), " (convert() changes dtypes)");
  need("copy", "dst", dst, src.dtype);
  need("copy", "src", src, src.dtype);
  need_numel("copy", "dst", dst, "src", src);
  if (dst.data == src.data || dst.bytes() == 0) return;
  check_cuda(cudaMemcpyAsync(dst.data, src.data, dst.bytes(), cudaMemcpyDeviceToDevice, stream_),
             "copy", "cudaMemcpyAsync");
  if (sync_each_launch_) check_cuda(cudaStreamSynchronize(stream_), "copy", "copy (SPEEDRUN_CUDA_SYNC)");
}

void CudaBackend::synchronize() {
  check_cuda(cudaStreamSynchronize(stream_), "synchronize", "waiting for the GPU");
}

// ---- attention: the flash-attention runner ---------------------------------------------------

void CudaBackend::attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const std::vector<BlockMask>& masks,
                                    int64_t H, double scale) {
  const char* op = "attention_forward";
  need(op, "out", out, DType::BF16);
  need(op, "lse", lse, DType::F32);
  need(op, "q", q, DType::BF16);
  need(op, "k", k, DType::BF16);
  need(op, "v", v, DType::BF16);
  attention_->forward(out, lse, q, k, v, masks, H, scale);
  if (sync_each_launch_) launched(op, "flash attention forward");
}

void CudaBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout,
                                     const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse,
                                     const std::vector<BlockMask>& masks, int64_t H,
                                     double scale) {
  const char* op = "attention_backward";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"dq", &dq}, {"dk", &dk},
                                {"dv", &dv}, {"dout", &dout}, {"q", &q}, {"k", &k}, {"v", &v},
                                {"out", &out}})
    need(op, name, *t, DType::BF16);
  need(op, "lse", lse, DType::F32);
  attention_->backward(dq, dk, dv, dout, q, k, v, out, lse, masks, H, scale);
  if (sync_each_launch_) launched(op, "flash attention backward");
}

// ---- diagnostics ----------------------------------------------------------------------------

GemmCacheInfo CudaBackend::gemm_cache_info() const {
  GemmCacheInfo i;
  i.entries = gemms_.size();
  i.lookups = gemm_lookups_;
  i.misses = gemm_misses_;
  i.last_algo = last_algo_;
  i.tuned = gemm_tuned_;
  i.retuned = gemm_retuned_;
  i.tune_ms = gemm_tune_ms_;
  i.tune = gemm_tune_;
  i.record = gemm_record_path_;
  i.record_read = gemm_record_read_;
  i.record_entries = gemm_record_.entries.size();
  i.recorded = gemm_recorded_;
  return i;
}

GemmCacheInfo gemm_cache_info(const Backend& be) {
  const auto* c = dynamic_cast<const CudaBackend*>(&be);
  check(c != nullptr, "gemm_cache_info: backend '", be.name(), "' is not the CUDA backend");
  return c->gemm_cache_info();
}

}  // namespace speedrun::cuda
