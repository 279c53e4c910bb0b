// The CUDA runtime functions speedrun calls, for an emulated build (no libcudart linked):
// one device (an H200's limits, or another GPU's: gpu_profile.h; SPEEDRUN_CUDA_EMULATOR_DEVICES
// alike ones for an emulated multi-GPU job), device memory in host memory, streams and events as streams.h
// models them (at once, or as late as CUDA allows). Device memory is capped
// (SPEEDRUN_CUDA_EMULATOR_MEMORY bytes, 4 GiB by default) so that running out of it can be
// tested; new allocations hold 0xff bytes (NaN in bf16 and fp32) so that reading memory
// nobody wrote shows. A kernel failure is sticky, as a fault on the device is: every later
// call returns it.
#include <cuda_runtime.h>

#include <memory>
#include <vector>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <string>

#include "backend/cuda/emulator/gpu_profile.h"
#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"

namespace {

std::mutex g_memory_mutex;
std::map<const void*, size_t> g_device;  // live cudaMalloc blocks
size_t g_used = 0;

size_t capacity() {
  static const size_t cap = [] {
    const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_MEMORY");
    return e ? size_t(std::strtoull(e, nullptr, 10)) : size_t(4) << 30;
  }();
  return cap;
}

// How many GPUs a process sees (SPEEDRUN_CUDA_EMULATOR_DEVICES, 1 by default), all alike:
// ranks of an emulated multi-GPU job (mpirun) each take the one of their local rank.
int device_count() {
  static const int n = [] {
    const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_DEVICES");
    const int v = e ? std::atoi(e) : 1;
    return v > 0 ? v : 1;
  }();
  return n;
}

// The driver's CUDA version (SPEEDRUN_CUDA_EMULATOR_DRIVER, as CUDA encodes it: 12040 for
// 12.4, 0 for no driver at all; this runtime's by default). Below the runtime's, every call
// fails as the real runtime's do: cudaErrorInsufficientDriver, for a missing driver too.
int driver_version() {
  static const int v = [] {
    const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_DRIVER");
    return e && *e ? std::atoi(e) : CUDART_VERSION;
  }();
  return v;
}
bool old_driver() { return driver_version() < CUDART_VERSION; }

bool no_device() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v && (std::strcmp(v, "") == 0 || std::strcmp(v, "-1") == 0);
}

// Every call but the error queries starts here: a sticky failure or a hidden device.
cudaError_t gate() {
  if (old_driver()) return cudaErrorInsufficientDriver;
  if (no_device()) return cudaErrorNoDevice;
  return speedrun::cuda::emu::peek_sticky_error();
}

namespace emu = speedrun::cuda::emu;

// Events made with cudaEventDisableTiming, which CUDA refuses to time
// (cudaErrorInvalidResourceHandle from cudaEventElapsedTime).
std::mutex g_untimed_mutex;
std::set<cudaEvent_t> g_untimed;

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 0;
  if (old_driver()) return cudaErrorInsufficientDriver;
  *count = no_device() ? 0 : device_count();
  return no_device() ? cudaErrorNoDevice : cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  *version = driver_version();
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

int g_current_device = 0;  // the process's (ranks of an emulated job are processes)

