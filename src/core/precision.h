// Precision policy: which dtype each class of tensor has. Every Backend op states the class
// of each operand (backend.h): (m) master, (c) compute, (s) statistics, (g) gradient.
//   master   parameters and optimizer state (Adam moments, Muon momentum)
//   compute  activations, matmul operands, and the compute copies of the weight matrices
//            (refreshed from the masters by the optimizer; the masters themselves when the
//            dtypes agree)
//   grad     parameter gradients, accumulated (+=) over micro-batches and reduced over ranks
//   stats    rms_norm's rstd, attention's log-sum-exp, per-token losses, rotary tables:
//            F32 when compute is BF16 (the record keeps softmax and loss statistics in
//            fp32), else the compute dtype
// Named policies: fp32 (all F32: the CPU's training precision), fp64 (all F64: the CPU's
// exact oracle), bf16 (compute BF16 over F32 masters and F32 gradients: the record's GPU
// precision).
#pragma once
#include <string>

#include "core/dtype.h"
#include "core/enum_names.h"

namespace speedrun {

struct Precision {
  DType master = DType::F32;
  DType compute = DType::F32;
  DType grad = DType::F32;

  DType stats() const { return compute == DType::BF16 ? DType::F32 : compute; }
  // True when the weights need compute copies beside their masters.
  bool has_copies() const { return compute != master; }
  bool operator==(const Precision&) const = default;
  std::string str() const;  // "fp32", "fp64", "bf16" or "master F32, compute BF16, grad F32"
};

// What a user asks for with --dtype: one of the named policies, or auto (the backend's
// default: fp32 on the CPU, bf16 on CUDA).
enum class PrecisionChoice { Auto, FP32, FP64, BF16 };
template <> struct EnumNames<PrecisionChoice> {
  static constexpr EnumName<PrecisionChoice> list[] = {{PrecisionChoice::Auto, "auto"},
                                                       {PrecisionChoice::FP32, "fp32"},
                                                       {PrecisionChoice::FP64, "fp64"},
                                                       {PrecisionChoice::BF16, "bf16"}};
};

// The policy a named choice stands for (Auto is resolved by the backend, not here).
Precision named_precision(PrecisionChoice c);

}  // namespace speedrun
