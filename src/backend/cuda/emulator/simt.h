// The CPU emulation of CUDA's execution model that an emulated build runs kernels on
// (prelude.h): a launch runs its blocks one after another, each block as blockDim
// fibers (one per CUDA thread) switched cooperatively on one OS thread. A fiber runs
// until it reaches a barrier (__syncthreads), a warp collective (__syncwarp, a shuffle, a vote,
// ldmatrix, mma: ptx.h) or its end; a barrier opens when every live thread of the block
// (or lane of the warp) has reached it.
//
// What it checks, each a launch failure naming the kernel, block and thread:
//  - launch shapes as an H200 takes them (threads per block, grid dims, dynamic shared
//    memory against the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize);
//  - barriers nobody can pass (a deadlock: some threads wait where others never arrive);
//  - warp collectives with a partial mask or an exited lane, and lanes of one warp at
//    different collectives (both undefined on the hardware);
//  - ldmatrix / cp.async addresses outside the block's dynamic shared memory or misaligned;
//  - wgmma's rules (ptx.h): its results read before their wait, the shared memory it reads
//    changed or the target of a cp.async before then, in flight from a cp.async when it is
//    issued, or filled by cp.async without a fence.proxy.async, its A fragments rewritten
//    before its wait, a product issued on registers the thread may have touched with no
//    wgmma.fence since, and the four warps of a warpgroup issuing other products, or other
//    numbers of them.
// Shared memory starts as 0xff bytes (NaN in bf16 and fp32), so a read of a value nobody
// wrote shows in the results.
//
// Races show as results that change with the schedule (every kernel of this backend is
// deterministic): set_schedule() or SPEEDRUN_CUDA_EMULATOR_ORDER (forward, reverse, or a
// number seeding a shuffle) changes the order threads run between barriers and blocks run
// in, whether cp.async copies land as soon as issued or only at their wait (ptx.h), and
// whether streams run their work when it is issued or as late as CUDA allows (streams.h),
// where a missing stream or event wait shows.
//
// It does not model timing, memory ordering between blocks beyond "one block after
// another", two streams' work running at the same time, or the instructions' exact
// rounding.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace speedrun::cuda::emu {

// ---- schedule ------------------------------------------------------------------------------
struct Schedule {
  enum class Order { Forward, Reverse, Shuffle } order = Order::Forward;
  uint64_t seed = 0;          // Shuffle only
  bool early_copies = false;  // cp.async lands when issued (else at its wait_group)
  bool lazy_streams = false;  // streams run their work only when waited for (streams.h)
};
void set_schedule(const Schedule& s);
Schedule schedule();
// "forward", "reverse", or a seed, then optionally ",early" (cp.async lands at issue) and
// ",lazy" (lazy streams), in any order.
Schedule parse_schedule(const std::string& text);

// ---- the running thread ----------------------------------------------------------------------
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
int lane_id();
int warp_id();

// Ends the launch with a failure (from inside a kernel): the message names the kernel,
// block and thread. Does not return: the thread's frames unwind, then the others'.
[[noreturn]] void kernel_fail(const std::string& what);

// __syncthreads at file:line (the call site: threads of a block waiting at two different
// barriers is undefined on the hardware, and reported here).
void sync_threads(const char* file, int line);

// A warp collective: every lane of the warp calls it with the same `what`; each passes
// in_bytes of input and receives out_bytes of output, and `fn` (run once, by the last lane
// to arrive) computes all 32 outputs from all 32 inputs (lane L's at ins + L * in_bytes).
using CollectiveFn = void (*)(const unsigned char* ins, unsigned char* outs, const void* ctx);
void warp_collective(const char* what, unsigned mask, const void* in, size_t in_bytes,
                     void* out, size_t out_bytes, CollectiveFn fn, const void* ctx = nullptr);

void sync_warp(unsigned mask = 0xffffffffu);

namespace detail {
struct ShflIn {
  unsigned char value[8];
  int src;
};
void shfl_fn(const unsigned char* ins, unsigned char* outs, const void* size);
}  // namespace detail

template <class T>
T shfl_from(const char* what, unsigned mask, T v, int src) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "a shuffle moves <= 8 bytes");
  static constexpr size_t kSize = sizeof(T);
  detail::ShflIn in{};
  std::memcpy(in.value, &v, sizeof(T));
  in.src = src;
  T out;
  warp_collective(what, mask, &in, sizeof in, &out, sizeof out, detail::shfl_fn, &kSize);
  return out;
}
// __any_sync: 1 on every lane if pred is non-zero on any lane of the warp, else 0.
int vote_any(unsigned mask, int pred);

template <class T>
T shfl(unsigned mask, T v, int src_lane) {  // __shfl_sync at width 32: lane src_lane % 32's v
  return shfl_from("__shfl_sync", mask, v, src_lane & 31);
}
template <class T>
T shfl_xor(unsigned mask, T v, int lane_mask) {
  return shfl_from("__shfl_xor_sync", mask, v, (lane_id() ^ lane_mask) & 31);
}
template <class T>
T shfl_down(unsigned mask, T v, unsigned delta) {
  const int src = lane_id() + int(delta);
  return shfl_from("__shfl_down_sync", mask, v, src < 32 ? src : lane_id());
}

// The block's dynamic shared memory (the launch's byte count), and whether [p, p + n) lies
// inside it.
unsigned char* dynamic_smem();
bool in_dynamic_smem(const void* p, size_t n);

