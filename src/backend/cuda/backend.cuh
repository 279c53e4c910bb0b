// The CUDA backend's class, shared by the family files of this folder (backend.cu: the
// class, memory and conversions; matmul.cu; embedding.cu; rms_norm.cu; mix_norm.cu;
// rotary.cu; qkv.cu; relu_squared.cu; scaled_sum.cu; cross_entropy.cu; adam.cu; muon.cu; decode.cu), each of
// which defines its ops' member functions and kernels.
//
// Precision: the record's bf16 policy only (core/precision.h): compute BF16, master, grad
// and stats F32. Every op checks its operands' dtypes against backend.h's classes.
// Streams: one cudaStream_t per backend, on the GPU made current by the constructor; every
// op is issued on it, in order. Call a backend from threads whose current device is its
// GPU (the thread that built it, as every command does). Nothing waits
// for the device but download(), synchronize(), the host helpers and the rare scratch
// growth (cudaFree synchronises).
// Errors: every CUDA and cuBLASLt call is checked (check.h); every launch too, and with
// SPEEDRUN_CUDA_SYNC=1 in the environment each launch is followed by a synchronisation so
// that an asynchronous failure names its kernel.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention/attention.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/plan.h"
#include "backend/cuda/gemm_plan.h"
#include "backend/cuda/gemm_record.h"

namespace speedrun::cuda {

// The one cuBLASLt workspace every GEMM shares (they all run on the backend's stream).
inline constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;

// Device memory the backend keeps for one purpose (reduction partials, sort scratch,
// Newton-Schulz work matrices), grown on demand and freed with the backend.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
};

// One row-major GEMM call (gemm_plan.h): D = alpha op(A) op(B) + beta Cin; Cin and D share
// a layout; Cin may be D itself, and is not read when beta == 0.
struct GemmCall {
  GemmKey key;
  float alpha = 1, beta = 0;
  const void* A = nullptr;
  const void* B = nullptr;
  const void* Cin = nullptr;
  void* D = nullptr;
};

class CudaBackend final : public Backend {
 public:
  // gemm_algos: the GEMM algorithm record this backend reads and extends
  // (gemm_record.h), or "" for none.
  explicit CudaBackend(int gpu, const std::string& gemm_algos = "");
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  // "cuda, NVIDIA H200, sm_90": another GPU model may choose other GEMM algorithms.
  std::string numerics() const override;
  Device device() const override { return Device::CUDA; }
  Precision default_precision() const override { return named_precision(PrecisionChoice::BF16); }
  void check_precision(const Precision& p) const override;

  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void upload(Tensor dst, const void* host) override;
  void download(void* host, const Tensor& src) override;
  void copy(Tensor dst, const Tensor& src) override;
  void fill(Tensor t, double value) override;
  void convert(Tensor dst, const Tensor& src) override;
  void sum_into(Tensor acc, const Tensor& t) override;
  void synchronize() override;
  // The backend's allocations at their peak, plus the attention runner's work lists and
  // backward scratch (allocated apart, sized at first use, never shrinking).
  size_t peak_bytes() const override {
    return peak_ + (attention_ ? attention_->device_bytes() : 0);
  }
  void* stream() const override { return stream_; }
  int device_index() const override { return gpu_; }
  // One 64K-token sequence per micro-batch: the record's per-GPU batch.
  int64_t preferred_micro_batch_tokens() const override { return 65536; }
  int64_t head_chunk_logits() const override { return kHeadChunkLogits; }
  // The kernels walk 128-token tiles (attention/tile_math.h) and skip, per warp, the
  // 16-row chunks of a partial tile that see nothing, so a small window costs them less
  // than whole tiles would.
  int64_t attention_tile(int64_t) const override { return attn::kTile; }

