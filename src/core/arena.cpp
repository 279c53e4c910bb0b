#include "core/arena.h"

namespace speedrun {

Arena& Arena::operator=(Arena&& o) noexcept {
  if (this != &o) {
    if (base_ && free_) free_(base_);
    entries_ = std::move(o.entries_);
    alloc_ = std::move(o.alloc_);
    free_ = std::move(o.free_);
    base_ = o.base_;
    total_ = o.total_;
    o.base_ = nullptr;
    o.total_ = 0;
  }
  return *this;
}

Arena::~Arena() {
  if (base_ && free_) free_(base_);
}

int Arena::add(const std::string& name, DType dtype, std::initializer_list<int64_t> shape) {
  check(base_ == nullptr, "Arena: cannot add '", name, "' after materialize()");
  Entry e;
  e.name = name;
  e.tensor = Tensor(nullptr, dtype, shape);
  e.offset = total_;
  total_ += (e.tensor.bytes() + 63) / 64 * 64;
  entries_.push_back(std::move(e));
  return int(entries_.size()) - 1;
}

void Arena::materialize(Device device) {
  check(base_ == nullptr, "Arena: materialize() called twice");
  check(bool(alloc_), "Arena: no allocator");
  base_ = total_ ? alloc_(total_) : nullptr;
  for (auto& e : entries_) {
    e.tensor.data = static_cast<char*>(base_) + e.offset;
    e.tensor.device = device;
  }
}

const Tensor& Arena::get(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return e.tensor;
  fail("Arena: no tensor named '", name, "'");
}

}  // namespace speedrun
