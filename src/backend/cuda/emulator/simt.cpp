// The fiber scheduler behind simt.h. One LaunchState per OS thread while a launch runs; a
// block's CUDA threads are fibers on stacks kept for the OS thread's next launch (each with
// a guard page, so an overflow faults instead of writing over its neighbour). On x86-64 a
// switch saves the callee-saved registers and the FP control words and swaps stacks (a few
// ns); elsewhere it is ucontext's swapcontext (a system call per switch, ~40x slower).
// Under AddressSanitizer every switch is announced to it (__sanitizer_*_switch_fiber), so
// that an emulated build with -DSPEEDRUN_SANITIZE=address checks the kernels' memory
// accesses as compute-sanitizer's memcheck would on a GPU.
#include "backend/cuda/emulator/simt.h"

#include "backend/cuda/emulator/gpu_profile.h"
#include "backend/cuda/emulator/streams.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SR_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SR_EMU_ASAN 1
#endif
#endif
#ifdef SR_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__)
#define SR_EMU_FAST_SWITCH 1
// sr_emu_switch(&save, next): pushes this context's callee-saved state, stores its stack
// pointer in *save and resumes the context whose stack pointer is `next`.
extern "C" void sr_emu_switch(void** save, void* next);
asm(R"(
.text
.globl sr_emu_switch
.type sr_emu_switch,@function
sr_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size sr_emu_switch,.-sr_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");
#endif

namespace speedrun::cuda::emu {

namespace {

// One execution context: a fiber's, or the scheduler's (whose stack AddressSanitizer
// learns when the first fiber starts).
struct Context {
#ifdef SR_EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
};

// Leaves `from` (its state saved there) for `to`; `from_ends`: never to be resumed.
inline void switch_to(Context& from, Context& to, bool from_ends = false) {
#ifdef SR_EMU_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(from_ends ? nullptr : &fake_stack, to.stack_bottom, to.stack_size);
#else
  (void)from_ends;
#endif
#ifdef SR_EMU_FAST_SWITCH
  sr_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
#ifdef SR_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
}

// Makes `c` start entry() on [stack, stack + bytes) when first switched to.
void prepare(Context& c, void* stack, size_t bytes, void (*entry)()) {
#ifdef SR_EMU_ASAN
  __asan_unpoison_memory_region(stack, bytes);  // the frames of the stack's last fiber
#endif
#ifdef SR_EMU_FAST_SWITCH
  // The frame sr_emu_switch pops: control words, r15..r12, rbx, rbp, then `entry` as the
  // return address at a 16-byte boundary (so entry starts with rsp = 8 mod 16, as after
  // a call) and a zero above it where entry's own return address would be.
  auto top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;
  *--sp = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp, rbx, r12..r15
  uint32_t csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  asm volatile("fnstcw %0" : "=m"(csr[1]));
  *--sp = uint64_t(csr[0]) | (uint64_t(csr[1] & 0xffff) << 32);
  c.sp = sp;
  c.stack_bottom = stack;
  c.stack_size = bytes;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
  c.stack_bottom = stack;
  c.stack_size = bytes;
#endif
}

constexpr size_t kStackBytes = size_t(256) << 10;
constexpr int kMaxThreads = 1024;
constexpr size_t kDefaultSmem = 48 << 10;    // without the attribute
constexpr size_t kMaxCollectiveIn = 544;     // bytes per lane (a wgmma's A and 128 accumulators)
constexpr size_t kMaxCollectiveOut = 512;

struct Copy {
  void* dst;
  const void* src;
  size_t bytes, src_bytes;
  bool queued;  // landing at its wait (else at issue)
};

enum class State { Runnable, AtBarrier, InCollective, Done };

struct Stack {
  unsigned char* base = nullptr;  // guard page first, then kStackBytes
  Stack() {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "speedrun CUDA emulator: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(p, page, PROT_NONE);
    base = static_cast<unsigned char*>(p);
  }
  ~Stack() { munmap(base, kStackBytes + size_t(sysconf(_SC_PAGESIZE))); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  void* top_region() const { return base + sysconf(_SC_PAGESIZE); }
};

struct Fiber {
  Context ctx;
  uint3 tid{};
  int linear = 0, warp = 0, lane = 0;
  State state = State::Runnable;
  bool started = false;
  std::vector<Copy> open;                 // cp.async since the last commit
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
  std::vector<AsyncResult> results_open;                 // wgmma since the last commit
  std::vector<std::vector<AsyncResult>> result_groups;   // committed, oldest first
  std::vector<std::pair<uint32_t, uint32_t>> unfenced;   // (offset, bytes) landed, not fenced
  bool registers_fenced = false;                          // wgmma.fence since start or wait
};

struct Warp {
  int size = 0, live = 0, arrived = 0;
  uint64_t gen = 0;
  const char* what = nullptr;
  size_t in_bytes = 0, out_bytes = 0;
  CollectiveFn fn = nullptr;
  const void* ctx = nullptr;
  unsigned char ins[32 * kMaxCollectiveIn];
  unsigned char outs[2][32 * kMaxCollectiveOut];
};

struct LaunchState {
  const char* name = "";
  dim3 grid, block;
  uint3 block_idx{};
  size_t smem = 0;
  unsigned char* smem_buf = nullptr;
  // Per byte of dynamic shared memory: 1 + the thread whose cp.async filled it and has not
  // fenced it for the async proxy since, or 0 (empty until a block's first copy lands).
  std::vector<uint16_t> smem_writer;
  // Per byte of dynamic shared memory: how many warpgroup products in flight read it (empty
  // until a block's first product), and how many cp.async copies in flight write it (empty
  // until a block's first copy is queued).
  std::vector<uint16_t> smem_readers, smem_copies;
  std::vector<std::vector<WarpgroupProduct>> warpgroup_log;  // per warp: its products so far
  const std::function<void()>* body = nullptr;
  Context scheduler;
  Fiber* current = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int live = 0, arrived = 0;
  const char* barrier_file = "";
  int barrier_line = 0;
  bool failed = false;
  std::string failure;
};

thread_local LaunchState* tls = nullptr;
thread_local std::vector<std::unique_ptr<Stack>> tls_stacks;

// A copy lands: its bytes are written and, until f fences them, f's unfenced writes.
void land(LaunchState& L, Fiber& f, const Copy& c) {
  const auto off = uint32_t(static_cast<unsigned char*>(c.dst) - L.smem_buf);
  if (c.queued)
    for (size_t i = off; i < off + c.bytes; ++i) --L.smem_copies[i];
  if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
  if (c.bytes > c.src_bytes)
    std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  if (L.smem_writer.empty()) L.smem_writer.assign(L.smem, 0);
  std::fill_n(L.smem_writer.begin() + off, c.bytes, uint16_t(f.linear + 1));
  f.unfenced.emplace_back(off, uint32_t(c.bytes));
}

std::mutex g_state_mutex;  // guards what follows
Schedule g_schedule;
bool g_schedule_read = false;
std::map<const void*, int> g_max_smem;
cudaError_t g_last_error = cudaSuccess;
cudaError_t g_sticky = cudaSuccess;
std::string g_failure;

Schedule current_schedule() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  if (!g_schedule_read) {
    g_schedule_read = true;
    if (const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_ORDER")) g_schedule = parse_schedule(e);
  }
  return g_schedule;
}

LaunchState& launch_state() {
  if (!tls || !tls->current) {
    std::fprintf(stderr,
                 "speedrun CUDA emulator: a device function was called outside a kernel launch\n");
    std::abort();
  }
  return *tls;
}

std::string dims(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

// Thrown through a fiber's frames when its launch has failed, so that they unwind (and
// free what they hold) before the fiber is left for good.
struct Abandon {};

// Back to the scheduler; returns when this fiber is resumed.
void yield(LaunchState& L, Fiber& f) {
  switch_to(f.ctx, L.scheduler);
  if (L.failed) throw Abandon{};  // resumed only to unwind
}

void finish_fiber(LaunchState& L, Fiber& f) {
  if (!f.results_open.empty() || !f.result_groups.empty())
    kernel_fail("this thread ended with warpgroup products (wgmma.mma_async) it never waited for "
                "(wgmma.commit_group, then wgmma.wait_group)");
  for (auto& g : f.groups)
    for (const Copy& c : g) land(L, f, c);
  for (const Copy& c : f.open) land(L, f, c);
  f.groups.clear();
  f.open.clear();
  f.state = State::Done;
  Warp& w = L.warps[size_t(f.warp)];
  --w.live;
  --L.live;
  if (w.arrived > 0)
    kernel_fail(std::string("this thread ended while its warp waits at ") + w.what +
                " (every lane must reach a full-mask warp collective)");
  if (L.live > 0 && L.arrived == L.live) {  // the threads still running all wait at a barrier
    L.arrived = 0;
    for (Fiber& o : L.fibers)
      if (o.state == State::AtBarrier) o.state = State::Runnable;
  }
}

void record_failure(LaunchState& L, const Fiber& f, const std::string& what) {
  if (L.failed) return;
  L.failed = true;
  L.failure = "block " + dims(L.block_idx) + " thread " + dims(f.tid) + ": " + what;
}

void fiber_entry() {
  LaunchState& L = *tls;
  Fiber& f = *L.current;
#ifdef SR_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &L.scheduler.stack_bottom, &L.scheduler.stack_size);
#endif
  try {
    (*L.body)();
    finish_fiber(L, f);
  } catch (const Abandon&) {
  } catch (const std::exception& e) {
    record_failure(L, f, std::string("exception: ") + e.what());
  }
  f.state = State::Done;
  switch_to(f.ctx, L.scheduler, true);  // never resumed
  std::abort();
}

std::vector<size_t> order_of(size_t n, const Schedule& s, std::mt19937_64& rng) {
  std::vector<size_t> v(n);
  std::iota(v.begin(), v.end(), size_t(0));
  if (s.order == Schedule::Order::Reverse) std::reverse(v.begin(), v.end());
  if (s.order == Schedule::Order::Shuffle) std::shuffle(v.begin(), v.end(), rng);
  return v;
}

std::string deadlock_report(const LaunchState& L) {
  int at_barrier = 0, done = 0;
  std::string warps;
  for (const Fiber& f : L.fibers) {
    if (f.state == State::AtBarrier) ++at_barrier;
    if (f.state == State::Done) ++done;
  }
  for (size_t w = 0; w < L.warps.size(); ++w)
    if (L.warps[w].arrived > 0)
      warps += " warp " + std::to_string(w) + ": " + std::to_string(L.warps[w].arrived) + " of " +
               std::to_string(L.warps[w].live) + " lanes at " + L.warps[w].what + ";";
  return "deadlock: " + std::to_string(at_barrier) + " threads wait at __syncthreads, " +
         std::to_string(done) + " have ended;" + warps +
         " no thread can go on (a barrier or warp collective not every thread reaches)";
}

void resume(LaunchState& L, Fiber& f) {
  f.started = true;
  L.current = &f;
  switch_to(L.scheduler, f.ctx);
  L.current = nullptr;
}

// After a failure: every fiber that started and has not ended resumes once, to unwind.
void unwind_all(LaunchState& L) {
  for (Fiber& f : L.fibers)
    if (f.started && f.state != State::Done) resume(L, f);
}

void run_block(LaunchState& L, uint3 bidx, const Schedule& s, std::mt19937_64& rng) {
  const int n = int(L.block.x * L.block.y * L.block.z);
  L.block_idx = bidx;
  L.fibers.assign(size_t(n), Fiber{});
  // The warps' state anew; their operand buffers (~50 KB each) are kept, not cleared.
  L.warps.resize(size_t((n + 31) / 32));
  for (Warp& w : L.warps) {
    w.size = w.live = w.arrived = 0;
    w.gen = 0;
    w.what = nullptr;
    w.in_bytes = w.out_bytes = 0;
    w.fn = nullptr;
    w.ctx = nullptr;
  }
  L.live = n;
  L.arrived = 0;
  if (L.smem) std::memset(L.smem_buf, 0xff, L.smem);
  L.smem_writer.clear();
  L.smem_readers.clear();
  L.smem_copies.clear();
  L.warpgroup_log.assign(L.warps.size(), {});
  while (tls_stacks.size() < size_t(n)) tls_stacks.push_back(std::make_unique<Stack>());
  for (int i = 0; i < n; ++i) {
    Fiber& f = L.fibers[size_t(i)];
    f.linear = i;
    f.started = false;
    f.tid = uint3{unsigned(i) % L.block.x, (unsigned(i) / L.block.x) % L.block.y,
                  unsigned(i) / (L.block.x * L.block.y)};
    f.warp = i / 32;
    f.lane = i % 32;
    Warp& w = L.warps[size_t(f.warp)];
    ++w.size;
    ++w.live;
    prepare(f.ctx, tls_stacks[size_t(i)]->top_region(), kStackBytes, fiber_entry);
  }
  std::vector<size_t> order = order_of(size_t(n), s, rng);
  while (L.live > 0 && !L.failed) {
    bool progressed = false;
    for (size_t i : order) {
      Fiber& f = L.fibers[i];
      if (f.state != State::Runnable) continue;
      resume(L, f);
      progressed = true;
      if (L.failed) return unwind_all(L);
    }
    if (L.live > 0 && !progressed) {
      L.failed = true;
      L.failure = "block " + dims(bidx) + ": " + deadlock_report(L);
      return unwind_all(L);
    }
    if (s.order == Schedule::Order::Shuffle) std::shuffle(order.begin(), order.end(), rng);
  }
  for (size_t w = 0; w < L.warpgroup_log.size(); ++w) {
    const size_t lead = w - w % 4;
    if (L.warpgroup_log[w].size() == L.warpgroup_log[lead].size()) continue;
    L.failed = true;
    L.failure = "block " + dims(bidx) + ": warp " + std::to_string(w) + " issued " +
                std::to_string(L.warpgroup_log[w].size()) + " warpgroup products (wgmma.mma_async) and warp " +
                std::to_string(lead) + " of its warpgroup " + std::to_string(L.warpgroup_log[lead].size()) +
                ": each one is an instruction of all four warps, so on the hardware the others wait for "
                "the warp that skipped it";
    return;
  }
}

}  // namespace

// ---- schedule -----------------------------------------------------------------------------------

Schedule parse_schedule(const std::string& text) {
  Schedule s;
  const size_t comma = text.find(',');
  const std::string order = text.substr(0, comma);
  for (size_t at = comma; at != std::string::npos;) {
    const size_t next = text.find(',', at + 1);
    const std::string flag = text.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    if (flag == "early") {
      s.early_copies = true;
    } else if (flag == "lazy") {
      s.lazy_streams = true;
    } else {
      std::fprintf(stderr, "speedrun CUDA emulator: SPEEDRUN_CUDA_EMULATOR_ORDER=%s: after a "
                           "comma only 'early' and 'lazy' are known\n", text.c_str());
      std::exit(2);
    }
    at = next;
  }
  if (order == "forward" || order.empty()) {
    s.order = Schedule::Order::Forward;
  } else if (order == "reverse") {
    s.order = Schedule::Order::Reverse;
  } else {
    char* end = nullptr;
    s.seed = std::strtoull(order.c_str(), &end, 10);
    if (!end || *end) {
      std::fprintf(stderr, "speedrun CUDA emulator: SPEEDRUN_CUDA_EMULATOR_ORDER=%s: give "
                           "forward, reverse or a seed number, optionally followed by ',early' "
                           "and ',lazy'\n",
                   text.c_str());
      std::exit(2);
    }
    s.order = Schedule::Order::Shuffle;
  }
  return s;
}

void set_schedule(const Schedule& s) {
  drain_all();  // work queued under the old model runs before the new one applies
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_schedule = s;
  g_schedule_read = true;
}
Schedule schedule() { return current_schedule(); }

// ---- the running thread ------------------------------------------------------------------------

const uint3& thread_idx() { return launch_state().current->tid; }
const uint3& block_idx() { return launch_state().block_idx; }
const dim3& block_dim() { return launch_state().block; }
const dim3& grid_dim() { return launch_state().grid; }
int lane_id() { return launch_state().current->lane; }
int warp_id() { return launch_state().current->warp; }

void kernel_fail(const std::string& what) {
  LaunchState& L = launch_state();
  record_failure(L, *L.current, what);
  throw Abandon{};
}

void sync_threads(const char* file, int line) {
  LaunchState& L = launch_state();
  Fiber& f = *L.current;
  if (L.arrived == 0) {
    L.barrier_file = file;
    L.barrier_line = line;
  } else if (line != L.barrier_line || std::strcmp(file, L.barrier_file) != 0) {
    kernel_fail(std::string("this thread is at the __syncthreads of ") + file + ":" + std::to_string(line) +
                " while others wait at " + L.barrier_file + ":" + std::to_string(L.barrier_line) +
                " (threads of a block meeting at different barriers is undefined on the hardware)");
  }
  ++L.arrived;
  if (L.arrived == L.live) {
    L.arrived = 0;
    for (Fiber& o : L.fibers)
      if (o.state == State::AtBarrier) o.state = State::Runnable;
    return;
  }
  f.state = State::AtBarrier;
  yield(L, f);
}

void warp_collective(const char* what, unsigned mask, const void* in, size_t in_bytes, void* out,
                     size_t out_bytes, CollectiveFn fn, const void* ctx) {
  LaunchState& L = launch_state();
  Fiber& f = *L.current;
  Warp& w = L.warps[size_t(f.warp)];
  if (mask != 0xffffffffu)
    kernel_fail(std::string(what) + " with mask " + std::to_string(mask) +
                ": this backend's kernels use full-warp masks only");
  if (w.size != 32)
    kernel_fail(std::string(what) + " in a warp of " + std::to_string(w.size) +
                " threads (the block size is not a multiple of 32)");
  if (w.live != 32)
    kernel_fail(std::string(what) + " after " + std::to_string(32 - w.live) +
                " lanes of this warp ended (a full mask needs all 32)");
  if (in_bytes > kMaxCollectiveIn || out_bytes > kMaxCollectiveOut)
    kernel_fail(std::string(what) + ": operands larger than the emulator holds");
  if (w.arrived == 0) {
    w.what = what;
    w.in_bytes = in_bytes;
    w.out_bytes = out_bytes;
    w.fn = fn;
    w.ctx = ctx;
  } else if (std::strcmp(w.what, what) != 0 || w.in_bytes != in_bytes || w.out_bytes != out_bytes) {
    kernel_fail(std::string("this lane is at ") + what + " while others of its warp wait at " +
                w.what + " (lanes of a warp must meet at the same collective)");
  }
  if (in_bytes) std::memcpy(w.ins + size_t(f.lane) * in_bytes, in, in_bytes);
  const int slot = int(w.gen & 1);
  ++w.arrived;
  if (w.arrived == w.live) {
    if (fn) fn(w.ins, w.outs[slot], ctx);
    w.arrived = 0;
    ++w.gen;
    for (int i = f.warp * 32; i < f.warp * 32 + 32; ++i)
      if (L.fibers[size_t(i)].state == State::InCollective) L.fibers[size_t(i)].state = State::Runnable;
  } else {
    f.state = State::InCollective;
    yield(L, f);
  }
  if (out_bytes) std::memcpy(out, w.outs[slot] + size_t(f.lane) * out_bytes, out_bytes);
}

void sync_warp(unsigned mask) { warp_collective("__syncwarp", mask, nullptr, 0, nullptr, 0, nullptr); }

void detail::shfl_fn(const unsigned char* ins, unsigned char* outs, const void* size) {
  const size_t n = *static_cast<const size_t*>(size);
  for (int lane = 0; lane < 32; ++lane) {
    const ShflIn* in = reinterpret_cast<const ShflIn*>(ins + size_t(lane) * sizeof(ShflIn));
    const ShflIn* src = reinterpret_cast<const ShflIn*>(ins + size_t(in->src) * sizeof(ShflIn));
    std::memcpy(outs + size_t(lane) * n, src->value, n);
  }
}

namespace {
void any_fn(const unsigned char* ins, unsigned char* outs, const void*) {
  int any = 0;
  for (int lane = 0; lane < 32; ++lane) {
    int v;
    std::memcpy(&v, ins + size_t(lane) * sizeof v, sizeof v);
    any |= v;
  }
  for (int lane = 0; lane < 32; ++lane) std::memcpy(outs + size_t(lane) * sizeof any, &any, sizeof any);
}
}  // namespace

int vote_any(unsigned mask, int pred) {
  const int in = pred != 0 ? 1 : 0;
  int out = 0;
  warp_collective("__any_sync", mask, &in, sizeof in, &out, sizeof out, any_fn);
  return out;
}

unsigned char* dynamic_smem() { return launch_state().smem_buf; }

bool in_dynamic_smem(const void* p, size_t n) {
  const LaunchState& L = launch_state();
  const auto* c = static_cast<const unsigned char*>(p);
  return L.smem_buf && c >= L.smem_buf && c + n <= L.smem_buf + L.smem;
}

// ---- cp.async -----------------------------------------------------------------------------------

namespace {
std::atomic<uint64_t> g_async_copy_bytes{0};
}  // namespace

uint64_t async_copy_bytes() { return g_async_copy_bytes.load(std::memory_order_relaxed); }

void async_copy(void* smem, const void* global, size_t bytes, size_t src_bytes) {
  g_async_copy_bytes.fetch_add(bytes, std::memory_order_relaxed);
  LaunchState& L = launch_state();
  if (!in_dynamic_smem(smem, bytes))
    kernel_fail("cp.async of " + std::to_string(bytes) +
                " bytes to an address outside the block's dynamic shared memory");
  if (reinterpret_cast<uintptr_t>(smem) % bytes || (src_bytes && reinterpret_cast<uintptr_t>(global) % bytes))
    kernel_fail("cp.async of " + std::to_string(bytes) + " bytes from or to an address not aligned to " +
                std::to_string(bytes));
  const auto off = size_t(static_cast<unsigned char*>(smem) - L.smem_buf);
  if (!L.smem_readers.empty())
    for (size_t i = off; i < off + bytes; ++i)
      if (L.smem_readers[i])
        kernel_fail("cp.async writes shared-memory byte " + std::to_string(i) +
                    ", which a warpgroup product in flight reads (issued, not yet waited for): the "
                    "copy may land before the tensor cores read it; wait for the product "
                    "(wgmma.wait_group, then a barrier where other threads issued it) before reloading");
  const bool early = current_schedule().early_copies;
  const Copy c{smem, global, bytes, src_bytes, !early};
  if (early) {
    land(L, *L.current, c);
  } else {
    if (L.smem_copies.empty()) L.smem_copies.assign(L.smem, 0);
    for (size_t i = off; i < off + bytes; ++i) ++L.smem_copies[i];
    L.current->open.push_back(c);
  }
}

void async_commit() {
  Fiber& f = *launch_state().current;
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}

void async_wait(int pending) {
  LaunchState& L = launch_state();
  Fiber& f = *L.current;
  while (f.groups.size() > size_t(pending)) {
    for (const Copy& c : f.groups.front()) land(L, f, c);
    f.groups.erase(f.groups.begin());
  }
}

// ---- asynchronous register results -------------------------------------------------------------

void async_result(AsyncResult r) {
  LaunchState& L = launch_state();
  Fiber& f = *L.current;
  if (!r.smem.empty() && L.smem_readers.empty()) L.smem_readers.assign(L.smem, 0);
  for (const auto& [off, bits] : r.smem)
    for (uint32_t byte = off; byte < off + 2; ++byte) {
      // A copy in flight (never under early landing) may land while the tensor cores read.
      if (byte < L.smem_copies.size() && L.smem_copies[byte])
        kernel_fail("wgmma.mma_async reads shared-memory byte " + std::to_string(byte) +
                    ", which a cp.async in flight (issued, not yet waited for) writes: the copy may land "
                    "while the tensor cores read");
      if (byte < L.smem_writer.size() && L.smem_writer[byte])
        kernel_fail("wgmma.mma_async reads shared-memory byte " + std::to_string(byte) + ", which thread " +
                    std::to_string(L.smem_writer[byte] - 1) +
                    " filled by cp.async and has not fenced since: the tensor cores read through the async "
                    "proxy, so each writer needs fence.proxy.async after its copies land, before the barrier");
      ++L.smem_readers[byte];
    }
  for (size_t i = 0; i < r.values.size(); ++i) r.d[i] = std::numeric_limits<float>::quiet_NaN();
  f.results_open.push_back(std::move(r));
}

const std::vector<float>* pending_result(const float* d) {
  Fiber& f = *launch_state().current;
  for (auto it = f.results_open.rbegin(); it != f.results_open.rend(); ++it)
    if (it->d == d) return &it->values;
  for (auto g = f.result_groups.rbegin(); g != f.result_groups.rend(); ++g)
    for (auto it = g->rbegin(); it != g->rend(); ++it)
      if (it->d == d) return &it->values;
  return nullptr;
}

void async_result_commit() {
  Fiber& f = *launch_state().current;
  f.result_groups.push_back(std::move(f.results_open));
  f.results_open.clear();
}

void async_result_wait(int pending) {
  LaunchState& L = launch_state();
  Fiber& f = *L.current;
  while (f.result_groups.size() > size_t(pending)) {
    for (const AsyncResult& r : f.result_groups.front()) {
      for (const auto& [off, bits] : r.smem) {
        uint16_t now;
        std::memcpy(&now, L.smem_buf + off, 2);
        if (now != bits)
          kernel_fail("the shared memory a warpgroup product reads (byte " + std::to_string(off) +
                      ") changed before the wgmma.wait_group that completes it");
        --L.smem_readers[off], --L.smem_readers[off + 1];
      }
      if (r.a && !std::equal(r.a_bits, r.a_bits + 4, r.a))
        kernel_fail("the A fragment registers a warpgroup product reads were rewritten before the "
                    "wgmma.wait_group that completes it (the tensor cores may read them until then)");
      std::copy(r.values.begin(), r.values.end(), r.d);
    }
    f.result_groups.erase(f.result_groups.begin());
  }
  f.registers_fenced = false;  // the thread now reads and rewrites what landed
}

// ---- the async proxy and register fences -------------------------------------------------------

void proxy_fence() {
  LaunchState& L = launch_state();
  Fiber& f = *L.current;
  const auto me = uint16_t(f.linear + 1);
  for (const auto& [off, n] : f.unfenced)
    for (uint32_t i = off; i < off + n; ++i)
      if (L.smem_writer[i] == me) L.smem_writer[i] = 0;  // unless another copy landed since
  f.unfenced.clear();
}

void register_fence() { launch_state().current->registers_fenced = true; }

bool registers_fenced() { return launch_state().current->registers_fenced; }

void warpgroup_product(const WarpgroupProduct& p) {
  LaunchState& L = launch_state();
  const int warp = L.current->warp, lead = warp - warp % 4;
  const int threads = int(L.block.x * L.block.y * L.block.z);
  if (threads % 128 != 0)
    kernel_fail("wgmma.mma_async in a block of " + std::to_string(threads) +
                " threads: a warpgroup is four whole warps (128 threads), so the block must hold whole ones");
  auto& mine = L.warpgroup_log[size_t(warp)];
  const size_t k = mine.size();
  for (int o = lead; o < lead + 4; ++o) {
    const auto& theirs = L.warpgroup_log[size_t(o)];
    if (o != warp && theirs.size() > k && !(theirs[k] == p))
      kernel_fail("warp " + std::to_string(warp) + "'s warpgroup product (wgmma.mma_async) number " +
                  std::to_string(k + 1) + " differs from warp " + std::to_string(o) +
                  "'s (shape, descriptors, transpose or scale-d): the four warps of a warpgroup issue "
                  "each one together, with the same operands");
  }
  mine.push_back(p);
}

// ---- launches -----------------------------------------------------------------------------------

void set_max_dynamic_smem(const void* kernel, int bytes) {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_max_smem[kernel] = bytes;
}

namespace {

// The launch's shape against an H200's limits and the sticky state: cudaSuccess, or the
// error (left for cudaGetLastError) a launch gets at once.
cudaError_t check_launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem) {
  auto refuse = [&](cudaError_t e, const std::string& why) {
    std::fprintf(stderr, "speedrun CUDA emulator: launch of %s refused: %s\n", name, why.c_str());
    std::lock_guard<std::mutex> lock(g_state_mutex);
    g_last_error = e;
    return e;
  };
  {
    std::lock_guard<std::mutex> lock(g_state_mutex);
    if (g_sticky != cudaSuccess) {
      g_last_error = g_sticky;
      return g_sticky;
    }
  }
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64)
    return refuse(cudaErrorInvalidConfiguration,
                  "block " + dims(uint3{block.x, block.y, block.z}) + " (at most 1024 threads, z <= 64)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535)
    return refuse(cudaErrorInvalidConfiguration,
                  "grid " + dims(uint3{grid.x, grid.y, grid.z}) + " (x < 2^31, y and z <= 65535, none 0)");
  size_t allowed = kDefaultSmem;
  {
    std::lock_guard<std::mutex> lock(g_state_mutex);
    auto it = g_max_smem.find(kernel);
    if (it != g_max_smem.end()) allowed = size_t(it->second);
  }
  // Never past the GPU's per-block limit, whatever a kernel was granted under another
  // profile (a test may switch; a process on a GPU cannot).
  allowed = std::min(allowed, gpu_profile().smem_per_block_optin);
  if (smem > allowed)
    return refuse(cudaErrorInvalidValue,
                  std::to_string(smem) + " bytes of dynamic shared memory, " + std::to_string(allowed) +
                      " allowed (cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raises it, to " +
                      std::to_string(gpu_profile().smem_per_block_optin) + " at most on " +
                      gpu_profile().name + ")");
  if (tls) {
    std::fprintf(stderr, "speedrun CUDA emulator: a kernel launched another kernel\n");
    std::abort();
  }
  return cudaSuccess;
}

// Runs a checked launch's blocks; a failure inside is printed and made sticky.
cudaError_t execute_launch(const char* name, dim3 grid, dim3 block, size_t smem,
                           const std::function<void()>& body) {
  {
    std::lock_guard<std::mutex> lock(g_state_mutex);
    if (g_sticky != cudaSuccess) return g_sticky;  // an earlier kernel faulted: nothing runs
  }
  const Schedule s = current_schedule();
  LaunchState L;
  L.name = name;
  L.grid = grid;
  L.block = block;
  L.smem = smem;
  L.body = &body;
  // Exactly smem bytes, so that a sanitizer sees a store past its end.
  struct AlignedFree {
    void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(128)); }
  };
  std::unique_ptr<unsigned char[], AlignedFree> smem_storage;
  if (smem) {
    smem_storage.reset(new (std::align_val_t(128)) unsigned char[smem]);
    L.smem_buf = smem_storage.get();
  }
  std::mt19937_64 rng(s.seed);
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<size_t> border = order_of(size_t(nblocks), s, rng);
  tls = &L;
  for (size_t b : border) {
    const uint3 bidx{unsigned(b % grid.x), unsigned((b / grid.x) % grid.y),
                     unsigned(b / (uint64_t(grid.x) * grid.y))};
    run_block(L, bidx, s, rng);
    if (L.failed) break;
  }
  tls = nullptr;
  if (!L.failed) return cudaSuccess;
  std::fprintf(stderr, "speedrun CUDA emulator: kernel %s failed: %s\n", name, L.failure.c_str());
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_sticky = g_last_error = cudaErrorLaunchFailure;
  g_failure = std::string(name) + ": " + L.failure;
  return cudaErrorLaunchFailure;
}

}  // namespace

cudaError_t run_launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem,
                       const std::function<void()>& body) {
  if (cudaError_t e = check_launch(name, kernel, grid, block, smem)) return e;
  return execute_launch(name, grid, block, smem, body);
}

