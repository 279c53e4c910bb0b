// Error checks of the CUDA backend: functions (no macros) that turn a failed CUDA or
// cuBLASLt call, or a wrong operand, into a speedrun::Error naming the op.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <optional>

#include "core/tensor.h"

namespace speedrun::cuda {

// SPEEDRUN_CUDA_SYNC set (and not "0"): synchronise after every op, so that an error names
// the op that caused it. Read by the backend at construction and by check_cuda's hint.
bool sync_after_each_op();

// SPEEDRUN_GEMM_TUNE=N: how many of cuBLASLt's candidate algorithms the backend times for
// each new GEMM problem, keeping the fastest (matmul.cu); 1 takes the heuristic's first
// untimed. Unset or empty: none given (a GEMM algorithm record's N then applies, else 1).
// Throws unless N is an integer in [1, kMaxGemmTune].
inline constexpr int kMaxGemmTune = 16;
std::optional<int> gemm_tune_setting();
inline int gemm_tune_candidates() { return gemm_tune_setting().value_or(1); }

// Throws "cuda <op>: <what>: <error name>: <description>" unless e is cudaSuccess.
// Errors of earlier asynchronous kernels surface at later calls; the message then says how
// to find the kernel (SPEEDRUN_CUDA_SYNC=1).
void check_cuda(cudaError_t e, const char* op, const char* what);
// The same for cuBLASLt's status codes.
void check_cublas(cublasStatus_t s, const char* op, const char* what);

// Operand checks: t is a device tensor of `dtype` (backend.h's classes under the bf16
// policy), or two operands have as many elements.
void need(const char* op, const char* operand, const Tensor& t, DType dtype);
void need_numel(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                const Tensor& b);

}  // namespace speedrun::cuda
