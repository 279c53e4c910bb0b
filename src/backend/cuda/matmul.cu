// matmul and matmul_add through cuBLASLt: bf16 A and B, fp32 accumulation (split-K partial
// sums too: allowed_reductions), C in bf16 (activations) or F32 (weight gradients,
// accumulate: beta 1); matmul_add reads the residual as cuBLASLt's C and writes our C as
// its D. Row-major problems are mapped onto cuBLASLt's column-major ones by gemm_plan.h.
// The descriptors and the heuristic's algorithm are made once per GemmKey and cached; one
// 32 MiB workspace serves every call (all on the backend's one stream).
// With SPEEDRUN_GEMM_TUNE=N the backend asks the heuristic for N candidates instead of one
// and times each on the problem's first call (on its own operands), keeping the fastest.
// The heuristic ranks algorithms by a model, not by a run on this GPU; what timing them is
// worth on the record's shapes is for a GPU run to say (bench/cuda_check.sh's gemm-tune
// step). Algorithms may sum in different orders, so a tuned run repeats its bits only where
// it runs every GEMM with the algorithm it chose before: the GEMM algorithm record
// (gemm_record.h, SPEEDRUN_GEMM_ALGOS; a training run keeps one in its folder) holds each
// timed choice, and a problem found there takes its algorithm untimed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

// The split-K reductions a GEMM may use. A bf16 output's partial sums stay in fp32 (the
// compute type) and are rounded once (docs/CUDA.md: fp32 accumulation); cuBLASLt's
// default preference also allows reductions in the output's type (INPLACE, OUTPUT_TYPE),
// which round each partial sum to bf16, and its heuristic picks them for some shapes. An
// fp32 output's partial sums are fp32 whichever scheme runs. (NONE, one pass over K, is 0:
// always allowed.)
uint32_t allowed_reductions(const GemmKey& k) {
  return k.c == DType::BF16 ? uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
                            : uint32_t(CUBLASLT_REDUCTION_SCHEME_MASK);
}

cudaDataType_t lt_type(DType t) {
  switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    default: fail("cuda matmul: dtype ", dtype_name(t), " is not supported (BF16 or F32)");
  }
}

uint64_t fingerprint(const cublasLtMatmulAlgo_t& a) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t w : a.data) h = (h ^ w) * 1099511628211ull;
  return h;
}

// Destroys a half-built cache entry when building it fails.
struct EntryGuard {
  cublasLtMatmulDesc_t* desc;
  cublasLtMatrixLayout_t* layouts[3];
  bool armed = true;
  ~EntryGuard() {
    if (!armed) return;
    for (auto* l : layouts)
      if (*l) cublasLtMatrixLayoutDestroy(*l), *l = nullptr;
    if (*desc) cublasLtMatmulDescDestroy(*desc), *desc = nullptr;
  }
};

void make_layout(cublasLtMatrixLayout_t* l, DType t, const LtMatrix& m, int64_t batch,
                 int64_t stride, const char* op, const char* which) {
  check_cublas(cublasLtMatrixLayoutCreate(l, lt_type(t), m.rows, m.cols, m.ld), op, which);
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    check_cublas(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                  sizeof count),
                 op, which);
    check_cublas(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &stride, sizeof stride),
                 op, which);
  }
}

}  // namespace