  void matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
              bool accumulate) override;
  void matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                  const Tensor& R) override;
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& wte) override;
  void embedding_backward(Tensor dwte, const Tensor& tokens, const Tensor& dout) override;
  void rms_norm_forward(Tensor y, Tensor rstd, const Tensor& x, double eps) override;
  void rms_norm_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                         bool accumulate) override;
  void mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& x, const Coef& a,
                        const Tensor& y, const Coef& b, double eps) override;
  void mix_norm_backward(Tensor dx, Tensor dy, const Tensor& dres, const Tensor& dn,
                         const Tensor& xmix, const Tensor& rstd, const Tensor& x, const Coef& a,
                         const Tensor& y, const Coef& b, const Tensor& dadd) override;
  void skip_mix_norm_forward(Tensor xmix, Tensor n, Tensor rstd, const Tensor& h,
                             const Tensor& skip, const Coef& c, const Coef& a, const Tensor& y,
                             const Coef& b, double eps) override;
  void skip_mix_norm_backward(Tensor dx, Tensor dskip, Tensor dy, const Tensor& dres,
                              const Tensor& dn, const Tensor& xmix, const Tensor& rstd,
                              const Tensor& h, const Tensor& skip, const Coef& c, const Coef& a,
                              const Tensor& y, const Coef& b) override;
  void rotary_tables(Tensor cos, Tensor sin, double base) override;
  void qkv_forward(Tensor q, Tensor k, Tensor v, Tensor rstd, const Tensor& qkv,
                   const Tensor& v1src, const Coef& a, const Coef& b, const Tensor& cos,
                   const Tensor& sin, int64_t T, int64_t H, double eps) override;
  void qkv_backward(Tensor dqkv, Tensor dv1, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                    const Tensor& qkv, const Tensor& rstd, const Tensor& v1src, const Coef& a,
                    const Coef& b, const Tensor& cos, const Tensor& sin, int64_t T,
                    int64_t H) override;
  void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const std::vector<BlockMask>& masks, int64_t H,
                         double scale) override;
  void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                          const std::vector<BlockMask>& masks, int64_t H, double scale) override;
  void rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) override;
  void attention_decode(Tensor out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const std::vector<int32_t>& rows, int64_t H, double scale) override;
  void relu_squared_forward(Tensor y, const Tensor& x) override;
  void relu_squared_backward(Tensor dx, const Tensor& dy, const Tensor& y) override;
  void scaled_sum_forward(Tensor out, const Tensor& x, const Coef& a, const Tensor& y,
                          const Coef& b) override;
  void scaled_sum_backward(Tensor dx, bool acc_x, Tensor dy, bool acc_y, const Tensor& dout,
                           const Tensor& x, const Coef& a, const Tensor& y,
                           const Coef& b) override;
  void softcap_cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double cap,
                             double grad_scale, bool backward) override;
  void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, const AdamArgs& a) override;
  void muon_momentum(Tensor out, Tensor buf, const Tensor& g, double mu) override;
  void newton_schulz(Tensor X, const Tensor& G, int steps, bool bf16_round) override;
  bool newton_schulz_is_bf16() const override { return true; }  // muon.cu: bf16 throughout
  void axpy(Tensor y, const Tensor& x, double alpha) override;
  void adam_steps(const std::vector<AdamTensor>& t, const AdamArgs& a) override;
  void muon_apply(const std::vector<MuonApply>& u) override;
  void muon_stack(Tensor X, Tensor input, const std::vector<Tensor>& bufs,
                  const std::vector<Tensor>& grads, double mu, int steps,
                  bool bf16_round) override;
  bool muon_stack_needs_input() const override { return false; }  // muon.cu: fused load
  void muon_momenta(const std::vector<Tensor>& bufs, const std::vector<Tensor>& grads,
                    double mu) override;

  // Diagnostics for tests (cuda_backend.h).
  GemmCacheInfo gemm_cache_info() const;
  int gpu() const { return gpu_; }

 private:
  // Frees everything the constructor made (also when it throws halfway).
  void teardown() noexcept;

  // ---- shared by the family files ----
  // Checks the last launch of `kernel` for op `op`; under SPEEDRUN_CUDA_SYNC also waits for
  // it and checks its completion.
  void launched(const char* op, const char* kernel);
  // mix_norm.cu's two ops, with the U-net skip (skip and c given) or without (null); the
  // backward with a tensor added to dx (dadd not empty, no skip) or, dskip empty, the
  // skip's own gradient (skip is h).
  void mix_norm_forward_on(const char* op, Tensor xmix, Tensor n, Tensor rstd, const Tensor& x,
                           const Tensor* skip, const Coef* c, const Coef& a, const Tensor& y,
                           const Coef& b, double eps);
  void mix_norm_backward_on(const char* op, Tensor dx, const Tensor* dskip, Tensor dy,
                            const Tensor& dres, const Tensor& dn, const Tensor& xmix,
                            const Tensor& rstd, const Tensor& x, const Tensor* skip,
                            const Coef* c, const Coef& a, const Tensor& y, const Coef& b,
                            const Tensor& dadd);
  // Newton-Schulz over a stack X [n, rows, cols] (F32 or BF16 out) whose bf16 work matrix and norm
  // partials `load` fills in the plan's layout (muon.cu: from a G stack, or from the
  // momentum), `op` naming it. `aligned`: every F32 matrix `load` reads starts 16-byte
  // aligned (X's are checked here).
  using NsLoad = std::function<void(const NewtonSchulzPlan&, uint16_t* x, double* partial)>;
  void need_update(const char* op, const Tensor& X);
  void newton_schulz_stack(const char* op, Tensor X, int64_t n, int64_t rows, int64_t cols,
                           int steps, bool aligned, const NsLoad& load);
  // Device memory for a purpose, grown to at least `bytes` (contents not kept).
  void* scratch(Scratch& s, size_t bytes, const char* what);
  // cudaMalloc + zero fill, tracked in peak_bytes; `what` names it in an out-of-memory error.
  void* device_alloc(size_t bytes, const std::string& what);
  void device_free(void* p);
  // Copies host bytes to the device on the stream; the host buffer may change as soon as
  // this returns (small copies go through the pinned staging ring).
  void upload_bytes(void* dst, const void* host, size_t bytes, const char* op);
  // Runs one GEMM (matmul.cu), choosing and caching its descriptors and algorithm once.
  void gemm(const GemmCall& call, const char* op);
  // The fastest of `n` candidate algorithms for this call's problem, timed on its operands
  // (matmul.cu), its time per run in *ms and the first candidate's in *first_ms (0 if it did
  // not run); the call's output is left unspecified (the caller runs the GEMM after).
  int time_candidates(const GemmCall& call, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                      cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                      const cublasLtMatmulHeuristicResult_t* results, int n, const char* op,
                      double* ms, double* first_ms);
  // A new problem's algorithm: the heuristic's first, or with SPEEDRUN_GEMM_TUNE the
  // fastest of its candidates, which the record (where there is one) then holds.
  cublasLtMatmulAlgo_t choose_algo(const GemmCall& call, cublasLtMatmulDesc_t desc,
                                   cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                   cublasLtMatrixLayout_t c, const char* op);
  // Opens the GEMM algorithm record at `path` (matmul.cu): reads it where it exists,
  // refusing one made on another GPU or cuBLASLt; without SPEEDRUN_GEMM_TUNE set, new
  // problems are timed as the run that made it timed them.
  void open_gemm_record(const std::string& path);
  // The algorithm the record holds for this problem, checked against it by cuBLASLt.
  cublasLtMatmulAlgo_t recorded_algo(const GemmRecordEntry& r, cublasLtMatmulDesc_t desc,
                                     cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                     cublasLtMatrixLayout_t c, const char* op);
  // Adds a timed choice to the record and rewrites its file; a file that cannot be written
  // is reported once on stderr and the run goes on (the record only repeats choices).
  void record_gemm(const GemmRecordEntry& e);
  // matmul and matmul_add: C = op(A) op(B) + Cin (beta 1) or + 0 (Cin null, beta 0).
  void product(const char* op, Tensor C, const Tensor& A, bool transA, const Tensor& B,
               bool transB, const Tensor* Cin);
  // Two-stage deterministic sum (math/reduce.h) of t's elements in double, added to acc.
  void reduce_into_f64(double* acc, const Tensor& t, const char* op);

  struct GemmEntry {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  struct StagingSlot {
    void* host = nullptr;  // pinned
    cudaEvent_t done = nullptr;
  };

  int gpu_ = 0;
  bool sync_each_launch_ = false;
  std::optional<int> gemm_tune_given_;  // SPEEDRUN_GEMM_TUNE, where set
  int gemm_tune_ = 1;  // candidate algorithms timed per new problem (given, the record's, or 1)
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* gemm_workspace_ = nullptr;
  std::unordered_map<GemmKey, GemmEntry, GemmKeyHash> gemms_;
  uint64_t gemm_lookups_ = 0, gemm_misses_ = 0;
  uint64_t last_algo_ = 0;
  uint64_t gemm_tuned_ = 0, gemm_retuned_ = 0;  // problems timed; of them won by a later one
  double gemm_tune_ms_ = 0;                      // wall time spent timing candidates
  std::string gemm_record_path_;                 // "" without a record
  GemmRecord gemm_record_;                       // its choices, read and made here
  size_t gemm_record_read_ = 0;                  // entries the file held at the start
  uint64_t gemm_recorded_ = 0;                   // problems that took a recorded algorithm
  bool gemm_record_unwritable_ = false;          // reported once
  std::vector<StagingSlot> staging_;
  size_t next_slot_ = 0;
  std::unordered_map<void*, size_t> sizes_;
  size_t held_ = 0, peak_ = 0;
  Scratch partials_, sort_, ns_, decode_rows_, decode_scores_, rotary_freq_;
  std::unique_ptr<AttentionRunner> attention_;
  // Bytes of shared memory a head row's block may take (cross_entropy.cu), -1 until asked.
  int64_t head_row_smem_ = -1;
  bool narrow_vocab_noted_ = false;  // softcap_cross_entropy's note on a vocabulary not 8k
  // The shared memory the cross entropy's backward keeps a row of V th values in, or 0
  // where a block cannot hold them (cross_entropy.cu).
  size_t head_row_keep_bytes(int64_t V);
};

}  // namespace speedrun::cuda
