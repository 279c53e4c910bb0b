// The NCCL functions speedrun calls (dist/nccl/nccl_comm.cpp), for an emulated build with
// MPI: each MPI process is one rank with its own emulated GPU, whose device memory is host
// memory, so a collective is MPI on the buffers themselves, over a communicator of its own
// (MPI_Comm_dup of the world, so its traffic never matches the host's MPI calls).
//
// A process without MPI running (a test, or a one-GPU check) may make a communicator of one
// rank: its collectives copy the buffer to itself, as NCCL's do at world 1.
//
// Sums are done by every rank alike: the ranks' buffers gathered, then added in rank order
// in the dtype's own arithmetic (bf16 through fp32, rounded once per addition), so every
// rank receives the same bits, as NCCL guarantees. Avg divides the sum by the rank count.
//
// A collective exchanges its data when it is issued, after the work its stream already
// holds (with lazy streams, streams.h, that work runs first): a GPU's NCCL kernels progress
// without the host, which deferring the exchange could turn into a deadlock the hardware
// never has (one rank inside a host MPI call, the other waiting in the collective). Its
// result lands in the output buffer as the stream's next item, so with lazy streams a
// consumer that does not wait for the collective's stream reads the buffer unreduced.
// Earlier results on the stream that the new collective's input does not touch stay queued
// (streams.h drain_for): a consumer that waits for the first of several collectives and
// reads the last one's buffer reads it unreduced too.
//
// A lost link, on demand: with SPEEDRUN_CUDA_EMULATOR_NCCL_FAIL=N each communicator's N-th
// collective (from 1) never ends, as one whose peer died or whose network failed: its
// stream blocks for good (so does whatever waits for it), and ncclCommGetAsyncError reports
// ncclRemoteError from then on, as NCCL does in the background. Nothing but a thread that
// asks (the stall watchdog's) can then end the process.
//
// ncclCommDestroy is, as NCCL documents it, an intra-node collective: it returns once every
// rank of the communicator has called it (a barrier over a communicator of its own, so a
// rank that destroys its communicator while another waits in a collective waits for good,
// as on the hardware).
#ifdef SPEEDRUN_HAVE_MPI

#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"
#include "backend/cuda/math/bf16.h"
#include "dist/nccl/nccl_comm.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;       // null: one rank, without MPI
  MPI_Comm teardown = MPI_COMM_NULL;  // ncclCommDestroy's barrier (see the top)
  int rank = 0, size = 1;
  int64_t issued = 0;   // collectives issued so far
  int64_t fail_at = 0;  // the collective that loses its link (see the top); 0: none
  std::atomic<ncclResult_t> async{ncclSuccess};  // read by any thread
};

