// Arena: memory planned, not allocated per step. Named tensors are added to a plan, then
// the whole plan is allocated as one block (each tensor 64-byte aligned, unless added
// adjacent to the one before) and every tensor becomes a view into it. Parameters,
// gradients, optimizer state and activations each live in an arena laid out from the
// config. A tensor is declared once, where its view
// lives: add("h0.q", dtype, {N, C}, &layer.q) binds layer.q at materialize().
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace speedrun {

class Arena {
 public:
  using AllocFn = std::function<void*(size_t)>;
  using FreeFn = std::function<void(void*)>;

  Arena() = default;
  Arena(AllocFn alloc, FreeFn free) : alloc_(std::move(alloc)), free_(std::move(free)) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& o) noexcept { *this = std::move(o); }
  Arena& operator=(Arena&& o) noexcept;
  ~Arena();

  // Plans a tensor; returns its index. Only before materialize(). If `bind` is given,
  // *bind becomes the tensor's view at materialize() (so it must outlive that call).
  int add(const std::string& name, DType dtype, std::initializer_list<int64_t> shape,
          Tensor* bind = nullptr) {
    return add(name, dtype, std::vector<int64_t>(shape), bind);
  }
  int add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
          Tensor* bind = nullptr);
  // As add(), but placed right after the previous tensor (which must have the same dtype),
  // with no padding between: a run of such tensors is one contiguous block that one view
  // can cover (Parameters' c_q, c_k, c_v, read as one stacked matrix).
  int add_adjacent(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                   Tensor* bind = nullptr);
  // Allocates the block (zero-filled) and binds every planned tensor to it.
  void materialize(Device device);

  int size() const { return int(entries_.size()); }
  const Tensor& operator[](int i) const { return entries_[i].tensor; }
  const std::string& name(int i) const { return entries_[i].name; }
  // The tensor called `name`; throws if there is none.
  const Tensor& get(const std::string& name) const;
  size_t bytes() const { return total_; }
  void* base() const { return base_; }

 private:
  struct Entry {
    std::string name;
    Tensor tensor;
    size_t offset = 0;
    Tensor* bind = nullptr;
  };
  std::vector<Entry> entries_;
  AllocFn alloc_;
  FreeFn free_;
  void* base_ = nullptr;
  size_t total_ = 0;
  bool materialized_ = false;
};

}  // namespace speedrun