namespace {

// SPEEDRUN_CUDA_EMULATOR_HANG=<text>: whether a launch of kernel `name` never ends (its
// name holds <text>), as a kernel deadlocked on the device: so that what ends a run waiting
// for one (the stall watchdog) is tested.
bool launch_hangs(const char* name) {
  static const std::string pattern = [] {
    const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_HANG");
    return std::string(e ? e : "");
  }();
  return !pattern.empty() && std::string_view(name).find(pattern) != std::string_view::npos;
}

}  // namespace

cudaError_t issue_launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t smem,
                         cudaStream_t stream, std::function<void()> body) {
  if (cudaError_t e = check_launch(name, kernel, grid, block, smem)) return e;
  if (launch_hangs(name)) {
    enqueue_endless(stream);
    return cudaSuccess;
  }
  enqueue(stream, [name, grid, block, smem, body = std::move(body)] {
    execute_launch(name, grid, block, smem, body);
  });
  return cudaSuccess;
}

cudaError_t take_launch_error() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  const cudaError_t e = g_last_error;
  g_last_error = g_sticky;
  return e;
}

cudaError_t peek_sticky_error() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  return g_sticky;
}

std::string last_failure() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  return g_failure;
}

void device_fault(const std::string& what) {
  std::fprintf(stderr, "speedrun CUDA emulator: %s\n", what.c_str());
  std::lock_guard<std::mutex> lock(g_state_mutex);
  if (g_sticky != cudaSuccess) return;  // the first fault is the one reported
  g_sticky = g_last_error = cudaErrorLaunchFailure;
  g_failure = what;
}

void reset_device_for_tests() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_sticky = g_last_error = cudaSuccess;
  g_failure.clear();
}

}  // namespace speedrun::cuda::emu
