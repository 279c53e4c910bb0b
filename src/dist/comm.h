// Comm: the ranks of a data-parallel run and the collectives the trainer needs, the record's
// way (SPEC.md "Optimizers"): gradients averaged after backward, Muon's matrix i
// orthogonalised on rank i mod size() and the updates gathered to every rank, validation
// losses averaged, rank 0 alone logging and writing files.
//
// Implementations: LocalComm (one process, dist/local_comm.h), ThreadComm (size() ranks as
// threads of one process, each with its own backend: multi-rank logic tested on one
// machine, dist/thread_comm.h), MpiComm (processes, host buffers, dist/mpi/), NcclComm
// (processes, GPU buffers, dist/nccl/); WatchedComm (dist/watched_comm.h) wraps any of them
// so that a rank waiting for one that never comes ends instead (core/stall_watchdog.h).
//
// Buffers live on the device of the backend the rank trains with; every rank passes the
// same dtype and numel to a collective, and every rank calls the same collectives in the
// same order. A Comm that sees another rank fail throws Error naming that rank instead of
// waiting forever.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/enum_names.h"
#include "core/error.h"
#include "core/tensor.h"

namespace speedrun {

enum class ReduceOp { Sum, Mean };

class Comm {
 public:
  virtual ~Comm() = default;
  virtual std::string name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // t (in place) = the elementwise sum (Mean: sum / size()) of every rank's t. Every rank
  // receives the same bits. F32, F64 (and BF16 where the implementation says so).
  virtual void all_reduce(Tensor t, ReduceOp op) = 0;
  // out [size() * n] (=) the ranks' in [n] concatenated in rank order; out must not alias in.
  virtual void all_gather(Tensor out, const Tensor& in) = 0;
  // The same in place: t [size() * n], this rank's part t[rank() * n, (rank() + 1) * n) is its
  // input; afterwards t (=) every rank's part in rank order (the other parts' old contents
  // are never read). Bytes are copied: any dtype, every rank the same bits.
  virtual void all_gather_in_place(Tensor t) = 0;
  // t (=) rank root's t.
  virtual void broadcast(Tensor t, int root) = 0;
  virtual void barrier() = 0;
  static constexpr int64_t kAllAsync = INT64_MAX;  // wait_async: every reduction started
  // all_reduce started now and finished by wait_async(): on a GPU it runs on a stream of
  // its own, after every op the backend has issued so far, so it overlaps the work issued
  // next (the backward of the layers below, the optimizer's other updates); t must not be
  // touched until it has been waited for. Returns its ticket: 0, 1, 2, ... in the order
  // this Comm started them (every rank starts the same ones in the same order). The
  // default does it at once.
  virtual int64_t all_reduce_async(Tensor t, ReduceOp op) {
    all_reduce(t, op);
    return async_started_++;
  }
  // all_gather_in_place, started and finished as all_reduce_async (its ticket is of the same
  // sequence); t must not be touched until it has been waited for. The default does it at
  // once.
  virtual int64_t all_gather_async(Tensor t) {
    all_gather_in_place(t);
    return async_started_++;
  }
  // The backend's later ops wait for the all_reduce_async or all_gather_async of `ticket`
  // and every one started before it (they finish in order); kAllAsync: every one started
  // so far; a negative ticket: none. The host does not wait.
  virtual void wait_async(int64_t ticket = kAllAsync) { (void)ticket; }
  // A host double reduced over the ranks (validation loss, tokens counted); the same on
  // every rank.
  virtual double all_reduce(double x, ReduceOp op) = 0;
  // Host integers from every rank (the same count on each), concatenated in rank order
  // (data-loader positions for a checkpoint).
  virtual std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) = 0;
  // A failure this Comm learnt of in the background, which no call reports because the
  // collective it broke never ends (NCCL's asynchronous errors: a peer's process gone, a
  // network link lost; the GPU then waits for data that never comes); "" while there is
  // none. Safe to call from any thread while the Comm lives: the stall watchdog asks it
  // every second (core/stall_watchdog.h). The default has none to report.
  virtual std::string background_error() const { return ""; }
  // Ends the run on every rank: throws Error(why) here; the other ranks stop at their next
  // collective with an Error naming this rank (a process Comm may end them outright).
  [[noreturn]] virtual void abort(const std::string& why) = 0;

  bool is_root() const { return rank() == 0; }

  // Every rank's text, in rank order, through the integer all_gather: the lengths, then the
  // bytes in 64-bit words, each rank's padded to the longest.
  std::vector<std::string> all_gather_text(const std::string& mine) {
    const std::vector<int64_t> lengths = all_gather(std::vector<int64_t>{int64_t(mine.size())});
    int64_t longest = 0;
    for (int64_t n : lengths) longest = std::max(longest, n);
    const size_t words = size_t((longest + 7) / 8);
    std::vector<int64_t> packed(words, 0);
    if (!mine.empty()) std::memcpy(packed.data(), mine.data(), mine.size());
    const std::vector<int64_t> all = all_gather(packed);
    std::vector<std::string> out;
    for (size_t r = 0; r < lengths.size(); ++r)
      out.push_back(lengths[r] == 0 ? std::string()
                                    : std::string(reinterpret_cast<const char*>(&all[r * words]),
                                                  size_t(lengths[r])));
    return out;
  }

 protected:
  // all_gather_in_place's part: the bytes of t / size(); throws (naming `who`) unless the
  // ranks' parts are equal.
  size_t part_bytes(const Tensor& t, const char* who) const {
    check(size() > 0 && t.numel() % size() == 0, who, " all_gather_in_place: ", t.shape_str(),
          " is not ", size(), " equal parts");
    return t.bytes() / size_t(size());
  }
  int64_t async_started_ = 0;  // async collectives started so far (the next ticket)
};

}  // namespace speedrun
