// The cuBLASLt subset CudaBackend::gemm uses, for an emulated build (no libcublasLt
// linked): column-major layouts with a leading dimension and an optional strided batch,
// bf16 or fp32 operands, TRANSA/TRANSB, fp32 compute and scale, C and D in one layout.
// D = alpha op(A) op(B) + beta C is computed by OpenBLAS's sgemm on fp32 copies of the
// operands (bf16 widens exactly; accumulation in fp32 as on the GPU) and rounded to D's
// type. Shapes that do not fit each other are refused with CUBLAS_STATUS_INVALID_VALUE, as
// cuBLASLt refuses them. The heuristic offers up to kAlgos algorithms for any valid problem;
// as cuBLASLt's split-K kernels do, algorithm i sums the K terms in i + 1 slices added one
// after another (algorithm 0 in one), so that another algorithm gives other rounding. So
// that tests can see the backend time them and keep the fastest,
// SPEEDRUN_EMU_SLOW_GEMM_ALGO=i makes algorithm i take 50 ms longer on the stream (far
// more than a small product's time and a loaded machine's noise). Those sum their slices
// in fp32 (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE). cuBLASLt's default preference also
// allows split-K reductions in the output's type, which round each slice's partial sum to
// a bf16 output's precision; so, where a preference's CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK
// allows those (its default) and D is bf16, the heuristic offers first one more algorithm,
// kOutputTypeAlgo: K in 2 slices, each partial sum rounded to bf16 before they are added.
#include <cblas.h>
#include <cublasLt.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <map>
#include <mutex>
#include <vector>

#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"
#include "backend/cuda/math/bf16.h"

struct cublasLtContext {};

namespace {

struct Layout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;
};
struct Desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
};

constexpr uint64_t kAlgoId = 0x5eed;  // algorithm i is kAlgoId + i
constexpr int kAlgos = 3;
// Split-K in 2 slices reduced in the output's type (the heuristic's first for a bf16 D where
// the preference allows it).
constexpr uint64_t kOutputTypeAlgo = kAlgoId + kAlgos;
constexpr uint32_t kOutputTypeSchemes = CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;

bool known_algo(uint64_t id) { return id >= kAlgoId && id <= kOutputTypeAlgo; }

std::mutex g_lt_mutex;
std::map<const void*, Layout> g_layouts;
std::map<const void*, Desc> g_descs;

// A new opaque handle registered with its description, and its removal.
template <class Opaque, class Info>
Opaque* add_handle(std::map<const void*, Info>& registry, const Info& info) {
  auto* h = new Opaque{};
  std::lock_guard<std::mutex> lock(g_lt_mutex);
  registry[h] = info;
  return h;
}
template <class Opaque, class Info>
void remove_handle(std::map<const void*, Info>& registry, Opaque* h) {
  {
    std::lock_guard<std::mutex> lock(g_lt_mutex);
    registry.erase(h);
  }
  delete h;
}

bool known_type(cudaDataType t) { return t == CUDA_R_16BF || t == CUDA_R_32F; }
size_t type_bytes(cudaDataType t) { return t == CUDA_R_16BF ? 2 : 4; }

float load(const void* base, cudaDataType t, int64_t i) {
  if (t == CUDA_R_16BF)
    return speedrun::cuda::math::bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
  return static_cast<const float*>(base)[i];
}
void store(void* base, cudaDataType t, int64_t i, float v) {
  if (t == CUDA_R_16BF)
    static_cast<uint16_t*>(base)[i] = speedrun::cuda::math::f32_to_bf16(v);
  else
    static_cast<float*>(base)[i] = v;
}

// v as type t holds it (bf16: rounded to nearest even).
float round_to(cudaDataType t, float v) {
  return t == CUDA_R_16BF ? speedrun::cuda::math::bf16_to_f32(speedrun::cuda::math::f32_to_bf16(v)) : v;
}