namespace {

namespace emu = speedrun::cuda::emu;

constexpr uint32_t kIdMagic = 0x5eedecc1u;

size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

bool supported_sum(ncclDataType_t t) {
  return t == ncclFloat32 || t == ncclFloat64 || t == ncclBfloat16 || t == ncclInt32;
}

// a[i] (=) f(a[i], b[i]) for n values of type T.
template <class T, class F>
void each(void* acc, const void* x, size_t n, F f) {
  auto* a = static_cast<T*>(acc);
  const auto* b = static_cast<const T*>(x);
  for (size_t i = 0; i < n; ++i) a[i] = f(a[i], b[i]);
}

uint16_t bf16_of(float v) { return speedrun::cuda::math::f32_to_bf16(v); }
float f32_of(uint16_t v) { return speedrun::cuda::math::bf16_to_f32(v); }

// acc (=) acc + x elementwise, n values of type t (bf16 through fp32, rounded once).
void add(void* acc, const void* x, size_t n, ncclDataType_t t) {
  switch (t) {
    case ncclFloat32: return each<float>(acc, x, n, std::plus<>());
    case ncclFloat64: return each<double>(acc, x, n, std::plus<>());
    case ncclInt32: return each<int32_t>(acc, x, n, std::plus<>());
    case ncclBfloat16:
      return each<uint16_t>(acc, x, n, [](uint16_t a, uint16_t b) { return bf16_of(f32_of(a) + f32_of(b)); });
    default: return;
  }
}

// acc (=) acc / by elementwise.
void divide(void* acc, size_t n, ncclDataType_t t, int by) {
  switch (t) {
    case ncclFloat32: return each<float>(acc, acc, n, [by](float a, float) { return a / float(by); });
    case ncclFloat64: return each<double>(acc, acc, n, [by](double a, double) { return a / double(by); });
    case ncclInt32: return each<int32_t>(acc, acc, n, [by](int32_t a, int32_t) { return a / by; });
    case ncclBfloat16:
      return each<uint16_t>(acc, acc, n, [by](uint16_t a, uint16_t) { return bf16_of(f32_of(a) / float(by)); });
    default: return;
  }
}

bool usable(ncclComm_t c) { return c != nullptr && (c->mpi != MPI_COMM_NULL || c->size == 1); }

// SPEEDRUN_CUDA_EMULATOR_NCCL_FAIL: the collective that loses its link; 0 (unset): none.
int64_t fail_at_from_environment() {
  const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_NCCL_FAIL");
  return e ? std::max<int64_t>(0, std::strtoll(e, nullptr, 10)) : 0;
}

// Whether this collective is the one that loses its link: then its stream blocks for good
// (a GPU's NCCL kernel waiting for a peer that never sends) and the communicator reports
// the failure in the background.
bool loses_link(ncclComm_t comm, cudaStream_t stream) {
  if (++comm->issued != comm->fail_at) return false;
  comm->async = ncclRemoteError;
  emu::enqueue_endless(stream);
  return true;
}

// Every rank's `bytes` from `send`, in rank order.
std::vector<unsigned char> gather_all(const void* send, size_t bytes, ncclComm_t comm) {
  std::vector<unsigned char> all(bytes * size_t(comm->size));
  if (comm->mpi == MPI_COMM_NULL)
    std::memcpy(all.data(), send, bytes);
  else
    MPI_Allgather(send, int(bytes), MPI_BYTE, all.data(), int(bytes), MPI_BYTE, comm->mpi);
  return all;
}

// The stream's earlier work, then exchange() of [in, in + in_bytes) now; the out_bytes it
// returns are copied to `out` when the stream runs its next item (see the top of this
// file). Earlier collectives' results that nothing here touches stay queued
// (emu::drain_for), so under lazy streams each result lands only when waited for.
//
// The input is kept as taken and compared when the result lands: a GPU's collective may read
// its input at any moment until it completes, so input bytes that changed in between were
// written by work that did not wait for the collective (a race the exchange at issue would
// hide). That is reported as a device fault naming the collective.
ncclResult_t run_on(const char* name, cudaStream_t stream, const void* in, size_t in_bytes,
                    void* out, size_t out_bytes,
                    std::function<std::vector<unsigned char>()> exchange) {
  if (emu::peek_sticky_error() != cudaSuccess) return ncclUnhandledCudaError;
  auto result = std::make_shared<std::vector<unsigned char>>();
  auto taken = std::make_shared<std::vector<unsigned char>>();
  emu::enqueue(stream,
               [result, taken, in, in_bytes, exchange = std::move(exchange)] {
                 const auto* p = static_cast<const unsigned char*>(in);
                 taken->assign(p, p + in_bytes);
                 *result = exchange();
               },
               {emu::Access::Reads, in, in_bytes});
  emu::drain_for(stream, in, in_bytes);
  emu::enqueue(stream,
               [name, result, taken, in, out] {
                 if (!taken->empty() && std::memcmp(in, taken->data(), taken->size()) != 0)
                   emu::device_fault(std::string(name) +
                                     ": its input was written while it ran, by work that did "
                                     "not wait for it (an event after the collective, "
                                     "cudaStreamWaitEvent)");
                 std::memcpy(out, result->data(), result->size());
               },
               {emu::Access::Lands, out, out_bytes});
  return emu::peek_sticky_error() == cudaSuccess ? ncclSuccess : ncclUnhandledCudaError;
}

}  // namespace

