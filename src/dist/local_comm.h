// LocalComm: the single-process Comm (rank 0 of 1). Every collective is the identity, so a
// one-process run computes exactly what it computed before Comm existed.
#pragma once
#include "backend/backend.h"
#include "core/error.h"
#include "dist/comm.h"

namespace speedrun {

class LocalComm final : public Comm {
 public:
  // `backend` copies all_gather's device buffers; without one they must be host memory.
  explicit LocalComm(Backend* backend = nullptr) : be_(backend) {}
  std::string name() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(Tensor, ReduceOp) override {}
  void all_gather(Tensor out, const Tensor& in) override;
  void all_gather_in_place(Tensor t) override { part_bytes(t, "LocalComm"); }
  void broadcast(Tensor, int root) override {
    check(root == 0, "LocalComm::broadcast: root ", root, " in a world of one rank");
  }
  void barrier() override {}
  double all_reduce(double x, ReduceOp) override { return x; }
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override { return mine; }
  [[noreturn]] void abort(const std::string& why) override { throw Error(why); }

 private:
  Backend* be_;
};

}  // namespace speedrun
