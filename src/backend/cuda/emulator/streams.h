// Streams and events of the CUDA emulator: where the work a stream is given (a kernel, a
// copy, a memset, a GEMM, a sort, a collective) runs, and when.
//
// Two models, chosen by the schedule (simt.h; SPEEDRUN_CUDA_EMULATOR_ORDER "...,lazy"):
//  - eager (the default): work runs when it is issued, so every stream is synchronous;
//  - lazy: work given to a stream is queued and runs only when something waits for it —
//    the host (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, a
//    copy to pageable memory, cudaFree), or another stream (cudaStreamWaitEvent: the
//    waiting stream's later work first runs the recorded stream up to its event). This is
//    the latest a GPU may run it, so a missing wait shows: the consumer reads what was
//    there before (new device memory holds NaN), where eager hides the bug.
// Either way the legacy default stream (nullptr) runs its work at once, after every
// blocking stream (cudaStreamCreate without cudaStreamNonBlocking) has run what it holds:
// the implicit synchronisation CUDA defines between them.
//
// Host memory in copies follows CUDA's rules: a copy from pageable memory reads it when
// issued, a copy to pageable memory is finished when the call returns, and pinned memory
// (cudaHostAlloc / cudaMallocHost) is read or written only when the copy runs, so a host
// buffer changed before its copy ran shows.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace speedrun::cuda::emu {

// What an item of a stream touches, where the emulator knows it (a collective's). Lazy
// streams use it to keep a collective's result from landing sooner than it must:
//  - Any: unknown (kernels, copies, GEMMs): runs in order with everything before it;
//  - Marker: touches no device memory (an event's record or wait);
//  - Reads: reads [lo, lo + bytes) only (a collective taking its input);
//  - Lands: writes [lo, lo + bytes) only (a collective's result).
struct Access {
  enum Kind { Any, Marker, Reads, Lands } kind = Any;
  const void* lo = nullptr;
  size_t bytes = 0;
};

// Runs `work` on stream s (nullptr: the legacy default stream) under the current model.
// work must own what it reads from the host (copy arguments in).
void enqueue(cudaStream_t s, std::function<void()> work, Access access = {});

// Work that never ends (a kernel deadlocked on the device, a collective whose peer is
// gone), on stream s: whatever runs it blocks for good, and so does everything that waits
// for s. For tests of what ends a run that waits for it (the stall watchdog).
void enqueue_endless(cudaStream_t s);

// Streams and events (runtime.cpp forwards the CUDA calls here).
cudaStream_t create_stream(bool blocking);
void destroy_stream(cudaStream_t s);  // runs what it holds first
void drain(cudaStream_t s);           // runs everything s holds
// Runs what s holds, except Lands items whose bytes neither [lo, lo + bytes) nor anything
// run after them touches: those stay queued, in order, and land when something waits for
// them (an event recorded after them, a drain). A collective issued while an earlier one's
// result is still queued (lazy streams) takes its input this way, so the earlier result
// lands no sooner than a GPU may land it.
void drain_for(cudaStream_t s, const void* lo, size_t bytes);
void drain_all();                     // every stream (cudaDeviceSynchronize, cudaFree)

cudaEvent_t create_event();
void destroy_event(cudaEvent_t e);
void record_event(cudaEvent_t e, cudaStream_t s);
void wait_event(cudaStream_t s, cudaEvent_t e);  // s's later work waits for e
void sync_event(cudaEvent_t e);                  // the host waits for e
// Milliseconds between two events that have run; false when one has not (cudaErrorNotReady).
bool elapsed_ms(cudaEvent_t start, cudaEvent_t end, float* ms);

// Pinned host memory (cudaHostAlloc): registered so that copies know which rule applies.
void register_pinned(const void* p, size_t bytes);
void unregister_pinned(const void* p);
bool is_pinned(const void* p, size_t bytes);

// What the host asked of the device runtime, counted since the process started, so that a
// test can hold a training step to what a step may ask (tests/test_cuda_backend.cpp).
// A drain is a host wait that had to run queued work and left no stream any: on a GPU the
// device then sits idle until the host issues more. Only lazy streams queue work, so on eager
// ones no wait is a drain.
struct HostCalls {
  int64_t device_allocs = 0, device_frees = 0;  // cudaMalloc, cudaFree
  int64_t pinned_allocs = 0, pinned_frees = 0;  // cudaHostAlloc / cudaMallocHost, cudaFreeHost
  int64_t waits = 0;   // the host waited for the device: a synchronize call, a copy to
                       // pageable memory, cudaFree, cudaFreeHost
  int64_t drains = 0;  // of those waits, the ones that left the device nothing to run
};
HostCalls host_calls();
void count_allocation(bool pinned, bool release);  // runtime.cpp's allocation calls

}  // namespace speedrun::cuda::emu