// ---- cp.async (ptx.h issues through these) --------------------------------------------------
void async_copy(void* smem, const void* global, size_t bytes, size_t src_bytes);
void async_commit();
void async_wait(int pending);
// Shared-memory bytes the cp.async instructions of this process have filled so far (zero
// fills included), as a profiler counts a kernel's copies: tests hold a kernel to the data
// it should load, not only to its results.
uint64_t async_copy_bytes();

// ---- asynchronous register results (wgmma.mma_async: ptx.h issues through these) --------------
// A result that lands in a thread's registers later, as a warpgroup product's accumulators:
// `values` go to d[0 .. values.size()) at the wait that completes its group, and until then
// d holds NaN, so a read before the wait shows. `smem` lists (offset, bits) of the dynamic
// shared memory the product read: it must hold no cp.async in flight and no copy its writer
// has not fenced for the async proxy when the result is issued (below), and the tensor
// cores may read it until the product is done, so a change before the wait fails the
// kernel; so does a change of the A fragment
// registers `a` the product read (their values at issue in a_bits), which the tensor cores
// may also read until then.
struct AsyncResult {
  float* d = nullptr;
  std::vector<float> values;
  std::vector<std::pair<uint32_t, uint16_t>> smem;
  const uint32_t* a = nullptr;
  uint32_t a_bits[4] = {};
};
void async_result(AsyncResult r);
// The values this thread's latest result not yet landed holds for d (an accumulator chain of
// products issued before a wait reads it), or null.
const std::vector<float>* pending_result(const float* d);
void async_result_commit();           // wgmma.commit_group
void async_result_wait(int pending);  // wgmma.wait_group: all but `pending` groups land

// ---- the async proxy and register fences (wgmma's ordering rules, ptx.h) --------------------
// The tensor cores read shared memory through the async proxy, which sees what this block's
// threads wrote through the generic proxy (cp.async included) only once the writer has
// fenced it (fence.proxy.async) after it landed. The emulator tracks the bytes cp.async
// filled, by writer, until that writer's next fence; plain stores are not tracked.
void proxy_fence();  // fence.proxy.async: this thread's landed copies
// wgmma.fence: orders this thread's register accesses before the warpgroup products it issues
// next. The emulator's rule: a product that does not continue an accumulator chain in flight
// needs one since the thread started or last waited (wgmma.wait_group), the points after
// which a thread reads and rewrites its accumulators and A fragments.
void register_fence();
bool registers_fenced();

// ---- warpgroups: wgmma.mma_async is one instruction of four warps ------------------------------
// What the ISA asks the four warps of a warpgroup (warps 4g .. 4g + 3 of the block) to agree on
// for each product they issue together.
struct WarpgroupProduct {
  int n = 0;
  bool a_in_smem = false, trans_b = false, scale_d = false;
  uint64_t desc_a = 0, desc_b = 0;
  bool operator==(const WarpgroupProduct&) const = default;
};
// Recorded once per warp (from the product's warp collective). Fails the kernel where the
// block's threads do not form whole warpgroups, or where another warp of the warpgroup issued
// a different product as its same-numbered one; at the block's end the four warps must have
// issued as many (on the hardware the others would wait for the one that skipped).
void warpgroup_product(const WarpgroupProduct& p);

// ---- launches --------------------------------------------------------------------------------
// The dynamic shared memory a kernel may take (cudaFuncSetAttribute).
void set_max_dynamic_smem(const void* kernel, int bytes);

// Runs body() as every thread of every block now; returns cudaSuccess or the launch's
// error (also left for cudaGetLastError; a failure inside a kernel is printed and sticky,
// as a kernel fault is on the device).
cudaError_t run_launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem,
                       const std::function<void()>& body);
// A launch on a stream: the shape is checked now (a refusal is returned, as
// cudaGetLastError would), the blocks run when the stream runs its work (streams.h); a
// failure inside the kernel is then sticky.
cudaError_t issue_launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem,
                         cudaStream_t stream, std::function<void()> body);

// SR_LAUNCH's object in an emulated build: Launcher(...)(args...) launches.
template <class Body>
struct Launcher {
  const char* name;
  const void* kernel;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  Body body;
  template <class... Args>
  void operator()(Args&&... args) const {
    std::tuple<std::decay_t<Args>...> params(std::forward<Args>(args)...);  // by value
    issue_launch(name, kernel, grid, block, smem, stream,
                 [params = std::move(params), body = body]() mutable { std::apply(body, params); });
  }
};
template <class Body>
Launcher<Body> make_launcher(const char* name, const void* kernel, dim3 grid, dim3 block,
                             size_t smem, cudaStream_t stream, Body body) {
  return Launcher<Body>{name, kernel, grid, block, smem, stream, body};
}

// Sticky state of the emulated device (runtime.cpp reads it).
cudaError_t take_launch_error();     // the last launch error, cleared (cudaGetLastError)
cudaError_t peek_sticky_error();     // a kernel failure, which every later call returns
std::string last_failure();          // its message
// A fault found outside a kernel (a collective's buffer written while it ran): printed and
// made sticky as a kernel failure is.
void device_fault(const std::string& what);
void reset_device_for_tests();       // clears a sticky failure (the emulator's own tests)

}  // namespace speedrun::cuda::emu
