// NcclComm: the ranks of a GPU job, one process per GPU: collectives on device buffers
// through NCCL, ordered on the backend's stream; host values and the bootstrap (NCCL's
// unique id, gathered from rank 0) through a host Comm: MpiComm in a job of several
// processes, LocalComm for one (world 1, where NCCL's calls are checked on one GPU: NCCL
// refuses two ranks on one GPU). Built wherever the CUDA toolkit's nccl.h is found; NCCL
// itself is opened on first use (nccl_loader.cpp), so a machine without it runs everything
// else.
#pragma once
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "dist/comm.h"

namespace speedrun {

class NcclComm final : public Comm {
 public:
  // backend: this rank's CUDA backend (its stream and device); host: the ranks' Comm for
  // host values, whose rank and size are this one's.
  NcclComm(Backend& backend, std::unique_ptr<Comm> host);
  ~NcclComm() override;
  std::string name() const override { return "nccl"; }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  void all_reduce(Tensor t, ReduceOp op) override;
  void all_gather(Tensor out, const Tensor& in) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  // On a stream of NCCL's own, after an event of the backend's stream: the backward of the
  // next layers runs while a layer's gradients are reduced. Each one records an event of
  // its own (a ring of kEvents), so the backend can wait for one reduction and not the
  // ones started after it.
  int64_t all_reduce_async(Tensor t, ReduceOp op) override;
  void all_gather_in_place(Tensor t) override;
  int64_t all_gather_async(Tensor t) override;  // as all_reduce_async
  void wait_async(int64_t ticket = kAllAsync) override;
  double all_reduce(double x, ReduceOp op) override { return host_->all_reduce(x, op); }
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override {
    return host_->all_gather(mine);
  }
  // ncclCommGetAsyncError: a peer gone or a link lost, with NCCL's last error.
  std::string background_error() const override;
  // The host Comm's abort (MPI_Abort ends every rank), without ncclCommAbort or
  // ncclCommDestroy first: both wait for every rank of the node to call them, which the
  // others, waiting in a collective, never will.
  [[noreturn]] void abort(const std::string& why) override {
    host_->abort(why);
    std::terminate();  // not reached: Comm::abort does not return (a virtual call hides it)
  }

 private:
  // The side stream ordered after the backend's work so far; then, after the collective is
  // issued on it, its ticket's event.
  void side_after_backend(const char* op);
  int64_t record_ticket(const char* op);
  // ncclAllGather of t's parts, in place, on `stream`.
  void gather_in_place(Tensor t, const char* op, void* stream);

  Backend& be_;
  std::unique_ptr<Comm> host_;
  void* comm_ = nullptr;         // ncclComm_t
  void* side_ = nullptr;         // cudaStream_t for the async reductions
  void* compute_done_ = nullptr; // cudaEvent_t: the backend's work so far
  // cudaEvent_t per ticket, slot ticket % kEvents: the side stream up to that reduction. A
  // ticket whose slot has been reused since is waited for through the newest one (the side
  // stream runs in order, so that covers it).
  static constexpr int kEvents = 64;
  std::vector<void*> done_;
};

// Whether NCCL can be opened here; "" when it can, else why (the library tried and the
// loader's reason, or a version older than kMinNcclVersion). Opens it.
std::string nccl_library_problem();

// The oldest NCCL the communicator runs on, as ncclGetVersion codes it: 2.13 (ncclBfloat16
// and ncclAvg came in 2.10; ncclGetLastError, and ncclRemoteError for a peer gone, in 2.13).
// An older libnccl.so.2 found first (a PyTorch wheel's, say) would fail at its first
// reduction with a bare "invalid argument".
inline constexpr int kMinNcclVersion = 21300;
// Why the NCCL of ncclGetVersion's `code` (major * 10000 + minor * 100 + patch since 2.9,
// major * 1000 + minor * 100 + patch before) cannot serve; "" where it can.
std::string nccl_version_problem(int code);

}  // namespace speedrun
