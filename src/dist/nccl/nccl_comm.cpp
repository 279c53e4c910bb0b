#include "dist/nccl/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace speedrun {

namespace {

void ok(ncclResult_t rc, const char* what) {
  if (rc == ncclSuccess) return;
  // NCCL's own account of its last error, where it has one (its comm argument is unused).
  const char* last = ncclGetLastError(nullptr);
  fail("NCCL ", what, " failed: ", ncclGetErrorString(rc),
       last != nullptr && *last ? std::string(": ") + last : std::string(),
       " (NCCL_DEBUG=INFO in the environment prints why)");
}

ncclDataType_t nccl_type(DType t, const char* op) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::I32: return ncclInt32;
    default: fail("NcclComm ", op, ": dtype ", dtype_name(t), " is not supported");
  }
}

ncclComm_t as_comm(void* c) { return static_cast<ncclComm_t>(c); }
cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

void need_device(const Tensor& t, const char* op) {
  check(t.device == Device::CUDA, "NcclComm ", op, ": the buffer is in host memory; NCCL "
        "reduces GPU buffers (the CPU backend uses MPI)");
}

}  // namespace

std::string nccl_version_problem(int code) {
  if (code >= kMinNcclVersion) return "";
  const bool old_code = code < 10000;  // before 2.9: major * 1000 + minor * 100 + patch
  const int major = old_code ? code / 1000 : code / 10000;
  const int minor = old_code ? code % 1000 / 100 : code % 10000 / 100;
  const int patch = code % 100;
  return "NCCL " + std::to_string(major) + "." + std::to_string(minor) + "." +
         std::to_string(patch) + " was found, and speedrun's GPU ranks need " +
         std::to_string(kMinNcclVersion / 10000) + "." + std::to_string(kMinNcclVersion % 10000 / 100) +
         " or newer (bf16 and average reductions, errors of a peer gone): install a newer NCCL, "
         "or put its folder first in LD_LIBRARY_PATH";
}

NcclComm::NcclComm(Backend& backend, std::unique_ptr<Comm> host)
    : be_(backend), host_(std::move(host)) {
  check(host_ != nullptr, "NcclComm: no host Comm");
  check(backend.device() == Device::CUDA, "NcclComm: the backend is ", backend.name(),
        ", not a GPU: use MpiComm");
  // Rank 0's unique id to every rank, as the host Comm's words (128 bytes).
  ncclUniqueId id{};
  static_assert(sizeof(id) % sizeof(int64_t) == 0, "ncclUniqueId is whole 64-bit words");
  std::vector<int64_t> words(sizeof(id) / sizeof(int64_t), 0);
  if (host_->rank() == 0) {
    ok(ncclGetUniqueId(&id), "GetUniqueId");
    std::memcpy(words.data(), &id, sizeof(id));
  }
  const std::vector<int64_t> all = host_->all_gather(words);
  std::memcpy(&id, all.data(), sizeof(id));  // rank 0's, first
  check(cudaSetDevice(backend.device_index()) == cudaSuccess, "NcclComm: cudaSetDevice(",
        backend.device_index(), ") failed");
  ncclComm_t c = nullptr;
  ok(ncclCommInitRank(&c, host_->size(), id, host_->rank()), "CommInitRank");
  comm_ = c;
  // Asked once here, so that a library without it says so now rather than in the watchdog.
  ncclResult_t state = ncclSuccess;
  ok(ncclCommGetAsyncError(c, &state), "CommGetAsyncError");
  cudaStream_t side = nullptr;
  cudaEvent_t a = nullptr;
  check(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking) == cudaSuccess &&
            cudaEventCreateWithFlags(&a, cudaEventDisableTiming) == cudaSuccess,
        "NcclComm: cannot create its stream and events");
  side_ = side;
  compute_done_ = a;
  for (int i = 0; i < kEvents; ++i) {
    cudaEvent_t e = nullptr;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess,
          "NcclComm: cannot create its events");
    done_.push_back(e);
  }
}

// ncclCommDestroy returns once every rank of the node has called it: a job ends its ranks'
// Comms together, and a rank that fails ends the job without coming here (abort, and
// speedrun train's error path).
NcclComm::~NcclComm() {
  if (side_) cudaStreamSynchronize(as_stream(side_));
  if (comm_) ncclCommDestroy(as_comm(comm_));
  if (compute_done_) cudaEventDestroy(static_cast<cudaEvent_t>(compute_done_));
  for (void* e : done_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  if (side_) cudaStreamDestroy(as_stream(side_));
}

void NcclComm::side_after_backend(const char* op) {
  cudaEvent_t ready = static_cast<cudaEvent_t>(compute_done_);
  check(cudaEventRecord(ready, as_stream(be_.stream())) == cudaSuccess &&
            cudaStreamWaitEvent(as_stream(side_), ready, 0) == cudaSuccess,
        "NcclComm ", op, ": cannot order the side stream after the backend's");
}

int64_t NcclComm::record_ticket(const char* op) {
  const int64_t ticket = async_started_++;
  check(cudaEventRecord(static_cast<cudaEvent_t>(done_[size_t(ticket % kEvents)]),
                        as_stream(side_)) == cudaSuccess,
        "NcclComm ", op, ": cannot record the collective's event");
  return ticket;
}

int64_t NcclComm::all_reduce_async(Tensor t, ReduceOp op) {
  need_device(t, "all_reduce_async");
  side_after_backend("all_reduce_async");
  ok(ncclAllReduce(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype, "all_reduce"),
                   op == ReduceOp::Mean ? ncclAvg : ncclSum, as_comm(comm_), as_stream(side_)),
     "AllReduce");
  return record_ticket("all_reduce_async");
}

