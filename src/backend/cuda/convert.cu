// fill and convert: elementwise over F32, F64, BF16 (and I32 for fill), rounding to
// nearest even exactly as the CPU backend's convert (F64 to BF16 through F32).
#include <cmath>
#include <type_traits>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {

template <class T>
__global__ void fill_kernel(T* p, int64_t n, T value) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) p[i] = value;
}

// Element values travel as double (exact for F32 and BF16), then round once to Dst.
__device__ inline double load_as_f64(const float* p, int64_t i) { return p[i]; }
__device__ inline double load_as_f64(const double* p, int64_t i) { return p[i]; }
__device__ inline double load_as_f64(const uint16_t* p, int64_t i) { return math::bf16_to_f32(p[i]); }
__device__ inline void store_f64(float* p, int64_t i, double v) { p[i] = float(v); }
__device__ inline void store_f64(double* p, int64_t i, double v) { p[i] = v; }
__device__ inline void store_f64(uint16_t* p, int64_t i, double v) { p[i] = math::f64_to_bf16(v); }

template <class Dst, class Src>
__global__ void convert_kernel(Dst* dst, const Src* src, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) store_f64(dst, i, load_as_f64(src, i));
}

bool float_dtype(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }

}  // namespace

void CudaBackend::fill(Tensor t, double value) {
  const char* op = "fill";
  check(t.device == Device::CUDA && !t.empty(), "cuda fill: ", t.shape_str(), " is not a GPU tensor");
  const int64_t n = t.numel();
  if (n == 0) return;
  if (value == 0 && !std::signbit(value)) {  // all-zero bits in every dtype
    check_cuda(cudaMemsetAsync(t.data, 0, t.bytes(), stream_), op, "cudaMemsetAsync");
    if (sync_each_launch_) launched(op, "memset");
    return;
  }
  const Launch l = elementwise_launch(n);
  switch (t.dtype) {
    case DType::F32:
      SR_LAUNCH(l.blocks, l.threads, 0, stream_, fill_kernel<float>)(static_cast<float*>(t.data), n, float(value));
      break;
    case DType::F64:
      SR_LAUNCH(l.blocks, l.threads, 0, stream_, fill_kernel<double>)(static_cast<double*>(t.data), n, value);
      break;
    case DType::BF16:
      SR_LAUNCH(l.blocks, l.threads, 0, stream_, fill_kernel<uint16_t>)(static_cast<uint16_t*>(t.data), n,
                                                       math::f64_to_bf16(value));
      break;
    case DType::I32:
      SR_LAUNCH(l.blocks, l.threads, 0, stream_, fill_kernel<int32_t>)(static_cast<int32_t*>(t.data), n,
                                                       int32_t(value));
      break;
    default:
      fail("cuda fill: dtype ", dtype_name(t.dtype), " is not supported (F32, F64, BF16, I32)");
  }
  launched(op, "fill_kernel");
}

void CudaBackend::convert(Tensor dst, const Tensor& src) {
  const char* op = "convert";
  check(float_dtype(dst.dtype) && float_dtype(src.dtype), "cuda convert: ",
        dtype_name(src.dtype), " to ", dtype_name(dst.dtype),
        " is not supported (any of F32, F64, BF16 to any of them)");
  need(op, "dst", dst, dst.dtype);
  need(op, "src", src, src.dtype);
  need_numel(op, "dst", dst, "src", src);
  if (dst.dtype == src.dtype) {
    copy(dst, src);
    return;
  }
  const int64_t n = dst.numel();
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  auto go = [&](auto* d) {
    using Dst = std::remove_pointer_t<decltype(d)>;
    switch (src.dtype) {
      case DType::F32:
        SR_LAUNCH(l.blocks, l.threads, 0, stream_, convert_kernel<Dst, float>)(d, static_cast<const float*>(src.data), n);
        break;
      case DType::F64:
        SR_LAUNCH(l.blocks, l.threads, 0, stream_, convert_kernel<Dst, double>)(d, static_cast<const double*>(src.data), n);
        break;
      default:
        SR_LAUNCH(l.blocks, l.threads, 0, stream_, convert_kernel<Dst, uint16_t>)(d, static_cast<const uint16_t*>(src.data), n);
        break;
    }
  };
  switch (dst.dtype) {
    case DType::F32: go(static_cast<float*>(dst.data)); break;
    case DType::F64: go(static_cast<double*>(dst.data)); break;
    default: go(static_cast<uint16_t*>(dst.data)); break;
  }
  launched(op, "convert_kernel");
}

}  // namespace speedrun::cuda