void CudaBackend::gemm(const GemmCall& call, const char* op) {
  const GemmKey& key = call.key;
  ++gemm_lookups_;
  auto it = gemms_.find(key);
  if (it == gemms_.end()) {
    ++gemm_misses_;
    GemmEntry e;
    EntryGuard guard{&e.desc, {&e.a, &e.b, &e.c}};
    const LtGemm g = lt_gemm(key);
    check_cublas(cublasLtMatmulDescCreate(&e.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), op,
                 "creating a matmul descriptor");
    const cublasOperation_t ta = g.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = g.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_cublas(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
                 op, "setting TRANSA");
    check_cublas(cublasLtMatmulDescSetAttribute(e.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
                 op, "setting TRANSB");
    // cuBLASLt's A is our B and its B our A (gemm_plan.h).
    make_layout(&e.a, key.b, g.a, key.batch, g.stride_a, op, "layout of B");
    make_layout(&e.b, key.a, g.b, key.batch, g.stride_b, op, "layout of A");
    make_layout(&e.c, key.c, g.c, key.batch, g.stride_c, op, "layout of C");
    if (const GemmRecordEntry* r = gemm_record_.find(key)) {  // chosen before: untimed
      e.algo = recorded_algo(*r, e.desc, e.a, e.b, e.c, op);
      ++gemm_recorded_;
    } else {
      e.algo = choose_algo(call, e.desc, e.a, e.b, e.c, op);
    }
    guard.armed = false;
    it = gemms_.emplace(key, e).first;
  }
  const GemmEntry& e = it->second;
  const void* cin = call.beta != 0 ? call.Cin : call.D;
  check_cublas(cublasLtMatmul(lt_, e.desc, &call.alpha, call.B, e.a, call.A, e.b, &call.beta, cin,
                              e.c, call.D, e.c, &e.algo, gemm_workspace_, kGemmWorkspaceBytes,
                              stream_),
               op, ("cublasLtMatmul " + gemm_key_str(key)).c_str());
  last_algo_ = fingerprint(e.algo);
  if (sync_each_launch_) launched(op, "cublasLtMatmul");
}

cublasLtMatmulAlgo_t CudaBackend::choose_algo(const GemmCall& call, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, const char* op) {
  const GemmKey& key = call.key;
  cublasLtMatmulPreference_t pref = nullptr;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref), op, "creating a matmul preference");
  const size_t ws = kGemmWorkspaceBytes;
  const uint32_t al[4] = {key.alignB, key.alignA, key.alignC, key.alignC};
  const cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  for (int i = 0; i < 4 && st == CUBLAS_STATUS_SUCCESS; ++i)
    st = cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]);
  const uint32_t reductions = allowed_reductions(key);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                              &reductions, sizeof reductions);
  cublasLtMatmulHeuristicResult_t results[kMaxGemmTune] = {};
  int returned = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(lt_, desc, a, b, c, c, pref, gemm_tune_, results,
                                        &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  check_cublas(st, op, ("choosing an algorithm for " + gemm_key_str(key)).c_str());
  check(returned > 0, "cuda ", op, ": cuBLASLt has no algorithm for ", gemm_key_str(key));
  if (returned == 1) return results[0].algo;  // nothing to time, nothing to record
  double ms = 0, first_ms = 0;
  const int best = time_candidates(call, desc, a, b, c, results, returned, op, &ms, &first_ms);
  if (!gemm_record_path_.empty() && std::isfinite(ms)) {
    GemmRecordEntry r;
    r.key = key;
    std::copy(std::begin(results[best].algo.data), std::end(results[best].algo.data),
              r.algo.begin());
    r.ms = ms;
    r.candidates = returned;
    r.chosen = best;
    r.first_ms = first_ms;
    record_gemm(r);
  }
  return results[best].algo;
}

