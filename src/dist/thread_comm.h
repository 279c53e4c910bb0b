// ThreadComm: a world of W ranks as W threads of one process, each rank with its own
// backend and model, communicating through host memory. It exists so that multi-rank
// logic (gradient averaging, Muon split by i mod W, validation averaged over ranks, rank 0
// alone writing) is tested on one machine: W ranks x batch 1 must train like 1 rank x
// batch W. Reductions add the ranks' values in rank order (0, 1, ..., W-1) in the
// buffer's dtype (BF16 in F32, rounded once), so every rank gets the same bits and the
// same inputs give the same bits on every run.
//
// Usage: run_thread_ranks(W, [&](Comm& comm) { ... one rank's work ... }). An exception in
// any rank aborts the world: the ranks waiting in a collective throw an Error naming the
// failed rank, and run_thread_ranks rethrows the first failure after joining every thread.
#pragma once
#include <functional>
#include <memory>

#include "dist/comm.h"

namespace speedrun {

struct ThreadWorld;

class ThreadComm final : public Comm {
 public:
  ThreadComm(std::shared_ptr<ThreadWorld> world, int rank);
  std::string name() const override { return "threads"; }
  int rank() const override { return rank_; }
  int size() const override;
  void all_reduce(Tensor t, ReduceOp op) override;
  void all_gather(Tensor out, const Tensor& in) override;
  void all_gather_in_place(Tensor t) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  double all_reduce(double x, ReduceOp op) override;
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override;
  [[noreturn]] void abort(const std::string& why) override;

 private:
  std::shared_ptr<ThreadWorld> world_;
  int rank_;
};

// Runs fn on `world` threads, rank r with a ThreadComm of rank r; joins them all. Throws
// the first rank's exception (by time of failure) once every thread has ended.
void run_thread_ranks(int world, const std::function<void(Comm&)>& fn);

}  // namespace speedrun
