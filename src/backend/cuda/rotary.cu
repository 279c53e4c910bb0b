// The rotary tables (rotary_tables, rotary_tables_at): cos and sin of t * inv_freq_j with
// the frequencies computed on the host (math/rotary.h), one thread per entry.
#include <vector>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/math/rotary.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

__global__ void rotary_tables_kernel(float* cos, float* sin, const float* inv_freq, int64_t rows,
                                     int64_t half, int64_t start) {
  for (int64_t i = global_thread(); i < rows * half; i += grid_threads()) {
    const int64_t t = i / half, j = i % half;
    const math::CosSin cs = math::rotary_entry(start + t, inv_freq[j]);
    cos[i] = cs.c;
    sin[i] = cs.s;
  }
}

}  // namespace

void CudaBackend::rotary_tables_at(Tensor cos, Tensor sin, double base, int64_t start) {
  const char* op = "rotary_tables";
  need(op, "cos", cos, DType::F32);
  need(op, "sin", sin, DType::F32);
  check(cos.rows() == sin.rows() && cos.cols() == sin.cols(), "cuda rotary_tables: cos ",
        cos.shape_str(), " and sin ", sin.shape_str(), " differ");
  check(start >= 0, "cuda rotary_tables_at: start position ", start, " must be >= 0");
  const int64_t rows = cos.rows(), half = cos.cols();
  if (rows == 0 || half == 0) return;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) inv[size_t(j)] = math::rotary_inv_freq(j, 2 * half, base);
  auto* d_inv = static_cast<float*>(
      scratch(rotary_freq_, inv.size() * sizeof(float), "the rotary frequencies"));
  upload_bytes(d_inv, inv.data(), inv.size() * sizeof(float), op);
  const Launch l = elementwise_launch(rows * half);
  SR_LAUNCH(l.blocks, l.threads, 0, stream_, rotary_tables_kernel)(static_cast<float*>(cos.data),
                                                            static_cast<float*>(sin.data), d_inv,
                                                            rows, half, start);
  launched(op, "rotary_tables_kernel");
}

void CudaBackend::rotary_tables(Tensor cos, Tensor sin, double base) {
  rotary_tables_at(cos, sin, base, 0);
}

}  // namespace speedrun::cuda