int CudaBackend::time_candidates(const GemmCall& call, cublasLtMatmulDesc_t desc,
                                 cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                 cublasLtMatrixLayout_t c,
                                 const cublasLtMatmulHeuristicResult_t* results, int n,
                                 const char* op, double* best_ms_per_run,
                                 double* first_ms_per_run) {
  constexpr int kReps = 3;  // timed runs per candidate, after one untimed
  const auto t0 = std::chrono::steady_clock::now();
  const GemmKey& key = call.key;
  // Where the GEMM accumulates in place (its C is its D), a candidate run into the real
  // output would add the product once more: the candidates write a scratch D instead.
  // Elsewhere they write the real D, which the GEMM itself writes again after them.
  const bool in_place = call.beta != 0 && call.Cin == call.D;
  struct Scope {
    CudaBackend& be;
    void* scratch = nullptr;
    cudaEvent_t ev[2] = {nullptr, nullptr};
    ~Scope() {
      for (cudaEvent_t e : ev)
        if (e) cudaEventDestroy(e);
      if (scratch) {
        try {
          be.device_free(scratch);
        } catch (...) {  // an error of the stream: the GEMM after reports it
        }
      }
    }
  } s{*this};
  void* d = call.D;
  if (in_place) {
    const int64_t elems = (key.batch - 1) * key.strideC + key.M * key.N;
    s.scratch = device_alloc(size_t(elems) * dtype_size(key.c),
                             "a GEMM's output while SPEEDRUN_GEMM_TUNE times its algorithms");
    d = s.scratch;
  }
  const void* cin = call.beta != 0 ? call.Cin : d;
  for (cudaEvent_t& e : s.ev) check_cuda(cudaEventCreate(&e), op, "creating a timing event");
  float best_ms = std::numeric_limits<float>::infinity();
  int best = 0;
  *first_ms_per_run = 0;
  for (int i = 0; i < n; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    auto run = [&] {
      return cublasLtMatmul(lt_, desc, &call.alpha, call.B, a, call.A, b, &call.beta, cin, c, d, c,
                            &results[i].algo, gemm_workspace_, kGemmWorkspaceBytes, stream_);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate this problem refuses
    check_cuda(cudaEventRecord(s.ev[0], stream_), op, "timing a GEMM algorithm");
    bool ok = true;
    for (int r = 0; r < kReps && ok; ++r) ok = run() == CUBLAS_STATUS_SUCCESS;
    check_cuda(cudaEventRecord(s.ev[1], stream_), op, "timing a GEMM algorithm");
    check_cuda(cudaEventSynchronize(s.ev[1]), op,
               ("running the candidate algorithms of " + gemm_key_str(key)).c_str());
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, s.ev[0], s.ev[1]), op, "timing a GEMM algorithm");
    if (ok && i == 0) *first_ms_per_run = double(ms) / kReps;
    // The heuristic's order breaks near-ties: a later candidate must be 1% faster.
    if (ok && ms < best_ms * 0.99f) {
      best_ms = ms;
      best = i;
    }
  }
  ++gemm_tuned_;
  if (best != 0) ++gemm_retuned_;
  gemm_tune_ms_ +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  *best_ms_per_run = double(best_ms) / kReps;  // infinite where no candidate ran
  return best;
}

void CudaBackend::open_gemm_record(const std::string& path) {
  if (path.empty()) return;
  cudaDeviceProp p{};
  check_cuda(cudaGetDeviceProperties(&p, gpu_), "init", "reading the GPU's properties");
  GemmRecordOrigin here;
  for (const char* ch = p.name; *ch; ++ch) here.gpu += (*ch == '\t' || *ch == '\n') ? ' ' : *ch;
  here.sm = 10 * p.major + p.minor;
  here.cublaslt = cublasLtGetVersion();
  here.sms = p.multiProcessorCount;
  GemmRecord r;
  if (read_gemm_record(path, r)) {
    const std::string why = gemm_record_mismatch(path, r.origin, here);
    check(why.empty(), why);
    gemm_record_read_ = r.entries.size();
    // A run resumed (or repeated) without SPEEDRUN_GEMM_TUNE times the problems it has not
    // met yet as the run that made the record did.
    if (!gemm_tune_given_) gemm_tune_ = std::clamp(r.tune, 1, kMaxGemmTune);
  }
  r.origin = here;
  r.tune = gemm_tune_;
  gemm_record_ = std::move(r);
  gemm_record_path_ = path;
}

cublasLtMatmulAlgo_t CudaBackend::recorded_algo(const GemmRecordEntry& r,
                                                cublasLtMatmulDesc_t desc,
                                                cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                cublasLtMatrixLayout_t c, const char* op) {
  cublasLtMatmulAlgo_t algo{};
  std::copy(r.algo.begin(), r.algo.end(), std::begin(algo.data));
  cublasLtMatmulHeuristicResult_t result{};
  const cublasStatus_t st = cublasLtMatmulAlgoCheck(lt_, desc, a, b, c, c, &algo, &result);
  check(st == CUBLAS_STATUS_SUCCESS && result.workspaceSize <= kGemmWorkspaceBytes, "cuda ", op,
        ": the GEMM algorithm record ", gemm_record_path_, " holds an algorithm for ",
        gemm_key_str(r.key), " that cuBLASLt does not run here (",
        st == CUBLAS_STATUS_SUCCESS ? "it needs " + std::to_string(result.workspaceSize) +
                                          " bytes of workspace"
                                    : std::string(cublasLtGetStatusName(st)),
        "): remove the file to time the GEMMs again");
  // A record written without the reduction rule, or edited, must not bring back a split-K
  // reduced in bf16.
  uint32_t scheme = 0;
  size_t written = 0;
  const cublasStatus_t rs = cublasLtMatmulAlgoConfigGetAttribute(
      &algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme, &written);
  check(rs == CUBLAS_STATUS_SUCCESS && (scheme & ~allowed_reductions(r.key)) == 0, "cuda ", op,
        ": the GEMM algorithm record ", gemm_record_path_, " holds an algorithm for ",
        gemm_key_str(r.key), " that ",
        rs == CUBLAS_STATUS_SUCCESS
            ? "adds its split-K partial sums in bf16 (reduction scheme " + std::to_string(scheme) +
                  "), where a bf16 output's are added in fp32"
            : "cuBLASLt cannot describe (" + std::string(cublasLtGetStatusName(rs)) + ")",
        ": remove the file to time the GEMMs again");
  return algo;
}

