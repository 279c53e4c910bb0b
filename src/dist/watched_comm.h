// WatchedComm: a Comm whose collectives are marked as waits of a StallWatchdog, so that a
// rank waiting for another that is frozen or gone ends (with a message naming the
// collective) instead of waiting forever. Every call goes to the wrapped Comm unchanged:
// the same results, tickets and errors. A collective that a GPU Comm only enqueues (NCCL)
// is marked for as long as the call takes; the wait for its result is the GPU's, which the
// trainer marks.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/stall_watchdog.h"
#include "dist/comm.h"

namespace speedrun {

class WatchedComm final : public Comm {
 public:
  // dog (and a Comm given by reference) must outlive this Comm.
  WatchedComm(std::unique_ptr<Comm> inner, StallWatchdog& dog);
  WatchedComm(Comm& inner, StallWatchdog& dog) : inner_(&inner), dog_(dog) {}
  std::string name() const override { return inner_->name(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void all_reduce(Tensor t, ReduceOp op) override;
  void all_gather(Tensor out, const Tensor& in) override;
  void all_gather_in_place(Tensor t) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  int64_t all_reduce_async(Tensor t, ReduceOp op) override;
  int64_t all_gather_async(Tensor t) override;
  void wait_async(int64_t ticket = kAllAsync) override { inner_->wait_async(ticket); }
  double all_reduce(double x, ReduceOp op) override;
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override;
  std::string background_error() const override { return inner_->background_error(); }
  [[noreturn]] void abort(const std::string& why) override;

 private:
  // The wait `describe()` names, described only when the watchdog keeps marks.
  template <class Describe>
  StallWatchdog::Watch mark(Describe&& describe) const {
    if (!dog_.watching()) return {};
    return dog_.watch(inner_->name() + " " + describe());
  }
  std::unique_ptr<Comm> owned_;
  Comm* inner_;
  StallWatchdog& dog_;
};

// Ends a job of several ranks together, as one watched wait ("the job's ranks to end
// together"): every rank waits in a barrier for the others to finish (rank 0 prints its
// results meanwhile), then runs `release`, the teardown that waits for every rank again
// (ncclCommDestroy, MPI_Finalize). Left to the process's exit those waits would have no
// watchdog, and a rank frozen at the end would hold the others for good. `release` may
// destroy `comm`: it is not used after the barrier.
void end_job_together(Comm& comm, StallWatchdog& dog, const std::function<void()>& release);

}  // namespace speedrun
