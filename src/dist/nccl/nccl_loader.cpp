// NCCL's functions as NcclComm calls them, forwarding to the library opened on first use, as
// cuBLASLt's are (backend/cuda/cublaslt_loader.h): nothing links NCCL, so a process that
// never makes an NcclComm never loads it, and a build made where the toolkit has NCCL runs
// where only the GPU's NCCL (a PyTorch wheel's, say) is found, or none. One definition per
// function used; a new call to another NCCL function is a link error until it is added here.
// In the emulated build the emulator defines them instead (backend/cuda/emulator/nccl.cpp).
#ifndef SPEEDRUN_CUDA_EMULATED

#include <nccl.h>

#include <string>
#include <vector>

#include "backend/cuda/cublaslt_loader.h"
#include "core/error.h"
#include "dist/nccl/nccl_comm.h"

namespace speedrun {

namespace {

const std::string kNcclSoname = "libnccl.so." + std::to_string(NCCL_MAJOR);

std::vector<std::string> nccl_candidates() {
  std::vector<std::string> names{kNcclSoname};
#ifdef SPEEDRUN_NCCL_LIBRARY_DIR
  names.push_back(std::string(SPEEDRUN_NCCL_LIBRARY_DIR) + "/" + kNcclSoname);
#endif
  return names;
}

void* nccl_handle() {
  static void* const handle = [] {
    void* h = cuda::open_first_library(nccl_candidates(), "NCCL", "the GPU ranks' communicator");
    using GetVersion = ncclResult_t (*)(int*);
    const auto get = reinterpret_cast<GetVersion>(
        cuda::library_symbol(h, "ncclGetVersion", kNcclSoname, "install NCCL 2.13 or newer"));
    int code = 0;
    check(get(&code) == ncclSuccess, kNcclSoname, ": ncclGetVersion failed");
    const std::string why = nccl_version_problem(code);
    check(why.empty(), why);
    return h;
  }();
  return handle;
}

template <class F>
F nccl_symbol(const char* name) {
  return reinterpret_cast<F>(cuda::library_symbol(
      nccl_handle(), name, kNcclSoname,
      "install NCCL " + std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) +
          " or newer"));
}

}  // namespace

std::string nccl_library_problem() {
  try {
    nccl_handle();
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

}  // namespace speedrun

#define SPEEDRUN_NCCL_TARGET(name) speedrun::nccl_symbol<decltype(&name)>(#name)
extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclGetUniqueId);
  return f(id);
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclCommInitRank);
  return f(comm, nranks, id, rank);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclCommDestroy);
  return f(comm);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclCommGetAsyncError);
  return f(comm, async_error);
}

const char* ncclGetLastError(ncclComm_t comm) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclGetLastError);
  return f(comm);
}

const char* ncclGetErrorString(ncclResult_t result) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclGetErrorString);
  return f(result);
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclAllReduce);
  return f(send, recv, count, type, op, comm, stream);
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclAllGather);
  return f(send, recv, count, type, comm, stream);
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  static const auto f = SPEEDRUN_NCCL_TARGET(ncclBroadcast);
  return f(send, recv, count, type, root, comm, stream);
}

}  // extern "C"
#undef SPEEDRUN_NCCL_TARGET

#endif  // SPEEDRUN_CUDA_EMULATED