void CudaBackend::record_gemm(const GemmRecordEntry& e) {
  gemm_record_.entries.push_back(e);
  try {
    write_gemm_record(gemm_record_path_, gemm_record_);
  } catch (const Error& err) {
    if (!gemm_record_unwritable_)
      std::fprintf(stderr,
                   "warning: %s; the run goes on, but a run resumed from it may choose other "
                   "GEMM algorithms (other rounding)\n",
                   err.what());
    gemm_record_unwritable_ = true;
  }
}

void CudaBackend::matmul(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                         bool accumulate) {
  product("matmul", C, A, transA, B, transB, accumulate ? &C : nullptr);
}

// One cuBLASLt call: R is the GEMM's C (read, beta 1) and C its D (written). With R at C's
// address this is matmul(+=); elsewhere it saves the copy of R into C.
void CudaBackend::matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B,
                             bool transB, const Tensor& R) {
  check_residual(C, R);
  need("matmul_add", "R", R, C.dtype);
  product("matmul_add", C, A, transA, B, transB, &R);
}

void CudaBackend::product(const char* op, Tensor C, const Tensor& A, bool transA, const Tensor& B,
                          bool transB, const Tensor* Cin) {
  need(op, "A", A, DType::BF16);
  need(op, "B", B, DType::BF16);
  check(C.dtype == DType::BF16 || C.dtype == DType::F32, "cuda ", op, ": C ", C.shape_str(), " is ",
        dtype_name(C.dtype), ", expected BF16 (activations) or F32 (weight gradients)");
  need(op, "C", C, C.dtype);
  const int64_t M = C.rows(), N = C.cols();
  const int64_t K = transA ? A.rows() : A.cols();
  check((transA ? A.cols() : A.rows()) == M && A.rows() * A.cols() == M * K, "cuda ", op, ": A ",
        A.shape_str(), (transA ? "^T" : ""), " does not fit C ", C.shape_str());
  check((transB ? B.cols() : B.rows()) == K && (transB ? B.rows() : B.cols()) == N,
        "cuda ", op, ": B ", B.shape_str(), (transB ? "^T" : ""), " does not fit A ", A.shape_str(),
        (transA ? "^T" : ""), " and C ", C.shape_str());
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = Cin, or 0
    if (!Cin) fill(C, 0.0);
    else if (Cin->data != C.data) copy(C, *Cin);
    return;
  }
  GemmCall call;
  call.key.M = M;
  call.key.N = N;
  call.key.K = K;
  call.key.transA = transA;
  call.key.transB = transB;
  call.key.a = A.dtype;
  call.key.b = B.dtype;
  call.key.c = C.dtype;
  call.key.accumulate = Cin != nullptr;
  call.key.alignA = pointer_alignment(A.data);
  call.key.alignB = pointer_alignment(B.data);
  // One layout and one alignment serve cuBLASLt's C and D.
  const uint32_t align_c = pointer_alignment(C.data);
  call.key.alignC = Cin ? std::min(align_c, pointer_alignment(Cin->data)) : align_c;
  call.alpha = 1;
  call.beta = Cin ? 1 : 0;
  call.A = A.data;
  call.B = B.data;
  call.Cin = Cin ? Cin->data : C.data;
  call.D = C.data;
  gemm(call, op);
}

}  // namespace speedrun::cuda
