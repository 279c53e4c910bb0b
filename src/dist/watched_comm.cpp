#include "dist/watched_comm.h"

#include <exception>

#include <fmt/format.h>

#include "core/error.h"

namespace speedrun {

namespace {
std::string values(const Tensor& t) {
  return fmt::format("{} {} values", t.numel(), dtype_name(t.dtype));
}
}  // namespace

WatchedComm::WatchedComm(std::unique_ptr<Comm> inner, StallWatchdog& dog)
    : owned_(std::move(inner)), inner_(owned_.get()), dog_(dog) {
  check(inner_ != nullptr, "WatchedComm: no Comm to watch");
}

void WatchedComm::all_reduce(Tensor t, ReduceOp op) {
  const auto w = mark([&] { return "all-reduce of " + values(t); });
  inner_->all_reduce(t, op);
}

void WatchedComm::all_gather(Tensor out, const Tensor& in) {
  const auto w = mark([&] { return "all-gather of " + values(in) + " per rank"; });
  inner_->all_gather(out, in);
}

void WatchedComm::all_gather_in_place(Tensor t) {
  const auto w = mark([&] { return "all-gather of " + values(t); });
  inner_->all_gather_in_place(t);
}

void WatchedComm::broadcast(Tensor t, int root) {
  const auto w =
      mark([&] { return fmt::format("broadcast of {} from rank {}", values(t), root); });
  inner_->broadcast(t, root);
}

void WatchedComm::barrier() {
  const auto w = mark([&] { return "barrier (every rank waits for the others)"; });
  inner_->barrier();
}

int64_t WatchedComm::all_reduce_async(Tensor t, ReduceOp op) {
  const auto w = mark([&] { return "all-reduce of " + values(t); });
  return inner_->all_reduce_async(t, op);
}

int64_t WatchedComm::all_gather_async(Tensor t) {
  const auto w = mark([&] { return "all-gather of " + values(t); });
  return inner_->all_gather_async(t);
}

double WatchedComm::all_reduce(double x, ReduceOp op) {
  const auto w = mark([&] { return "all-reduce of a host value"; });
  return inner_->all_reduce(x, op);
}

std::vector<int64_t> WatchedComm::all_gather(const std::vector<int64_t>& mine) {
  const auto w = mark(
      [&] { return fmt::format("all-gather of {} host integers per rank", mine.size()); });
  return inner_->all_gather(mine);
}

void WatchedComm::abort(const std::string& why) {
  inner_->abort(why);
  std::terminate();  // not reached: Comm::abort does not return (a virtual call hides it)
}

void end_job_together(Comm& comm, StallWatchdog& dog, const std::function<void()>& release) {
  const auto w = dog.watch("the job's ranks to end together");
  comm.barrier();
  release();
}

}  // namespace speedrun