// A column-major rows x cols matrix (element (r, c) at r + c * ld) as row-major fp32.
std::vector<float> widen(const void* base, const Layout& l) {
  std::vector<float> v(l.rows * l.cols);
  for (uint64_t r = 0; r < l.rows; ++r)
    for (uint64_t c = 0; c < l.cols; ++c) v[r * l.cols + c] = load(base, l.type, int64_t(r + c * uint64_t(l.ld)));
  return v;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  if (speedrun::cuda::emu::peek_sticky_error() != cudaSuccess) return CUBLAS_STATUS_NOT_INITIALIZED;
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = add_handle<cublasLtMatmulDescOpaque_t>(g_descs, Desc{compute, scale});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  remove_handle(g_descs, d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  std::lock_guard<std::mutex> lock(g_lt_mutex);
  auto it = g_descs.find(d);
  if (it == g_descs.end()) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (size != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
  cublasOperation_t op;
  std::memcpy(&op, buf, size);
  if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
  (attr == CUBLASLT_MATMUL_DESC_TRANSA ? it->second.ta : it->second.tb) = op;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!known_type(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < int64_t(rows) || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *l = add_handle<cublasLtMatrixLayoutOpaque_t>(g_layouts, Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  remove_handle(g_layouts, l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  std::lock_guard<std::mutex> lock(g_lt_mutex);
  auto it = g_layouts.find(l);
  if (it == g_layouts.end()) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && size == sizeof(int32_t)) {
    std::memcpy(&it->second.batch, buf, size);
    return it->second.batch >= 1 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  }
  if (attr == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && size == sizeof(int64_t)) {
    std::memcpy(&it->second.stride, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

// A preference's data[0]: its reduction scheme mask (cuBLASLt's default: every scheme). Its
// other attributes (workspace, alignments) are accepted and do not narrow the offer.
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new cublasLtMatmulPreferenceOpaque_t{};
  (*p)->data[0] = CUBLASLT_REDUCTION_SCHEME_MASK;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  if (!p || !buf) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK) {
    uint32_t mask = 0;
    if (size != sizeof mask) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&mask, buf, sizeof mask);
    p->data[0] = mask;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t* algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attr, void* buf,
                                                    size_t size, size_t* written) {
  if (!algo || !known_algo(algo->data[0])) return CUBLAS_STATUS_INVALID_VALUE;
  const bool output_type = algo->data[0] == kOutputTypeAlgo;
  const int32_t splits = output_type ? 2 : int32_t(algo->data[0] - kAlgoId + 1);
  if (attr == CUBLASLT_ALGO_CONFIG_SPLITK_NUM) {
    if (written) *written = sizeof splits;
    if (size != sizeof splits || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(buf, &splits, sizeof splits);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr == CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) {
    const uint32_t scheme = output_type  ? uint32_t(CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE)
                            : splits > 1 ? uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
                                         : uint32_t(CUBLASLT_REDUCTION_SCHEME_NONE);
    if (written) *written = sizeof scheme;
    if (size != sizeof scheme || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(buf, &scheme, sizeof scheme);
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

}  // extern "C"

namespace {

// The problem's shapes, or false where they do not fit each other.
bool problem(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
             cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl, Desc& desc, Layout& A, Layout& B,
             Layout& C, Layout& D) {
  std::lock_guard<std::mutex> lock(g_lt_mutex);
  auto di = g_descs.find(d);
  auto ai = g_layouts.find(a), bi = g_layouts.find(b), ci = g_layouts.find(c), dd = g_layouts.find(dl);
  if (di == g_descs.end() || ai == g_layouts.end() || bi == g_layouts.end() || ci == g_layouts.end() ||
      dd == g_layouts.end())
    return false;
  desc = di->second;
  A = ai->second, B = bi->second, C = ci->second, D = dd->second;
  const uint64_t m = D.rows, n = D.cols;
  const uint64_t am = desc.ta == CUBLAS_OP_N ? A.rows : A.cols, k = desc.ta == CUBLAS_OP_N ? A.cols : A.rows;
  const uint64_t bk = desc.tb == CUBLAS_OP_N ? B.rows : B.cols, bn = desc.tb == CUBLAS_OP_N ? B.cols : B.rows;
  return am == m && bk == k && bn == n && C.rows == m && C.cols == n && C.type == D.type &&
         A.batch == B.batch && A.batch == C.batch && A.batch == D.batch && A.type == B.type;
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dl, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t results[],
                                              int* returned) {
  Desc desc;
  Layout A, B, C, D;
  *returned = 0;
  if (requested < 1 || !pref || !problem(d, a, b, c, dl, desc, A, B, C, D)) return CUBLAS_STATUS_INVALID_VALUE;
  std::vector<uint64_t> offer;
  if (D.type == CUDA_R_16BF && (pref->data[0] & kOutputTypeSchemes) != 0) offer.push_back(kOutputTypeAlgo);
  for (int i = 0; i < kAlgos; ++i) offer.push_back(kAlgoId + uint64_t(i));  // for every problem
  const int n = std::min(requested, int(offer.size()));
  for (int i = 0; i < n; ++i) {
    std::memset(&results[i], 0, sizeof results[i]);
    results[i].algo.data[0] = offer[size_t(i)];
    results[i].state = CUBLAS_STATUS_SUCCESS;
    results[i].wavesCount = 1;
  }
  *returned = n;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* a,
                              cublasLtMatrixLayout_t al, const void* b, cublasLtMatrixLayout_t bl, const void* beta,
                              const void* c, cublasLtMatrixLayout_t cl, void* dp, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t stream) {
  if (speedrun::cuda::emu::peek_sticky_error() != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
  Desc desc;
  Layout A, B, C, D;
  if (!problem(d, al, bl, cl, dl, desc, A, B, C, D)) return CUBLAS_STATUS_INVALID_VALUE;
  // An algorithm the heuristic offered, or none (cuBLASLt then runs its own choice).
  const uint64_t id = algo ? algo->data[0] : kAlgoId;
  if (!known_algo(id)) return CUBLAS_STATUS_INVALID_VALUE;
  const bool output_type = id == kOutputTypeAlgo;
  const char* slow = std::getenv("SPEEDRUN_EMU_SLOW_GEMM_ALGO");
  const bool delay = slow && *slow && std::strtoull(slow, nullptr, 10) == id - kAlgoId;
  // Host scalars are read at the call, the matrices when the stream runs the product.
  const float fa = *static_cast<const float*>(alpha), fb = *static_cast<const float*>(beta);
  speedrun::cuda::emu::enqueue(stream, [=] {
    if (delay) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const int m = int(D.rows), n = int(D.cols);
    const int k = int(desc.ta == CUBLAS_OP_N ? A.cols : A.rows);
    for (int32_t s = 0; s < A.batch; ++s) {
      const auto* pa = static_cast<const unsigned char*>(a) + s * A.stride * int64_t(type_bytes(A.type));
      const auto* pb = static_cast<const unsigned char*>(b) + s * B.stride * int64_t(type_bytes(B.type));
      const auto* pc = static_cast<const unsigned char*>(c) + s * C.stride * int64_t(type_bytes(C.type));
      auto* pd = static_cast<unsigned char*>(dp) + s * D.stride * int64_t(type_bytes(D.type));
      const std::vector<float> wa = widen(pa, A), wb = widen(pb, B);
      std::vector<float> out(size_t(m) * size_t(n), 0.f);
      if (fb != 0) out = widen(pc, C);
      const CBLAS_TRANSPOSE ta = desc.ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
      const CBLAS_TRANSPOSE tb = desc.tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
      const int slices = k > 1 ? int(std::min<uint64_t>(output_type ? 2 : id - kAlgoId + 1, uint64_t(k))) : 1;
      if (k > 0 && slices == 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, fa, wa.data(), int(A.cols), wb.data(), int(B.cols), fb,
                    out.data(), n);
      } else if (k > 0) {  // split-K: beta C, then each slice's product added in turn
        for (float& v : out) v *= fb;
        std::vector<float> part(out.size());
        for (int sl = 0; sl < slices; ++sl) {
          const int k0 = int(int64_t(k) * sl / slices), k1 = int(int64_t(k) * (sl + 1) / slices);
          // Row-major op(A) [m, k]: A [m, k] (slice of columns) or A^T of [k, m] (of rows);
          // op(B) [k, n]: B [k, n] (of rows) or B^T of [n, k] (of columns).
          const float* sa = wa.data() + (ta == CblasNoTrans ? size_t(k0) : size_t(k0) * A.cols);
          const float* sb = wb.data() + (tb == CblasNoTrans ? size_t(k0) * B.cols : size_t(k0));
          cblas_sgemm(CblasRowMajor, ta, tb, m, n, k1 - k0, fa, sa, int(A.cols), sb, int(B.cols), 0.f,
                      part.data(), n);
          // Reduced in the output's type: each partial sum rounded to it first.
          if (output_type)
            for (float& v : part) v = round_to(D.type, v);
          for (size_t i = 0; i < out.size(); ++i) out[i] += part[i];
        }
      } else {
        for (float& v : out) v *= fb;
      }
      for (int r = 0; r < m; ++r)
        for (int col = 0; col < n; ++col) store(pd, D.type, int64_t(r) + int64_t(col) * D.ld, out[size_t(r) * n + col]);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                       cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                       const cublasLtMatmulAlgo_t* algo, cublasLtMatmulHeuristicResult_t* result) {
  Desc desc;
  Layout A, B, C, D;
  if (!algo || !result || !problem(d, a, b, c, dl, desc, A, B, C, D)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!known_algo(algo->data[0])) return CUBLAS_STATUS_NOT_SUPPORTED;
  const cublasLtMatmulAlgo_t copy = *algo;  // algo may point to result->algo
  std::memset(result, 0, sizeof *result);
  result->algo = copy;
  result->state = CUBLAS_STATUS_SUCCESS;
  result->wavesCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
const char* cublasLtGetStatusString(cublasStatus_t s) { return cublasLtGetStatusName(s); }

}  // extern "C"
