#include "backend/cuda/check.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"

namespace speedrun::cuda {

bool sync_after_each_op() {
  const char* v = std::getenv("SPEEDRUN_CUDA_SYNC");
  return v != nullptr && *v != 0 && std::strcmp(v, "0") != 0;
}

std::optional<int> gemm_tune_setting() {
  const char* v = std::getenv("SPEEDRUN_GEMM_TUNE");
  if (v == nullptr || *v == 0) return std::nullopt;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  check(*end == 0 && n >= 1 && n <= kMaxGemmTune, "SPEEDRUN_GEMM_TUNE=", v,
        ": expected how many of cuBLASLt's algorithms to time per GEMM problem, 1 to ",
        kMaxGemmTune, " (1 or unset: the heuristic's first)");
  return int(n);
}

void check_cuda(cudaError_t e, const char* op, const char* what) {
  if (e == cudaSuccess) return;
  // Clear a non-sticky error so that the next call starts clean (a sticky one, such as an
  // illegal address, stays: the context is lost and every later call reports it).
  cudaGetLastError();
  std::string hint;
  if (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure ||
      e == cudaErrorIllegalInstruction || e == cudaErrorMisalignedAddress ||
      e == cudaErrorAssert || e == cudaErrorHardwareStackError) {
    // With SPEEDRUN_CUDA_SYNC set every op was waited for: the op named is the one at fault.
    if (sync_after_each_op())
      hint = " (SPEEDRUN_CUDA_SYNC is set: every op before this one finished cleanly)";
    else
      hint = " (kernels run asynchronously: this may come from an earlier op; rerun with "
             "SPEEDRUN_CUDA_SYNC=1 to name the failing kernel)";
  }
  fail("cuda ", op, ": ", what, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e), hint);
}

void check_cublas(cublasStatus_t s, const char* op, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  fail("cuda ", op, ": ", what, ": cuBLASLt status ", int(s), " (", cublasLtGetStatusName(s),
       ": ", cublasLtGetStatusString(s), ")");
}

void need(const char* op, const char* operand, const Tensor& t, DType dtype) {
  check(!t.empty(), "cuda ", op, ": ", operand, " is empty");
  check(t.device == Device::CUDA, "cuda ", op, ": ", operand, " ", t.shape_str(),
        " is not on the GPU (allocate it through the CUDA backend)");
  check(t.dtype == dtype, "cuda ", op, ": ", operand, " ", t.shape_str(), " is ",
        dtype_name(t.dtype), ", expected ", dtype_name(dtype),
        " (the bf16 policy: compute BF16; master, grad and stats F32)");
}

void need_numel(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                const Tensor& b) {
  check(a.numel() == b.numel(), "cuda ", op, ": ", a_name, " ", a.shape_str(), " and ", b_name,
        " ", b.shape_str(), " differ in size");
}

}  // namespace speedrun::cuda