void NcclComm::gather_in_place(Tensor t, const char* op, void* stream) {
  need_device(t, op);
  const size_t bytes = part_bytes(t, "NcclComm");
  // Sent as bytes (ncclInt8): any dtype. NCCL's in-place form: the send buffer is this
  // rank's part of the receive buffer.
  char* base = static_cast<char*>(t.data);
  ok(ncclAllGather(base + size_t(rank()) * bytes, base, bytes, ncclInt8, as_comm(comm_),
                   as_stream(stream)),
     "AllGather");
}

void NcclComm::all_gather_in_place(Tensor t) {
  gather_in_place(t, "all_gather_in_place", be_.stream());
}

int64_t NcclComm::all_gather_async(Tensor t) {
  side_after_backend("all_gather_async");
  gather_in_place(t, "all_gather_async", side_);
  return record_ticket("all_gather_async");
}

void NcclComm::wait_async(int64_t ticket) {
  if (async_started_ == 0 || ticket < 0) return;  // nothing started, or nothing asked for
  const int64_t newest = async_started_ - 1;
  // Past the newest, or reused since: the newest event covers it.
  const int64_t t = (ticket > newest || ticket <= newest - kEvents) ? newest : ticket;
  check(cudaStreamWaitEvent(as_stream(be_.stream()),
                            static_cast<cudaEvent_t>(done_[size_t(t % kEvents)]), 0) == cudaSuccess,
        "NcclComm wait_async: cannot order the backend's stream after the reductions");
}

void NcclComm::all_reduce(Tensor t, ReduceOp op) {
  need_device(t, "all_reduce");
  ok(ncclAllReduce(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype, "all_reduce"),
                   op == ReduceOp::Mean ? ncclAvg : ncclSum, as_comm(comm_),
                   as_stream(be_.stream())),
     "AllReduce");
}

void NcclComm::all_gather(Tensor out, const Tensor& in) {
  need_device(in, "all_gather");
  need_device(out, "all_gather");
  check(out.dtype == in.dtype && out.numel() == in.numel() * size(), "NcclComm all_gather: out ",
        out.shape_str(), " must hold ", size(), " x in ", in.shape_str());
  // NCCL's one in-place form is in = out's own part (all_gather_in_place); any other overlap
  // races on the GPU, where the emulator's copy through host memory would not show it.
  const auto ib = reinterpret_cast<uintptr_t>(in.data), ob = reinterpret_cast<uintptr_t>(out.data);
  check(ib + in.bytes() <= ob || ob + out.bytes() <= ib, "NcclComm all_gather: in ",
        in.shape_str(), " overlaps out ", out.shape_str(), ": gather into another buffer, or "
        "in place with all_gather_in_place");
  ok(ncclAllGather(in.data, out.data, size_t(in.numel()), nccl_type(in.dtype, "all_gather"),
                   as_comm(comm_), as_stream(be_.stream())),
     "AllGather");
}

void NcclComm::broadcast(Tensor t, int root) {
  need_device(t, "broadcast");
  ok(ncclBroadcast(t.data, t.data, size_t(t.numel()), nccl_type(t.dtype, "broadcast"), root,
                   as_comm(comm_), as_stream(be_.stream())),
     "Broadcast");
}

std::string NcclComm::background_error() const {
  ncclResult_t state = ncclSuccess;
  const ncclResult_t rc = ncclCommGetAsyncError(as_comm(comm_), &state);
  if (rc != ncclSuccess)
    return std::string("NCCL cannot say whether its links work: ncclCommGetAsyncError failed: ") +
           ncclGetErrorString(rc);
  if (state == ncclSuccess || state == ncclInProgress) return "";
  std::string last;
  try {  // NCCL's own words, where the library has them
    if (const char* l = ncclGetLastError(as_comm(comm_)); l != nullptr) last = l;
  } catch (const Error&) {
  }
  return std::string("NCCL reported a failure of the ranks' links: ") + ncclGetErrorString(state) +
         (last.empty() ? "" : " (" + last + ")") +
         ". Another rank's process may have ended, or a network link failed; NCCL_DEBUG=WARN "
         "in the environment prints NCCL's account of it";
}

void NcclComm::barrier() {
  be_.synchronize();
  host_->barrier();
}

}  // namespace speedrun
