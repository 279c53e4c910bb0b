#include "dist/thread_comm.h"

#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/bf16.h"
#include "core/error.h"

namespace speedrun {

struct ThreadWorld {
  explicit ThreadWorld(int n) : size(n), slots(size_t(n)), values(size_t(n)) {}
  const int size;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  bool aborted = false;
  std::string abort_message;
  std::vector<const void*> slots;  // each rank's buffer in the collective under way
  std::vector<double> values;      // each rank's double in all_reduce(double)

  [[noreturn]] void throw_aborted(int rank) {
    fail("rank ", rank, " of ", size, " stops: ", abort_message);
  }
  // Waits until every rank has arrived; throws if the world was aborted.
  void wait(int rank) {
    std::unique_lock<std::mutex> lock(m);
    if (aborted) throw_aborted(rank);
    const uint64_t g = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    cv.wait(lock, [&] { return generation != g || aborted; });
    if (aborted) throw_aborted(rank);
  }
  void abort(int rank, const std::string& why) {
    std::lock_guard<std::mutex> lock(m);
    if (!aborted) {
      aborted = true;
      abort_message = fmt::format("rank {} failed: {}", rank, why);
    }
    cv.notify_all();
  }
};

namespace {

void check_host(const char* op, const Tensor& t) {
  check(t.device == Device::CPU, "ThreadComm ", op, ": buffers must be host memory (cpu backend)");
}

// out[i] = sum over ranks of slot[r][i] in rank order, in T (BF16 summed in float).
template <class T>
void reduce_into(std::vector<uint8_t>& out, const std::vector<const void*>& slots, int64_t n,
                 bool mean) {
  out.resize(size_t(n) * sizeof(T));
  T* o = reinterpret_cast<T*>(out.data());
  const int W = int(slots.size());
  for (int64_t i = 0; i < n; ++i) {
    T s = static_cast<const T*>(slots[0])[i];
    for (int r = 1; r < W; ++r) s += static_cast<const T*>(slots[size_t(r)])[i];
    o[i] = mean ? s / T(W) : s;
  }
}

void reduce_bf16(std::vector<uint8_t>& out, const std::vector<const void*>& slots, int64_t n,
                 bool mean) {
  out.resize(size_t(n) * 2);
  uint16_t* o = reinterpret_cast<uint16_t*>(out.data());
  const int W = int(slots.size());
  for (int64_t i = 0; i < n; ++i) {
    float s = bf16_to_float(static_cast<const uint16_t*>(slots[0])[i]);
    for (int r = 1; r < W; ++r) s += bf16_to_float(static_cast<const uint16_t*>(slots[size_t(r)])[i]);
    o[i] = bf16_bits(mean ? s / float(W) : s);
  }
}

}  // namespace

ThreadComm::ThreadComm(std::shared_ptr<ThreadWorld> world, int rank)
    : world_(std::move(world)), rank_(rank) {
  check(rank >= 0 && rank < world_->size, "ThreadComm: rank ", rank, " outside a world of ",
        world_->size);
}

int ThreadComm::size() const { return world_->size; }

void ThreadComm::all_reduce(Tensor t, ReduceOp op) {
  check_host("all_reduce", t);
  ThreadWorld& w = *world_;
  w.slots[size_t(rank_)] = t.data;
  w.wait(rank_);
  std::vector<uint8_t> mine;
  const bool mean = op == ReduceOp::Mean;
  switch (t.dtype) {
    case DType::F32: reduce_into<float>(mine, w.slots, t.numel(), mean); break;
    case DType::F64: reduce_into<double>(mine, w.slots, t.numel(), mean); break;
    case DType::BF16: reduce_bf16(mine, w.slots, t.numel(), mean); break;
    default: abort(fmt::format("ThreadComm all_reduce: dtype {} is not supported", dtype_name(t.dtype)));
  }
  w.wait(rank_);  // every rank has read every buffer: now each may overwrite its own
  std::memcpy(t.data, mine.data(), mine.size());
}

void ThreadComm::all_gather(Tensor out, const Tensor& in) {
  check_host("all_gather", in);
  check_host("all_gather", out);
  ThreadWorld& w = *world_;
  check(out.dtype == in.dtype && out.numel() == in.numel() * w.size, "ThreadComm all_gather: out ",
        out.shape_str(), " must hold ", w.size, " x in ", in.shape_str());
  w.slots[size_t(rank_)] = in.data;
  w.wait(rank_);
  const size_t bytes = in.bytes();
  for (int r = 0; r < w.size; ++r)
    std::memcpy(static_cast<char*>(out.data) + size_t(r) * bytes, w.slots[size_t(r)], bytes);
  w.wait(rank_);
}

void ThreadComm::all_gather_in_place(Tensor t) {
  check_host("all_gather_in_place", t);
  ThreadWorld& w = *world_;
  const size_t bytes = part_bytes(t, "ThreadComm");
  w.slots[size_t(rank_)] = t.data;
  w.wait(rank_);
  // Rank r reads part q of rank q's buffer, which rank q does not write here.
  for (int q = 0; q < w.size; ++q)
    if (q != rank_)
      std::memcpy(static_cast<char*>(t.data) + size_t(q) * bytes,
                  static_cast<const char*>(w.slots[size_t(q)]) + size_t(q) * bytes, bytes);
  w.wait(rank_);
}

void ThreadComm::broadcast(Tensor t, int root) {
  check_host("broadcast", t);
  ThreadWorld& w = *world_;
  check(root >= 0 && root < w.size, "ThreadComm broadcast: root ", root, " outside a world of ",
        w.size);
  w.slots[size_t(rank_)] = t.data;
  w.wait(rank_);
  if (rank_ != root) std::memcpy(t.data, w.slots[size_t(root)], t.bytes());
  w.wait(rank_);
}

void ThreadComm::barrier() { world_->wait(rank_); }

double ThreadComm::all_reduce(double x, ReduceOp op) {
  ThreadWorld& w = *world_;
  w.values[size_t(rank_)] = x;
  w.wait(rank_);
  double s = w.values[0];
  for (int r = 1; r < w.size; ++r) s += w.values[size_t(r)];
  w.wait(rank_);
  return op == ReduceOp::Mean ? s / double(w.size) : s;
}

std::vector<int64_t> ThreadComm::all_gather(const std::vector<int64_t>& mine) {
  ThreadWorld& w = *world_;
  w.slots[size_t(rank_)] = &mine;
  w.wait(rank_);
  std::vector<int64_t> out;
  for (int r = 0; r < w.size; ++r) {
    const auto& v = *static_cast<const std::vector<int64_t>*>(w.slots[size_t(r)]);
    if (v.size() != mine.size())
      abort(fmt::format("all_gather: rank {} gave {} integers, rank {} gave {}", r, v.size(),
                        rank_, mine.size()));
    out.insert(out.end(), v.begin(), v.end());
  }
  w.wait(rank_);
  return out;
}

void ThreadComm::abort(const std::string& why) {
  world_->abort(rank_, why);
  throw Error(why);
}

void run_thread_ranks(int world, const std::function<void(Comm&)>& fn) {
  check(world >= 1, "run_thread_ranks: world ", world, " must be >= 1");
  auto w = std::make_shared<ThreadWorld>(world);
  std::mutex m;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ThreadComm comm(w, r);
      try {
        fn(comm);
      } catch (const std::exception& e) {
        {
          std::lock_guard<std::mutex> lock(m);
          if (!first) first = std::current_exception();
        }
        w->abort(r, e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace speedrun
