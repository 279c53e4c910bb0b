#include "dist/mpi/mpi_comm.h"

#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace speedrun {

namespace {

// MPI_Init at first use, MPI_Finalize at exit (unless the job was aborted).
struct MpiRuntime {
  MpiRuntime() {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
            "MPI_Init_thread failed: is this process started by mpirun?");
      // MPI is called from the main thread only, while other threads run (OpenMP, the
      // watchdog): an MPI without even that level may not be called safely here.
      check(provided >= MPI_THREAD_FUNNELED, "MPI_Init_thread: this MPI provides thread level ",
            provided, ", below MPI_THREAD_FUNNELED, which speedrun needs (its other threads "
            "never call MPI); use an MPI built with thread support (Debian's OpenMPI is)");
      // A failed call returns its error (ok() below makes it an Error naming the call, which
      // ends the job through Comm::abort with this rank's message), instead of MPI's default
      // of ending the job in MPI's words.
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};
void ensure_mpi() { static MpiRuntime runtime; }

void ok(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI ", what, " failed: ", std::string(msg, size_t(len)));
}

MPI_Datatype mpi_type(DType t, const char* op) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    default: fail("MpiComm ", op, ": dtype ", dtype_name(t), " is not supported (F32, F64, I32)");
  }
}

void need_host(const Tensor& t, const char* op) {
  check(t.device == Device::CPU, "MpiComm ", op, ": the buffer is on the GPU; a GPU run needs "
        "NCCL (a build with the CUDA toolkit's NCCL)");
}

}  // namespace

MpiComm::MpiComm() {
  ensure_mpi();
  ok(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "Comm_rank");
  ok(MPI_Comm_size(MPI_COMM_WORLD, &size_), "Comm_size");
}

void MpiComm::all_reduce(Tensor t, ReduceOp op) {
  need_host(t, "all_reduce");
  const MPI_Datatype type = mpi_type(t.dtype, "all_reduce");
  const int n = int(t.numel());
  check(int64_t(n) == t.numel(), "MpiComm all_reduce: ", t.numel(), " elements exceed MPI's count");
  // Reduce to rank 0, then broadcast: identical bits on every rank.
  ok(MPI_Reduce(rank_ == 0 ? MPI_IN_PLACE : t.data, rank_ == 0 ? t.data : nullptr, n, type,
                MPI_SUM, 0, MPI_COMM_WORLD),
     "Reduce");
  ok(MPI_Bcast(t.data, n, type, 0, MPI_COMM_WORLD), "Bcast");
  if (op == ReduceOp::Mean) {
    if (t.dtype == DType::F32) {
      float* p = static_cast<float*>(t.data);
      for (int i = 0; i < n; ++i) p[i] /= float(size_);
    } else if (t.dtype == DType::F64) {
      double* p = static_cast<double*>(t.data);
      for (int i = 0; i < n; ++i) p[i] /= double(size_);
    } else {
      fail("MpiComm all_reduce: a mean of ", dtype_name(t.dtype), " is not defined");
    }
  }
}

void MpiComm::all_gather(Tensor out, const Tensor& in) {
  need_host(in, "all_gather");
  need_host(out, "all_gather");
  check(out.dtype == in.dtype && out.numel() == in.numel() * size_, "MpiComm all_gather: out ",
        out.shape_str(), " must hold ", size_, " x in ", in.shape_str());
  check(in.bytes() <= size_t(INT32_MAX), "MpiComm all_gather: a part of ", in.bytes(),
        " bytes exceeds MPI's count");
  ok(MPI_Allgather(in.data, int(in.bytes()), MPI_BYTE, out.data, int(in.bytes()), MPI_BYTE,
                   MPI_COMM_WORLD),
     "Allgather");
}

void MpiComm::all_gather_in_place(Tensor t) {
  need_host(t, "all_gather_in_place");
  const size_t bytes = part_bytes(t, "MpiComm");
  check(bytes <= size_t(INT32_MAX), "MpiComm all_gather_in_place: a part of ", bytes,
        " bytes exceeds MPI's count");
  ok(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, t.data, int(bytes), MPI_BYTE,
                   MPI_COMM_WORLD),
     "Allgather");
}

void MpiComm::broadcast(Tensor t, int root) {
  need_host(t, "broadcast");
  broadcast_bytes(t.data, t.bytes(), root);
}

void MpiComm::broadcast_bytes(void* data, size_t bytes, int root) {
  check(bytes <= size_t(INT32_MAX), "MpiComm broadcast: ", bytes, " bytes exceed MPI's count");
  ok(MPI_Bcast(data, int(bytes), MPI_BYTE, root, MPI_COMM_WORLD), "Bcast");
}

void MpiComm::barrier() { ok(MPI_Barrier(MPI_COMM_WORLD), "Barrier"); }

double MpiComm::all_reduce(double x, ReduceOp op) {
  double s = x;
  Tensor t(&s, DType::F64, {1});
  all_reduce(t, op);
  return s;
}

std::vector<int64_t> MpiComm::all_gather(const std::vector<int64_t>& mine) {
  std::vector<int64_t> out(mine.size() * size_t(size_));
  ok(MPI_Allgather(mine.data(), int(mine.size()), MPI_INT64_T, out.data(), int(mine.size()),
                   MPI_INT64_T, MPI_COMM_WORLD),
     "Allgather");
  return out;
}

void MpiComm::abort(const std::string& why) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: rank %d of %d: %s\n", rank_, size_, why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);  // MPI_Abort does not return; if it did, still end this rank
}

void end_mpi() {
  int ready = 0, finalized = 0;
  MPI_Initialized(&ready);
  MPI_Finalized(&finalized);
  if (ready && !finalized) MPI_Finalize();
}

void abort_mpi_job_if_running(const std::string& message) {
  int ready = 0, finalized = 0;
  MPI_Initialized(&ready);
  MPI_Finalized(&finalized);
  if (!ready || finalized) return;
  int size = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (size <= 1) return;
  std::fflush(stdout);
  std::fprintf(stderr, "error: rank %d of %d: %s\n", rank, size, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

}  // namespace speedrun
