// Streams and events of the CUDA emulator (streams.h). In the lazy model every stream is a
// queue of work numbered in issue order; an event is (stream, number), and waiting for it
// runs that stream's queue up to the number. One recursive lock guards the queues and is
// held while work runs, so device work runs on one host thread at a time (as kernels do
// anyway) and work may wait for other streams from inside (cudaStreamWaitEvent's item).
#include "backend/cuda/emulator/streams.h"

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/cuda/emulator/simt.h"

namespace speedrun::cuda::emu {

namespace {

struct Item {
  uint64_t seq;
  std::function<void()> work;
  Access access;
};

struct Queue {
  uint64_t id;
  bool blocking;
  std::deque<Item> items;
  uint64_t issued = 0;
};

// When an event's record ran (a record that has not run yet has ran == false).
struct Stamp {
  bool ran = false;
  double ms = 0;
};

struct Event {
  uint64_t stream = 0;  // 0: recorded on the legacy stream, or never
  uint64_t seq = 0;
  std::shared_ptr<Stamp> stamp = std::make_shared<Stamp>();
};

std::recursive_mutex g_m;
std::map<uint64_t, Queue*> g_queues;  // live streams by id (ids are never reused)
uint64_t g_next_id = 1;

std::mutex g_pinned_m;
std::map<const char*, size_t> g_pinned;  // start -> bytes

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool lazy() { return schedule().lazy_streams; }

HostCalls g_calls;          // guarded by g_m
uint64_t g_items_run = 0;   // items of lazy queues run so far; guarded by g_m

Queue* queue_of(cudaStream_t s) { return reinterpret_cast<Queue*>(s); }

// Runs stream `id`'s work numbered <= seq (all of it for UINT64_MAX). Caller holds g_m.
void run_to(uint64_t id, uint64_t seq) {
  for (;;) {
    auto it = g_queues.find(id);
    if (it == g_queues.end()) return;  // destroyed: it ran everything first
    Queue& q = *it->second;
    if (q.items.empty() || q.items.front().seq > seq) return;
    Item item = std::move(q.items.front());
    q.items.pop_front();
    ++g_items_run;
    item.work();  // may run other streams (a wait), never this one's later items
  }
}

bool overlap(const Access& a, const void* lo, size_t bytes) {
  const char* a0 = static_cast<const char*>(a.lo);
  const char* b0 = static_cast<const char*>(lo);
  return a0 < b0 + bytes && b0 < a0 + a.bytes;
}

// Whether item `it` may run before the Lands items `held` that precede it in its stream.
bool may_pass(const Item& it, const std::vector<const Item*>& held) {
  if (it.access.kind == Access::Marker) return true;
  if (it.access.kind == Access::Any) return held.empty();
  for (const Item* h : held)
    if (overlap(h->access, it.access.lo, it.access.bytes)) return false;
  return true;
}

void run_blocking_streams() {
  std::vector<uint64_t> ids;
  for (auto& [id, q] : g_queues)
    if (q->blocking) ids.push_back(id);
  for (uint64_t id : ids) run_to(id, UINT64_MAX);
}

bool all_queues_empty() {
  for (auto& [id, q] : g_queues)
    if (!q->items.empty()) return false;
  return true;
}

// Runs `wait` (the host waiting for the device) and counts it, as a drain where it ran queued
// work and left none. Caller holds g_m.
template <class Wait>
void host_wait(Wait&& wait) {
  const uint64_t before = g_items_run;
  wait();
  ++g_calls.waits;
  if (g_items_run != before && all_queues_empty()) ++g_calls.drains;
}

}  // namespace

void enqueue(cudaStream_t s, std::function<void()> work, Access access) {
  if (!lazy()) {
    work();
    return;
  }
  std::lock_guard<std::recursive_mutex> lock(g_m);
  if (s == nullptr) {
    run_blocking_streams();
    work();
    return;
  }
  Queue& q = *queue_of(s);
  q.items.push_back(Item{++q.issued, std::move(work), access});
}

cudaStream_t create_stream(bool blocking) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  auto* q = new Queue{g_next_id++, blocking, {}, 0};
  g_queues[q->id] = q;
  return reinterpret_cast<cudaStream_t>(q);
}

void destroy_stream(cudaStream_t s) {
  if (!s) return;
  std::lock_guard<std::recursive_mutex> lock(g_m);
  Queue* q = queue_of(s);
  run_to(q->id, UINT64_MAX);
  g_queues.erase(q->id);
  delete q;
}

