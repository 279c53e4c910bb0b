#include "core/arena.h"

#include <algorithm>

namespace speedrun {

Arena& Arena::operator=(Arena&& o) noexcept {
  if (this != &o) {
    if (base_ && free_) free_(base_);
    entries_ = std::move(o.entries_);
    alloc_ = std::move(o.alloc_);
    free_ = std::move(o.free_);
    base_ = o.base_;
    total_ = o.total_;
    materialized_ = o.materialized_;
    o.base_ = nullptr;
    o.total_ = 0;
    o.materialized_ = false;
  }
  return *this;
}

Arena::~Arena() {
  if (base_ && free_) free_(base_);
}

int Arena::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
               Tensor* bind) {
  check(!materialized_, "Arena: cannot add '", name, "' after materialize()");
  Entry e;
  e.name = name;
  e.bind = bind;
  check(shape.size() <= 4, "Arena: '", name, "' has more than 4 dimensions");
  e.tensor = Tensor(nullptr, dtype, {});
  // Sizes come from settings and files: a product beyond 2^62 bytes would wrap into a small
  // allocation that the tensors then overrun, so it is refused here, where every model,
  // optimizer and activation buffer is sized.
  constexpr uint64_t kMaxBytes = uint64_t(1) << 62;
  for (int64_t d : shape) e.tensor.shape[e.tensor.ndim++] = d;
  uint64_t bytes = dtype_size(dtype);
  bool over = false;
  for (int64_t d : shape) {
    check(d >= 0, "Arena: '", name, "' ", e.tensor.shape_str(), " has a negative dimension");
    over = __builtin_mul_overflow(bytes, uint64_t(d), &bytes) || over;
  }
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) bytes = 0, over = false;
  check(!over && bytes <= kMaxBytes, "'", name, "' ", e.tensor.shape_str(), " ",
        dtype_name(dtype), " is more than 2^62 bytes, beyond any machine's memory: lower the "
        "model's size, --seq-len, --batch, or raise --grad-accum");
  check(uint64_t(total_) + bytes <= kMaxBytes, "Arena: '", name, "' takes the arena beyond 2^62 bytes, ",
        "beyond any machine's memory: lower the model's size, --seq-len, --batch, or raise --grad-accum");
  e.offset = total_;
  total_ += (e.tensor.bytes() + 63) / 64 * 64;
  entries_.push_back(std::move(e));
  return int(entries_.size()) - 1;
}

int Arena::add_adjacent(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                        Tensor* bind) {
  check(!entries_.empty() && entries_.back().tensor.dtype == dtype, "Arena: '", name,
        "' must follow a tensor of its dtype ", dtype_name(dtype));
  const Entry& prev = entries_.back();
  const size_t end = prev.offset + prev.tensor.bytes();
  const int i = add(name, dtype, shape, bind);
  entries_.back().offset = end;
  total_ = (end + entries_.back().tensor.bytes() + 63) / 64 * 64;  // the next add() aligns
  return i;
}

void Arena::materialize(Device device) {
  check(!materialized_, "Arena: materialize() called twice");
  check(bool(alloc_), "Arena: no allocator");
  try {
    base_ = total_ ? alloc_(total_) : nullptr;
  } catch (const Error& e) {
    // Name the block's largest tensor: an out-of-memory error then says what to shrink.
    const Entry* big = &entries_.front();
    for (const auto& x : entries_)
      if (x.tensor.bytes() > big->tensor.bytes()) big = &x;
    fail(e.what(), " (a block of ", entries_.size(), " tensors, the largest '", big->name, "' ",
         big->tensor.shape_str(), " ", dtype_name(big->tensor.dtype), ", ", big->tensor.bytes(),
         " bytes)");
  }
  materialized_ = true;
  for (auto& e : entries_) {
    e.tensor.data = static_cast<char*>(base_) + e.offset;
    e.tensor.device = device;
    if (e.bind) *e.bind = e.tensor;
  }
}

const Tensor& Arena::get(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return e.tensor;
  fail("Arena: no tensor named '", name, "'");
}

}  // namespace speedrun
