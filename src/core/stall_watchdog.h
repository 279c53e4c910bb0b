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
// them all, outermost first. A mark may carry a longer limit of its own, for a wait known
// to be long (the other ranks waiting while rank 0 writes a checkpoint); while it is open
// the largest open limit holds for every mark.
//
// Some failures are known without waiting out a limit: NCCL learns in the background that
// a peer is gone or a network link failed, and the collective it broke never ends. Such a
// source is a probe (add_probe), asked at every check, also with the limit off; the first
// probe to report a failure ends the process as a stall does, with the probe's words and
// the open marks. Thread-safe; marks and probes may be added on any thread.
#pragma once
#include <atomic>
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
    double limit_s = 0;   // seconds a mark may stay open; <= 0: no limit (and no marks kept
                          // unless a probe is asked)
    std::string who;      // this process in messages: "rank 1 of 8", or "" alone
    std::string advice;   // appended to a stall's message: how to change the limit
    std::string failure_advice;  // appended to a probe's failure: what to do next
    OnStall on_stall;     // a stall's or a probe's failure; empty: print and exit
                          // (exit_process)
    bool thread = true;   // false: nothing checks but check() itself (tests)
  };
  // A check of something the process depends on, called on the watchdog's thread: "" while
  // all is well, else what failed (a clause: "NCCL reported ..."). Must not throw or block;
  // what it reads must stay valid until its Watch ends.
  using Probe = std::function<std::string()>;

  // A wait (or a probe), open from watch() (add_probe()) until it is destroyed (or moved
  // from and then destroyed).
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

  bool on() const { return o_.limit_s > 0; }  // whether the limit is on
  // Whether marks are kept: with the limit on, or while a probe is asked (its failure's
  // message names the open waits).
  bool watching() const { return on() || probe_count_ > 0; }
  double limit_s() const { return o_.limit_s; }
  // Opens a mark: `what` is waited for from now until the Watch ends (an empty Watch unless
  // watching()). limit_s > the watchdog's: a longer limit, holding for every open mark while
  // this one is open.
  [[nodiscard]] Watch watch(std::string what, double limit_s = 0);
  // Asks `probe` at every check from now until the Watch ends; starts the thread (with
  // Options::thread) even where the limit is off.
  [[nodiscard]] Watch add_probe(Probe probe);
  // Calls on_stall once (the first time only) if a probe reports a failure, or else if the
  // oldest open mark is older than the limit in force at `now`; returns whether it did. The
  // thread calls it with Clock::now().
  // `unscheduled_s`: how long this process itself did not run just before (the thread's
  // sleep overran by that much: it was stopped, or its machine suspended); a stall that
  // happened then is this process's, not another rank's, and its message says so.
  bool check(Clock::time_point now, double unscheduled_s = 0);
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
    double limit_s;  // the limit while it is open (>= the watchdog's)
  };
  void close(uint64_t id);
  void start_thread_locked();
  void loop();
  double limit_locked() const;  // the limit in force: the largest open one
  std::string chain_locked() const;
  std::string message_locked(Clock::time_point now, double unscheduled_s = 0) const;
  std::string failure_message_locked(const std::string& failure) const;

  Options o_;
  mutable std::mutex m_;
  std::condition_variable wake_;
  std::map<uint64_t, Mark> open_;  // by id: ids grow with time, so the first is the oldest
  std::map<uint64_t, Probe> probes_;  // ids from the same sequence as the marks'
  std::atomic<int> probe_count_{0};  // probes_.size(), read without the lock
  uint64_t next_id_ = 1;
  bool fired_ = false, stopping_ = false;
  std::thread thread_;
};

}  // namespace speedrun