void drain(cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  host_wait([s] {
    if (s == nullptr)
      run_blocking_streams();
    else
      run_to(queue_of(s)->id, UINT64_MAX);
  });
}

void drain_for(cudaStream_t s, const void* lo, size_t bytes) {
  if (s == nullptr) return drain(s);
  std::lock_guard<std::recursive_mutex> lock(g_m);
  const uint64_t id = queue_of(s)->id;
  // Each pass runs one item (or a prefix, in order) and starts again: running it may have
  // run this stream's items from the front (a wait for an event recorded here).
  for (;;) {
    auto found = g_queues.find(id);
    if (found == g_queues.end()) return;
    Queue& q = *found->second;
    std::vector<const Item*> held;  // Lands items left queued so far
    auto it = q.items.begin();
    for (; it != q.items.end(); ++it) {
      if (it->access.kind == Access::Lands && !overlap(it->access, lo, bytes) && may_pass(*it, held)) {
        held.push_back(&*it);
        continue;
      }
      break;
    }
    if (it == q.items.end()) return;  // only results nothing here needs
    if (!may_pass(*it, held)) {
      run_to(id, it->seq);  // in order, with the results before it
      continue;
    }
    Item item = std::move(*it);
    q.items.erase(it);
    ++g_items_run;
    item.work();
  }
}

void enqueue_endless(cudaStream_t s) {
  enqueue(s, [] {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  });
}

void drain_all() {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  host_wait([] {
    std::vector<uint64_t> ids;
    for (auto& [id, q] : g_queues) ids.push_back(id);
    for (uint64_t id : ids) run_to(id, UINT64_MAX);
  });
}

cudaEvent_t create_event() { return reinterpret_cast<cudaEvent_t>(new Event); }

void destroy_event(cudaEvent_t e) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  delete reinterpret_cast<Event*>(e);
}

void record_event(cudaEvent_t e, cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  Event& ev = *reinterpret_cast<Event*>(e);
  ev.stamp = std::make_shared<Stamp>();  // a new record: waits from now on see this one
  auto stamp = ev.stamp;
  enqueue(s, [stamp] {
    stamp->ms = now_ms();
    stamp->ran = true;
  }, {Access::Marker});
  if (s != nullptr && lazy()) {
    ev.stream = queue_of(s)->id;
    ev.seq = queue_of(s)->issued;
  } else {
    ev.stream = 0;
  }
}

void wait_event(cudaStream_t s, cudaEvent_t e) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  const Event& ev = *reinterpret_cast<Event*>(e);
  if (ev.stream == 0) return;  // ran already, or never recorded: nothing to wait for
  const uint64_t id = ev.stream, seq = ev.seq;
  enqueue(s, [id, seq] { run_to(id, seq); }, {Access::Marker});
}

void sync_event(cudaEvent_t e) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  const Event& ev = *reinterpret_cast<Event*>(e);
  host_wait([&ev] {
    if (ev.stream != 0) run_to(ev.stream, ev.seq);
  });
}

bool elapsed_ms(cudaEvent_t start, cudaEvent_t end, float* ms) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  const Stamp& a = *reinterpret_cast<Event*>(start)->stamp;
  const Stamp& b = *reinterpret_cast<Event*>(end)->stamp;
  if (!a.ran || !b.ran) return false;
  *ms = float(b.ms - a.ms);
  return true;
}

void register_pinned(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_pinned_m);
  g_pinned[static_cast<const char*>(p)] = bytes;
}

void unregister_pinned(const void* p) {
  std::lock_guard<std::mutex> lock(g_pinned_m);
  g_pinned.erase(static_cast<const char*>(p));
}

bool is_pinned(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_pinned_m);
  const char* c = static_cast<const char*>(p);
  auto it = g_pinned.upper_bound(c);
  if (it == g_pinned.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

HostCalls host_calls() {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  return g_calls;
}

void count_allocation(bool pinned, bool release) {
  std::lock_guard<std::recursive_mutex> lock(g_m);
  int64_t& n = pinned ? (release ? g_calls.pinned_frees : g_calls.pinned_allocs)
                      : (release ? g_calls.device_frees : g_calls.device_allocs);
  ++n;
}

}  // namespace speedrun::cuda::emu