// The emulated NCCL is part of the build: always there.
std::string speedrun::nccl_library_problem() { return ""; }

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof *id);
  std::memcpy(id->internal, &kIdMagic, sizeof kIdMagic);
  const uint64_t nonce = std::random_device{}();
  std::memcpy(id->internal + 8, &nonce, sizeof nonce);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  *comm = nullptr;
  uint32_t magic = 0;
  std::memcpy(&magic, id.internal, sizeof magic);
  int inited = 0, world = 0, me = 0;
  MPI_Initialized(&inited);
  if (magic != kIdMagic) return ncclInvalidArgument;  // an id from elsewhere
  if (!inited) {  // one rank alone, or ranks that MPI does not know
    if (nranks != 1 || rank != 0) return ncclInvalidArgument;
    *comm = new ncclComm;
    (*comm)->fail_at = fail_at_from_environment();
    return ncclSuccess;
  }
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (nranks != world || rank != me) return ncclInvalidArgument;  // the ranks are MPI's
  auto* c = new ncclComm;
  MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
  MPI_Comm_dup(MPI_COMM_WORLD, &c->teardown);
  c->rank = rank;
  c->size = nranks;
  c->fail_at = fail_at_from_environment();
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) {
    MPI_Barrier(comm->teardown);
    MPI_Comm_free(&comm->teardown);
    MPI_Comm_free(&comm->mpi);
  }
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  if (!usable(comm) || !supported_sum(type) || (op != ncclSum && op != ncclAvg) || count > size_t(INT32_MAX))
    return ncclInvalidArgument;
  const size_t bytes = count * type_bytes(type);
  if (loses_link(comm, stream)) return ncclSuccess;
  return run_on("ncclAllReduce", stream, send, bytes, recv, bytes, [=] {
    std::vector<unsigned char> all = gather_all(send, bytes, comm);
    for (int r = 1; r < comm->size; ++r) add(all.data(), all.data() + size_t(r) * bytes, count, type);
    if (op == ncclAvg) divide(all.data(), count, type, comm->size);
    all.resize(bytes);
    return all;
  });
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  if (!usable(comm) || type_bytes(type) == 0 || bytes > size_t(INT32_MAX)) return ncclInvalidArgument;
  if (loses_link(comm, stream)) return ncclSuccess;
  return run_on("ncclAllGather", stream, send, bytes, recv, bytes * size_t(comm->size),
                [=] { return gather_all(send, bytes, comm); });
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  if (!usable(comm) || type_bytes(type) == 0 || bytes > size_t(INT32_MAX) || root < 0 || root >= comm->size)
    return ncclInvalidArgument;
  if (loses_link(comm, stream)) return ncclSuccess;
  return run_on("ncclBroadcast", stream, send, comm->rank == root ? bytes : 0, recv, bytes, [=] {
    std::vector<unsigned char> data(bytes);
    if (comm->rank == root) std::memcpy(data.data(), send, bytes);
    if (comm->mpi != MPI_COMM_NULL) MPI_Bcast(data.data(), int(bytes), MPI_BYTE, root, comm->mpi);
    return data;
  });
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm || !async_error) return ncclInvalidArgument;
  *async_error = comm->async.load();
  return ncclSuccess;
}

const char* ncclGetLastError(ncclComm_t comm) {
  return comm && comm->async.load() == ncclRemoteError
             ? "emulated: a collective's link to its peers was lost "
               "(SPEEDRUN_CUDA_EMULATOR_NCCL_FAIL)"
             : "";
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclUnhandledCudaError: return "unhandled cuda error (a kernel failed before the collective)";
    case ncclInvalidArgument: return "invalid argument (the emulated NCCL takes its ranks from MPI, or "
                                     "one rank without it; sums F32/F64/BF16/I32)";
    default: return "unknown result";
  }
}

}  // extern "C"

#endif  // SPEEDRUN_HAVE_MPI
