// Tensor: a typed, shaped view of memory owned by someone else (an Arena, a mapped file).
// Row-major and contiguous; up to 4 dimensions. Views never allocate or free.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace speedrun {

enum class Device : uint8_t { CPU, CUDA };

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  std::array<int64_t, 4> shape{0, 0, 0, 0};

  Tensor() = default;
  Tensor(void* d, DType t, std::initializer_list<int64_t> s, Device dev = Device::CPU)
      : data(d), dtype(t), device(dev) {
    check(s.size() <= 4, "Tensor: at most 4 dimensions");
    for (int64_t x : s) shape[ndim++] = x;
  }

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  // Rows = product of all but the last dimension; cols = the last dimension.
  // (A product, not numel() / cols(): a tensor with no columns still has its rows.)
  int64_t rows() const {
    int64_t n = 1;
    for (int i = 0; i + 1 < ndim; ++i) n *= shape[i];
    return n;
  }
  int64_t cols() const { return ndim == 0 ? 1 : shape[ndim - 1]; }

  template <class T> T* ptr() const {
    check(dtype == dtype_of<T>(), "Tensor: dtype is ", dtype_name(dtype), ", accessed as ",
          dtype_name(dtype_of<T>()));
    return static_cast<T*>(data);
  }
  // The same memory with another shape of the same number of elements.
  Tensor view(std::initializer_list<int64_t> s) const {
    Tensor t(data, dtype, s, device);
    check(t.numel() == numel(), "Tensor::view: ", numel(), " elements cannot be viewed as ",
          t.numel());
    return t;
  }
  // Indices [i0, i1) of the first dimension (other dimensions kept).
  Tensor slice(int64_t i0, int64_t i1) const {
    check(ndim >= 1 && 0 <= i0 && i0 <= i1 && i1 <= shape[0], "Tensor::slice [", i0, ", ", i1,
          ") out of range for ", shape_str());
    Tensor t = *this;
    const int64_t inner = shape[0] ? numel() / shape[0] : 0;
    t.data = static_cast<char*>(data) + size_t(i0 * inner) * dtype_size(dtype);
    t.shape[0] = i1 - i0;
    return t;
  }
  // Element offset into a flat view (for scalars stored in a parameter arena).
  Tensor element(int64_t i) const {
    check(0 <= i && i < numel(), "Tensor::element out of range");
    Tensor t = *this;
    t.data = static_cast<char*>(data) + size_t(i) * dtype_size(dtype);
    t.ndim = 0;
    t.shape = {0, 0, 0, 0};
    return t;
  }
  std::string shape_str() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

}  // namespace speedrun