cudaError_t cudaSetDevice(int device) {
  if (cudaError_t e = gate()) return e;
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  g_current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (cudaError_t e = gate()) return e;
  *device = g_current_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (cudaError_t e = gate()) return e;
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  const emu::GpuProfile& g = emu::gpu_profile();
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = g.major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = g.minor; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = g.sms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(g.smem_per_block_optin); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = int(g.smem_per_sm); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; return cudaSuccess;
    case cudaDevAttrL2CacheSize: *value = int(g.l2_bytes); return cudaSuccess;
    default: return cudaErrorNotSupported;
  }
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (cudaError_t e = gate()) return e;
  if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
  std::memset(p, 0, sizeof *p);
  const emu::GpuProfile& g = emu::gpu_profile();
  std::strncpy(p->name, g.name, sizeof p->name - 1);
  p->major = g.major;
  p->minor = g.minor;
  p->multiProcessorCount = g.sms;
  p->totalGlobalMem = capacity();
  p->sharedMemPerBlock = 48 << 10;
  p->sharedMemPerBlockOptin = g.smem_per_block_optin;
  p->sharedMemPerMultiprocessor = g.smem_per_sm;
  p->l2CacheSize = int(g.l2_bytes);
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->regsPerBlock = 65536;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  if (cudaError_t e = gate()) return e;
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  *total = capacity();
  *free_bytes = capacity() - g_used;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (cudaError_t e = gate()) return e;
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  const size_t n = bytes ? bytes : 1;
  if (n > capacity() - g_used) return cudaErrorMemoryAllocation;
  void* q = ::operator new(n, std::align_val_t(256), std::nothrow);
  if (!q) return cudaErrorMemoryAllocation;
  std::memset(q, 0xff, n);
  g_device[q] = n;
  g_used += n;
  *p = q;
  emu::count_allocation(false, false);
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  if (cudaError_t e = gate()) return e;
  emu::drain_all();  // cudaFree waits for the device: queued work may still use p
  std::lock_guard<std::mutex> lock(g_memory_mutex);
  auto it = g_device.find(p);
  if (it == g_device.end()) return cudaErrorInvalidValue;
  g_used -= it->second;
  g_device.erase(it);
  ::operator delete(p, std::align_val_t(256));
  emu::count_allocation(false, true);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) {
  if (cudaError_t e = gate()) return e;
  *p = ::operator new(bytes ? bytes : 1, std::align_val_t(256), std::nothrow);
  if (!*p) return cudaErrorMemoryAllocation;
  emu::register_pinned(*p, bytes ? bytes : 1);
  emu::count_allocation(true, false);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
cudaError_t cudaFreeHost(void* p) {
  if (!p) return cudaSuccess;
  emu::drain_all();  // as cudaFree: a queued copy may still use it
  emu::unregister_pinned(p);
  ::operator delete(p, std::align_val_t(256));
  emu::count_allocation(true, true);
  return cudaSuccess;
}

// CUDA's rules for host memory (streams.h): pageable memory is read at issue and written
// before the call returns; pinned memory when the copy runs.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (cudaError_t e = gate()) return e;
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyHostToDevice && !emu::is_pinned(src, bytes)) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    emu::enqueue(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
    return cudaSuccess;
  }
  emu::enqueue(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
  if (kind == cudaMemcpyDeviceToHost && !emu::is_pinned(dst, bytes)) {
    emu::drain(stream);
    return gate();
  }
  return cudaSuccess;
}
// The legacy default stream: after the blocking streams' work, finished on return.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  if (cudaError_t e = gate()) return e;
  if (bytes) emu::enqueue(stream, [p, value, bytes] { std::memset(p, value, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  if (cudaError_t e = gate()) return e;
  *s = emu::create_stream(true);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (cudaError_t e = gate()) return e;
  *s = emu::create_stream((flags & cudaStreamNonBlocking) == 0);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  emu::destroy_stream(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (cudaError_t e = gate()) return e;
  emu::drain(s);
  return gate();
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  if (cudaError_t err = gate()) return err;
  emu::wait_event(s, e);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (cudaError_t err = gate()) return err;
  *e = emu::create_event();
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  const cudaError_t err = cudaEventCreate(e);
  if (err == cudaSuccess && (flags & cudaEventDisableTiming)) {
    std::lock_guard<std::mutex> lock(g_untimed_mutex);
    g_untimed.insert(*e);
  }
  return err;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  {
    std::lock_guard<std::mutex> lock(g_untimed_mutex);
    g_untimed.erase(e);
  }
  emu::destroy_event(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (cudaError_t err = gate()) return err;
  emu::record_event(e, s);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (cudaError_t err = gate()) return err;
  emu::sync_event(e);
  return gate();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (cudaError_t err = gate()) return err;
  {
    std::lock_guard<std::mutex> lock(g_untimed_mutex);
    if (g_untimed.count(start) || g_untimed.count(end)) return cudaErrorInvalidResourceHandle;
  }
  return emu::elapsed_ms(start, end, ms) ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (cudaError_t e = gate()) return e;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorNotSupported;
  if (value < 0 || size_t(value) > emu::gpu_profile().smem_per_block_optin) return cudaErrorInvalidValue;
  speedrun::cuda::emu::set_max_dynamic_smem(func, value);
  return cudaSuccess;
}

// Every kernel of an emulated build runs on every profile: the attributes of a kernel that
// uses no static shared memory (the emulator does not know a kernel's; where the backend
// sizes dynamic shared memory against the static part, it counts its own at least).
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  if (cudaError_t e = gate()) return e;
  if (!func) return cudaErrorInvalidDeviceFunction;
  std::memset(attr, 0, sizeof *attr);
  const emu::GpuProfile& g = emu::gpu_profile();
  attr->maxThreadsPerBlock = 1024;
  attr->maxDynamicSharedSizeBytes = 48 << 10;
  attr->binaryVersion = attr->ptxVersion = 10 * g.major + g.minor;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  if (no_device()) return cudaErrorNoDevice;
  return speedrun::cuda::emu::take_launch_error();
}
cudaError_t cudaPeekAtLastError() { return speedrun::cuda::emu::peek_sticky_error(); }
cudaError_t cudaDeviceSynchronize() {
  if (cudaError_t e = gate()) return e;
  emu::drain_all();
  return gate();
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInsufficientDriver:
      return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorLaunchFailure: return "unspecified launch failure (the emulator printed why)";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    default: return "unknown error";
  }
}

}  // extern "C"
