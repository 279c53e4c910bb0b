// MpiComm: the ranks of a job started by mpirun (or srun with PMI), over MPI for buffers in
// host memory (the CPU backend). Reductions go to rank 0 and back (MPI_Reduce + MPI_Bcast)
// so every rank holds the same bits whatever algorithm the MPI library picks; a failing
// rank ends the job with MPI_Abort (mpirun then stops every rank), never a hang.
// Built when CMake finds MPI (Debian: libopenmpi-dev); see dist/launch.h for when it is used.
#pragma once
#include "dist/comm.h"

namespace speedrun {

class MpiComm final : public Comm {
 public:
  // Initialises MPI for this process (once; finalised at exit).
  MpiComm();
  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce(Tensor t, ReduceOp op) override;
  void all_gather(Tensor out, const Tensor& in) override;
  void all_gather_in_place(Tensor t) override;
  void broadcast(Tensor t, int root) override;
  void barrier() override;
  double all_reduce(double x, ReduceOp op) override;
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override;
  [[noreturn]] void abort(const std::string& why) override;

  // Broadcast of raw host bytes from root (NCCL's bootstrap id).
  void broadcast_bytes(void* data, size_t bytes, int root);

 private:
  int rank_ = 0, size_ = 1;
};

// Ends every rank of an MPI job after printing `message` on this one (stderr), if MPI is
// running with more than one rank; returns otherwise. For errors that escape to main().
void abort_mpi_job_if_running(const std::string& message);

// MPI_Finalize now, if MPI runs and is not finalized yet (else at exit). It waits for every
// rank: a caller that can watch the wait (a stall watchdog) calls it rather than leaving it
// to exit, where nothing would.
void end_mpi();

}  // namespace speedrun
