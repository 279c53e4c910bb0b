#include "backend/backend.h"

#include "core/arena.h"

namespace speedrun {

void Backend::check_residual(const Tensor& C, const Tensor& R) const {
  check(R.dtype == C.dtype && R.rows() == C.rows() && R.cols() == C.cols(), name(),
        " matmul_add: the residual ", R.shape_str(), " ", dtype_name(R.dtype),
        " is not the output's shape and dtype ", C.shape_str(), " ", dtype_name(C.dtype));
}

void Backend::matmul_add(Tensor C, const Tensor& A, bool transA, const Tensor& B, bool transB,
                         const Tensor& R) {
  check_residual(C, R);
  if (R.data != C.data) copy(C, R);
  matmul(C, A, transA, B, transB, true);
}

std::vector<double> Backend::to_host_f64(const Tensor& t) {
  std::vector<double> out(size_t(t.numel()));
  if (out.empty()) return out;  // nothing to stage (an empty arena holds no memory)
  if (t.dtype == DType::F64) {
    download(out.data(), t);
    return out;
  }
  Arena staging([this](size_t n) { return allocate(n); }, [this](void* p) { release(p); });
  Tensor tmp;
  staging.add("to_host_f64", DType::F64, {t.numel()}, &tmp);
  staging.materialize(device());
  convert(tmp, t.view({t.numel()}));
  download(out.data(), tmp);
  return out;
}

void Backend::from_host_f64(Tensor t, const std::vector<double>& values) {
  check(int64_t(values.size()) == t.numel(), name(), " from_host_f64: ", values.size(),
        " values for a tensor of ", t.numel(), " elements ", t.shape_str());
  if (values.empty()) return;
  if (t.dtype == DType::F64) {
    upload(t, values.data());
    return;
  }
  if (t.dtype == DType::F32) {
    // Rounded on the host as convert() rounds (to nearest even): no staging buffer of n
    // doubles on the device.
    const int64_t n = t.numel();
    std::vector<float> f(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 16))
    for (int64_t k = 0; k < n; ++k) f[size_t(k)] = float(values[size_t(k)]);
    upload(t, f.data());
    return;
  }
  Arena staging([this](size_t n) { return allocate(n); }, [this](void* p) { release(p); });
  Tensor tmp;
  staging.add("from_host_f64", DType::F64, {t.numel()}, &tmp);
  staging.materialize(device());
  upload(tmp, values.data());
  convert(t.view({t.numel()}), tmp);
  synchronize();  // the staging buffer is freed when this returns
}

}  // namespace speedrun
