// StallWatchdog: ends a process that waits too long for something outside it, instead of
// letting it hang forever. What a training process can wait for without end: another rank
// in a collective (a rank frozen, swapped out or gone without its process ending, a lost
// network link: MPI and NCCL both wait for it forever) and a GPU finishing its queued work
// (a kernel that does not end). Code marks such a wait with watch(); a thread checks the
// open marks every quarter of the limit (at most every second) and, once the oldest has
// been open longer than the limit, calls on_stall with a message naming who waited, what
// for, how long and what to do.
//
// The default on_stall prints "error: <message>" on stderr and ends the process with exit
// status 1 at once (std::_Exit: the waiting thread cannot be woken, so nothing unwinds). A
// launcher then ends the job's other ranks (mpirun does; srun with --kill-on-bad-exit=1),
// and any rank left waiting for this one is ended by its own watchdog.
//
// Host computation is never marked: a long step on a CPU is work, not a stall. Marks nest
// (a collective inside a GPU step): the oldest open mark sets the time, the message names
// them all, outermost first. Thread-safe; marks may be opened on any thread.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace speedrun {

class StallWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  using OnStall = std::function<void(const std::string& message)>;

  struct Options {
    double limit_s = 0;   // seconds a mark may stay open; <= 0: off (watch() marks nothing)
    std::string who;      // this process in messages: "rank 1 of 8", or "" alone
    std::string advice;   // appended to the message: how to change the limit
    OnStall on_stall;     // empty: print and exit (exit_process)
    bool thread = true;   // false: nothing checks but check() itself (tests)
  };

  // A wait, open from watch() until it is destroyed (or moved from and then destroyed).
  class Watch {
   public:
    Watch() = default;
    Watch(Watch&& o) noexcept : dog_(o.dog_), id_(o.id_) { o.dog_ = nullptr; }
    Watch& operator=(Watch&& o) noexcept;
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    ~Watch() { end(); }
    void end();  // closes the mark now (idempotent)

   private:
    friend class StallWatchdog;
    Watch(StallWatchdog* dog, uint64_t id) : dog_(dog), id_(id) {}
    StallWatchdog* dog_ = nullptr;
    uint64_t id_ = 0;
  };

  explicit StallWatchdog(Options o);
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  bool on() const { return o_.limit_s > 0; }
  double limit_s() const { return o_.limit_s; }
  // Opens a mark: `what` is waited for from now until the Watch ends.
  [[nodiscard]] Watch watch(std::string what);
  // Calls on_stall once (the first time only) if the oldest open mark is older than the
  // limit at `now`; returns whether it did. The thread calls it with Clock::now().
  bool check(Clock::time_point now);
  // The message check() would give at `now` (also when within the limit; "" with no mark).
  std::string message(Clock::time_point now) const;

  // The default on_stall: "error: <message>" on stderr, then std::_Exit(1).
  [[noreturn]] static void exit_process(const std::string& message);

  // The process's watchdog, for code far from the one that made it (a backend that waits
  // after each op in a debugging mode names the op): set while a run is watched, cleared by
  // passing null or by the watchdog's destructor.
  static void set_process_watchdog(StallWatchdog* dog);
  // A mark of the process's watchdog; an empty Watch where none is set.
  [[nodiscard]] static Watch watch_process_wait(std::string what);

 private:
  struct Mark {
    std::string what;
    Clock::time_point since;
  };
  void close(uint64_t id);
  void loop();
  std::string message_locked(Clock::time_point now) const;

  Options o_;
  mutable std::mutex m_;
  std::condition_variable wake_;
  std::map<uint64_t, Mark> open_;  // by id: ids grow with time, so the first is the oldest
  uint64_t next_id_ = 1;
  bool fired_ = false, stopping_ = false;
  std::thread thread_;
};

}  // namespace speedrun
