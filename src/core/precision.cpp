#include "core/precision.h"

namespace speedrun {

std::string Precision::str() const {
  if (master == compute && compute == grad) {
    if (compute == DType::F32) return "fp32";
    if (compute == DType::F64) return "fp64";
  }
  if (master == DType::F32 && compute == DType::BF16 && grad == DType::F32) return "bf16";
  return "master " + std::string(dtype_name(master)) + ", compute " +
         std::string(dtype_name(compute)) + ", grad " + std::string(dtype_name(grad));
}

Precision named_precision(PrecisionChoice c) {
  switch (c) {
    case PrecisionChoice::FP32: return {DType::F32, DType::F32, DType::F32};
    case PrecisionChoice::FP64: return {DType::F64, DType::F64, DType::F64};
    case PrecisionChoice::BF16: return {DType::F32, DType::BF16, DType::F32};
    case PrecisionChoice::Auto: break;
  }
  fail("named_precision: 'auto' is resolved by the backend (Backend::default_precision)");
}

}  // namespace speedrun
