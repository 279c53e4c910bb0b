// cuBLASLt's functions as the CUDA backend calls them, forwarding to the library opened on
// first use (why: cublaslt_loader.h). One definition per function the backend uses; a
// new call to another cuBLASLt function is a link error until it is added here.
#ifndef SPEEDRUN_CUDA_EMULATED  // the emulator defines these functions itself

#include "backend/cuda/cublaslt_loader.h"

#include <dlfcn.h>

#include <atomic>
#include <cublasLt.h>
#include <string>
#include <vector>

#include "core/error.h"

namespace speedrun::cuda {

namespace {

const std::string kCublasLtSoname = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
std::atomic<bool> g_cublaslt_opened{false};

void* cublaslt_handle() {
  static void* const handle = [] {
    void* h = open_first_library(cublaslt_candidates(), "cuBLASLt");
    g_cublaslt_opened = true;
    return h;
  }();
  return handle;
}

// The library's function of this name, as the header declares it (F).
template <class F>
F cublaslt_symbol(const char* name) {
  return reinterpret_cast<F>(library_symbol(
      cublaslt_handle(), name, kCublasLtSoname,
      "it is older than the CUDA " + std::to_string(CUBLAS_VER_MAJOR) +
          " toolkit speedrun was built with; install that toolkit's cuBLASLt"));
}

}  // namespace

std::vector<std::string> cublaslt_candidates() {
  std::vector<std::string> names{kCublasLtSoname};
#ifdef SPEEDRUN_CUDA_LIBRARY_DIR
  names.push_back(std::string(SPEEDRUN_CUDA_LIBRARY_DIR) + "/" + kCublasLtSoname);
#endif
  return names;
}

void* open_first_library(const std::vector<std::string>& names, const std::string& what,
                         const std::string& needs) {
  std::string tried;
  for (const std::string& name : names) {
    if (void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    const char* why = dlerror();
    tried += (tried.empty() ? "" : "; ") + std::string(why ? why : name + ": not found");
  }
  fail("cuda: cannot open ", what, " (", tried, "): ", needs, " needs it; install the CUDA ",
       CUBLAS_VER_MAJOR, " toolkit's libraries, or add the folder that holds ",
       names.empty() ? what : names.front(), " to LD_LIBRARY_PATH");
}

void* library_symbol(void* handle, const char* name, const std::string& library,
                     const std::string& fix) {
  dlerror();
  void* f = dlsym(handle, name);
  const char* why = f != nullptr ? "" : dlerror();
  check(f != nullptr, "cuda: ", library, " has no ", name, " (", why ? why : "not found", "): ",
        fix);
  return f;
}

bool cublaslt_opened() { return g_cublaslt_opened; }

}  // namespace speedrun::cuda

// Each resolves its target once (a function-local static: thread-safe), then forwards.
// The library's function of the same name, with the type the header gives it.
#define SPEEDRUN_CUBLASLT_TARGET(name) speedrun::cuda::cublaslt_symbol<decltype(&name)>(#name)
extern "C" {

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* handle) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtCreate);
  return f(handle);
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t handle) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtDestroy);
  return f(handle);
}

const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t status) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtGetStatusName);
  return f(status);
}

const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t status) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtGetStatusString);
  return f(status);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                           const void* alpha, const void* A,
                                           cublasLtMatrixLayout_t Adesc, const void* B,
                                           cublasLtMatrixLayout_t Bdesc, const void* beta,
                                           const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                                           cublasLtMatrixLayout_t Ddesc,
                                           const cublasLtMatmulAlgo_t* algo, void* workspace,
                                           size_t workspace_bytes, cudaStream_t stream) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmul);
  return f(handle, desc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace,
           workspace_bytes, stream);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t preference, int requested,
    cublasLtMatmulHeuristicResult_t results[], int* returned) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulAlgoGetHeuristic);
  return f(handle, desc, Adesc, Bdesc, Cdesc, Ddesc, preference, requested, results, returned);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoCheck(cublasLtHandle_t handle,
                                                    cublasLtMatmulDesc_t desc,
                                                    cublasLtMatrixLayout_t Adesc,
                                                    cublasLtMatrixLayout_t Bdesc,
                                                    cublasLtMatrixLayout_t Cdesc,
                                                    cublasLtMatrixLayout_t Ddesc,
                                                    const cublasLtMatmulAlgo_t* algo,
                                                    cublasLtMatmulHeuristicResult_t* result) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulAlgoCheck);
  return f(handle, desc, Adesc, Bdesc, Cdesc, Ddesc, algo, result);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoConfigGetAttribute(
    const cublasLtMatmulAlgo_t* algo, cublasLtMatmulAlgoConfigAttributes_t attr, void* buf,
    size_t size, size_t* written) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulAlgoConfigGetAttribute);
  return f(algo, attr, buf, size, written);
}

size_t CUBLASWINAPI cublasLtGetVersion(void) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtGetVersion);
  return f();
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                                     cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulDescCreate);
  return f(desc, compute, scale);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulDescDestroy);
  return f(desc);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr,
                                                           const void* buf, size_t bytes) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulDescSetAttribute);
  return f(desc, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulPreferenceCreate);
  return f(pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulPreferenceDestroy);
  return f(pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
    size_t bytes) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatmulPreferenceSetAttribute);
  return f(pref, attr, buf, bytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout,
                                                       cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatrixLayoutCreate);
  return f(layout, type, rows, cols, ld);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatrixLayoutDestroy);
  return f(layout);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                             cublasLtMatrixLayoutAttribute_t attr,
                                                             const void* buf, size_t bytes) {
  static const auto f = SPEEDRUN_CUBLASLT_TARGET(cublasLtMatrixLayoutSetAttribute);
  return f(layout, attr, buf, bytes);
}

}  // extern "C"
#undef SPEEDRUN_CUBLASLT_TARGET

#endif  // SPEEDRUN_CUDA_EMULATED
