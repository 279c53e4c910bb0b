// A run that would wait forever ends instead (core/stall_watchdog.h): a wait past the limit
// names who waited, for what and how long, once; the default ends the process with status 1;
// a probe's failure (NCCL's background error) ends it at the next check, also with the limit
// off; a Comm's collectives are marked (a rank waiting for one that never comes ends); ranks
// waiting while rank 0 writes a checkpoint get a second per MiB more; a trainer on the CPU
// marks nothing of its own (host computation is never a stall); `speedrun train
// --stall-timeout` reaches it. The GPU's marks and a kernel that never ends are in
// test_cuda_model, a frozen rank and a lost NCCL link of an MPI job in test_mpi.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "core/stall_watchdog.h"
#include "dist/thread_comm.h"
#include "dist/watched_comm.h"
#include "fixtures.h"
#include "run_command.h"

using namespace speedrun;
using namespace speedrun::test;

namespace {

using Clock = StallWatchdog::Clock;
using std::chrono::milliseconds;

StallWatchdog::Options by_hand(double limit_s, std::string who = "") {
  return {.limit_s = limit_s, .who = std::move(who), .advice = "raise the limit",
          .failure_advice = "", .on_stall = {}, .thread = false};
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(StallWatchdog, AWaitPastTheLimitNamesWhoWhatAndHowLongOnce) {
  std::vector<std::string> stalls;
  StallWatchdog::Options o = by_hand(10, "rank 1 of 4");
  o.on_stall = [&](const std::string& m) { stalls.push_back(m); };
  StallWatchdog dog(o);
  const Clock::time_point t0 = Clock::now();
  const auto step = dog.watch("step 3/10 on cuda");
  const auto reduce = dog.watch("nccl all-reduce of 5 F32 values");
  EXPECT_FALSE(dog.check(t0 + milliseconds(9000)));
  EXPECT_TRUE(stalls.empty());
  EXPECT_TRUE(dog.check(t0 + milliseconds(11200)));
  ASSERT_EQ(stalls.size(), 1u);
  EXPECT_EQ(stalls[0].rfind("rank 1 of 4: no progress for 11 s (the limit is 10 s) while "
                            "waiting for: step 3/10 on cuda > nccl all-reduce of 5 F32 values. ",
                            0),
            0u)
      << stalls[0];
  EXPECT_TRUE(has(stalls[0], "Another rank may be frozen or gone")) << stalls[0];
  EXPECT_TRUE(has(stalls[0], "a kernel that does not end")) << stalls[0];
  EXPECT_TRUE(stalls[0].ends_with(". raise the limit")) << stalls[0];
  EXPECT_FALSE(dog.check(t0 + std::chrono::hours(1)));  // once: the process is ending
  EXPECT_EQ(stalls.size(), 1u);
  // A process of one has no other rank to blame.
  StallWatchdog alone(by_hand(10));
  const auto w = alone.watch("step 3/10 on cuda");
  const std::string m = alone.message(Clock::now() + std::chrono::hours(1));
  EXPECT_EQ(m.rfind("no progress for ", 0), 0u) << m;
  EXPECT_TRUE(has(m, ". The GPU did not finish its work")) << m;
  EXPECT_FALSE(has(m, "rank")) << m;
}

// A process that did not run itself for longer than the limit (stopped with SIGSTOP, its
// machine suspended) waited through no fault of another rank: its message says it was the
// one stopped, instead of blaming the others in the words they use for it.
TEST(StallWatchdog, AProcessThatDidNotRunSaysItWasTheOneStopped) {
  std::vector<std::string> stalls;
  StallWatchdog::Options o = by_hand(10, "rank 0 of 2");
  o.on_stall = [&](const std::string& m) { stalls.push_back(m); };
  const Clock::time_point t0 = Clock::now();
  StallWatchdog stopped(o), ran(o);
  const auto a = stopped.watch("mpi all-reduce of 5 F32 values");
  const auto b = ran.watch("mpi all-reduce of 5 F32 values");
  EXPECT_TRUE(stopped.check(t0 + milliseconds(30000), 28.0));  // 28 s without running
  EXPECT_TRUE(ran.check(t0 + milliseconds(30000), 4.0));       // less than the limit
  ASSERT_EQ(stalls.size(), 2u);
  EXPECT_EQ(stalls[0].rfind("rank 0 of 2: this process did not run for 28 s (it was stopped", 0),
            0u)
      << stalls[0];
  EXPECT_FALSE(has(stalls[0], "Another rank")) << stalls[0];
  EXPECT_TRUE(has(stalls[1], "Another rank may be frozen")) << stalls[1];
}

TEST(StallWatchdog, OnlyOpenMarksCountAndTheOldestSetsTheTime) {
  int stalls = 0;
  StallWatchdog::Options o = by_hand(10);
  o.on_stall = [&](const std::string&) { ++stalls; };
  StallWatchdog dog(o);
  const auto far = [] { return Clock::now() + std::chrono::hours(1); };
  EXPECT_EQ(dog.message(far()), "");
  EXPECT_FALSE(dog.check(far()));  // nothing waited for
  {
    auto a = dog.watch("a");
    StallWatchdog::Watch moved = std::move(a);  // the mark goes with the move
    a.end();                                    // the moved-from Watch closes nothing
    EXPECT_TRUE(has(dog.message(far()), "waiting for: a.")) << dog.message(far());
  }
  EXPECT_EQ(dog.message(far()), "");
  auto outer = dog.watch("outer");
  const Clock::time_point t_inner = Clock::now();
  auto inner = dog.watch("inner");
  EXPECT_TRUE(has(dog.message(far()), "waiting for: outer > inner.")) << dog.message(far());
  outer.end();
  // The inner mark alone: its own age, not the outer one's.
  EXPECT_FALSE(dog.check(t_inner + milliseconds(9000)));
  inner.end();
  EXPECT_FALSE(dog.check(far()));
  EXPECT_EQ(stalls, 0);
}

TEST(StallWatchdog, TheProcessesWatchdogMarksWaitsFromAnywhereWhileItLives) {
  const auto far = [] { return Clock::now() + std::chrono::hours(1); };
  {
    const auto none = StallWatchdog::watch_process_wait("nothing watches this");
  }
  {
    StallWatchdog dog(by_hand(10));
    StallWatchdog::set_process_watchdog(&dog);
    {
      const auto w = StallWatchdog::watch_process_wait("cuda rms_norm: kernel x");
      EXPECT_TRUE(has(dog.message(far()), "waiting for: cuda rms_norm: kernel x."))
          << dog.message(far());
    }
    EXPECT_EQ(dog.message(far()), "");
  }  // its destructor unsets it
  const auto after = StallWatchdog::watch_process_wait("nothing watches this either");
  StallWatchdog other(by_hand(10));
  EXPECT_EQ(other.message(far()), "");
}

TEST(StallWatchdog, ALimitOfZeroIsOff) {
  StallWatchdog dog(by_hand(0));
  EXPECT_FALSE(dog.on());
  const auto w = dog.watch("anything");
  EXPECT_EQ(dog.message(Clock::now() + std::chrono::hours(24)), "");
  EXPECT_FALSE(dog.check(Clock::now() + std::chrono::hours(24)));
}

TEST(StallWatchdog, ItsThreadEndsTheProcessWithStatusOneAndTheMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StallWatchdog dog({.limit_s = 0.05, .who = "rank 0 of 2", .advice = "",
                           .failure_advice = "", .on_stall = {}});
        const auto w = dog.watch("mpi barrier");
        std::this_thread::sleep_for(std::chrono::minutes(5));  // ended long before
      },
      testing::ExitedWithCode(1),
      "error: rank 0 of 2: no progress for [0-9]+ s \\(the limit is 0.05 s\\) while waiting "
      "for: mpi barrier\\.");
}

// NCCL learns in the background that a peer is gone and the collective it broke never ends:
// a probe that reports it ends the run at the next check, naming the failure and the open
// waits, with no limit to wait out.
TEST(StallWatchdog, AProbesFailureEndsTheRunAtOnceWithItsWordsAndTheOpenWaits) {
  std::vector<std::string> ended;
  StallWatchdog::Options o = by_hand(600, "rank 1 of 4");
  o.failure_advice = "resume it";
  o.on_stall = [&](const std::string& m) { ended.push_back(m); };
  StallWatchdog dog(o);
  std::string failure;
  int asked = 0;
  const auto probe = dog.add_probe([&] {
    ++asked;
    return failure;
  });
  const Clock::time_point t0 = Clock::now();
  const auto step = dog.watch("step 3/10 on cuda");
  const auto reduce = dog.watch("nccl all-reduce of 5 F32 values");
  EXPECT_FALSE(dog.check(t0));
  EXPECT_EQ(asked, 1);
  failure = "NCCL reported a failure of the ranks' links: remote process exited";
  EXPECT_TRUE(dog.check(t0 + milliseconds(1)));  // long before the limit
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0],
            "rank 1 of 4: NCCL reported a failure of the ranks' links: remote process exited; "
            "this process ends so that the job does not hang (it was waiting for: step 3/10 on "
            "cuda > nccl all-reduce of 5 F32 values). resume it");
  EXPECT_FALSE(dog.check(t0 + std::chrono::hours(1)));  // once
  EXPECT_EQ(ended.size(), 1u);
}

TEST(StallWatchdog, AProbeIsAskedWithTheLimitOffAndNeverAfterItsWatchEnds) {
  std::vector<std::string> ended;
  StallWatchdog::Options o = by_hand(0);  // --stall-timeout 0: waits are never a stall
  o.on_stall = [&](const std::string& m) { ended.push_back(m); };
  StallWatchdog dog(o);
  int asked = 0;
  {
    auto probe = dog.add_probe([&] {
      ++asked;
      return std::string("gone");
    });
    probe.end();
  }
  EXPECT_FALSE(dog.check(Clock::now()));
  EXPECT_EQ(asked, 0);
  const auto unmarked = dog.watch("a wait before any probe");  // no limit, no probe: not kept
  const auto throws = dog.add_probe([]() -> std::string { throw Error("cannot ask NCCL"); });
  const auto marked = dog.watch("nccl all-reduce");  // kept while a probe is asked
  EXPECT_TRUE(dog.check(Clock::now()));  // a probe that cannot ask has failed too
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0], "cannot ask NCCL; this process ends so that the job does not hang (it "
                      "was waiting for: nccl all-reduce)");
}

TEST(StallWatchdog, AProbesFailureEndsTheProcessWithTheLimitOff) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StallWatchdog dog({.limit_s = 0, .who = "rank 0 of 2", .advice = "",
                           .failure_advice = "", .on_stall = {}});
        const auto probe = dog.add_probe([] { return std::string("NCCL reported a failure"); });
        std::this_thread::sleep_for(std::chrono::minutes(5));  // ended long before
      },
      testing::ExitedWithCode(1),
      "error: rank 0 of 2: NCCL reported a failure; this process ends so that the job does "
      "not hang");
}

// A wait known to be long (the other ranks while rank 0 writes a checkpoint) carries a
// longer limit, which holds for every wait inside it while it is open.
TEST(StallWatchdog, AMarkWithALongerLimitHoldsForTheWaitsInsideIt) {
  int stalls = 0;
  StallWatchdog::Options o = by_hand(10);
  o.on_stall = [&](const std::string&) { ++stalls; };
  StallWatchdog dog(o);
  const Clock::time_point t0 = Clock::now();
  auto write = dog.watch("rank 0 to write a checkpoint", 100);
  const auto barrier = dog.watch("mpi barrier");
  EXPECT_TRUE(has(dog.message(t0 + milliseconds(50000)), "(the limit is 100 s)"))
      << dog.message(t0 + milliseconds(50000));
  EXPECT_FALSE(dog.check(t0 + milliseconds(50000)));
  write.end();  // the barrier alone: the watchdog's limit again
  EXPECT_TRUE(has(dog.message(t0 + milliseconds(50000)), "(the limit is 10 s)"));
  EXPECT_TRUE(dog.check(t0 + milliseconds(50000)));
  EXPECT_EQ(stalls, 1);
  // A shorter limit than the watchdog's is the watchdog's.
  StallWatchdog other(by_hand(10));
  const auto quick = other.watch("quick", 1);
  EXPECT_TRUE(has(other.message(Clock::now()), "(the limit is 10 s)"));
}

// Rank 0 waits in a barrier that rank 1 joins only once rank 0's watchdog has spoken: the
// wait is named by its Comm and collective, and the Comm's results pass through unchanged.
TEST(StallWatchdog, ACommsCollectivesAreMarked) {
  std::mutex m;
  std::string said;
  std::atomic<bool> fired{false};
  StallWatchdog dog({.limit_s = 0.2, .who = "rank 0 of 2", .advice = "", .failure_advice = "",
                     .on_stall = [&](const std::string& s) {
                       std::lock_guard<std::mutex> g(m);
                       said = s;
                       fired = true;
                     }});
  run_thread_ranks(2, [&](Comm& comm) {
    if (comm.rank() == 0) {
      WatchedComm watched(comm, dog);
      EXPECT_EQ(watched.rank(), 0);
      EXPECT_EQ(watched.size(), 2);
      watched.barrier();
      EXPECT_EQ(watched.all_reduce(1.0, ReduceOp::Sum), 3.0);
      EXPECT_EQ(watched.all_gather(std::vector<int64_t>{7}), (std::vector<int64_t>{7, 8}));
    } else {
      // Up to a minute for the watchdog's thread (it checks every 50 ms here).
      for (int i = 0; i < 6000 && !fired; ++i) std::this_thread::sleep_for(milliseconds(10));
      comm.barrier();
      comm.all_reduce(2.0, ReduceOp::Sum);
      comm.all_gather(std::vector<int64_t>{8});
    }
  });
  ASSERT_TRUE(fired) << "the watchdog never saw the barrier";
  EXPECT_TRUE(has(said, "rank 0 of 2: no progress for ")) << said;
  EXPECT_TRUE(has(said, "while waiting for: threads barrier")) << said;
}

// The end of a job of several ranks is one watched wait: a rank frozen before the end
// (here rank 1, until rank 0's watchdog has spoken) and a teardown that waits for a frozen
// rank (rank 0's release, until its watchdog has spoken) both end in its message.
TEST(StallWatchdog, TheEndOfAJobIsWatched) {
  for (const bool frozen_teardown : {false, true}) {
    std::mutex m;
    std::string said;
    std::atomic<bool> fired{false}, released{false};
    StallWatchdog dog({.limit_s = 0.2, .who = "rank 0 of 2", .advice = "", .failure_advice = "",
                       .on_stall = [&](const std::string& s) {
                         std::lock_guard<std::mutex> g(m);
                         said = s;
                         fired = true;
                       }});
    const auto until_fired = [&] {  // up to a minute (the watchdog checks every 50 ms here)
      for (int i = 0; i < 6000 && !fired; ++i) std::this_thread::sleep_for(milliseconds(10));
    };
    run_thread_ranks(2, [&](Comm& comm) {
      if (comm.rank() == 0) {
        end_job_together(comm, dog, [&] {
          if (frozen_teardown) until_fired();
          released = true;
        });
      } else {
        if (!frozen_teardown) until_fired();
        comm.barrier();
      }
    });
    ASSERT_TRUE(fired) << "the watchdog never saw the end, frozen teardown " << frozen_teardown;
    EXPECT_TRUE(released);
    EXPECT_TRUE(has(said, "rank 0 of 2: no progress for ")) << said;
    EXPECT_TRUE(has(said, "while waiting for: the job's ranks to end together")) << said;
  }
}

namespace {

// Another Comm's ranks and collectives, unchanged; `at_barrier` runs as a barrier begins.
class BarrierSpy final : public Comm {
 public:
  BarrierSpy(Comm& inner, std::function<void()> at_barrier)
      : inner_(inner), at_barrier_(std::move(at_barrier)) {}
  std::string name() const override { return inner_.name(); }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void all_reduce(Tensor t, ReduceOp op) override { inner_.all_reduce(t, op); }
  void all_gather(Tensor out, const Tensor& in) override { inner_.all_gather(out, in); }
  void all_gather_in_place(Tensor t) override { inner_.all_gather_in_place(t); }
  void broadcast(Tensor t, int root) override { inner_.broadcast(t, root); }
  void barrier() override {
    at_barrier_();
    inner_.barrier();
  }
  double all_reduce(double x, ReduceOp op) override { return inner_.all_reduce(x, op); }
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine) override {
    return inner_.all_gather(mine);
  }
  [[noreturn]] void abort(const std::string& why) override {
    inner_.abort(why);
    std::terminate();  // not reached: Comm::abort does not return (a virtual call hides it)
  }

 private:
  Comm& inner_;
  std::function<void()> at_barrier_;
};

// The number after `before` in `text` (NaN without one).
double number_after(const std::string& text, const std::string& before) {
  const size_t at = text.find(before);
  return at == std::string::npos ? std::nan("") : std::atof(text.c_str() + at + before.size());
}

// A micro run of `steps` steps (cooldown 1) into dir/run.
TrainConfig short_run(const TempDir& dir, int64_t steps) {
  TrainConfig c = micro_run(dir / "run");
  c.schedule.steps = steps;
  c.schedule.cooldown = 1;
  return c;
}

}  // namespace

// Rank 0 writes a checkpoint (or the step-0 or final weights) while the other ranks wait in
// a barrier: that wait is work being done elsewhere, not a stall, so its limit is the
// watchdog's plus a second per MiB written (a disk slower than 1 MiB/s is taken for a stall).
TEST(StallWatchdog, RanksWaitingForRankZerosWritesHaveTheLimitPlusASecondPerMiB) {
  TempDir dir{"test_stall_checkpoint"};
  const ShardFiles data = synthetic_shards(dir / "data", 60000, 3000);
  TrainConfig c = short_run(dir, 4);
  c.save_every = 2;
  const double limit = 0.001;
  std::vector<std::string> waits;
  std::vector<bool> early;
  run_thread_ranks(2, [&](Comm& comm) {
    CpuBackend be(1);
    if (comm.rank() == 0) {
      Trainer(be, comm, c, data.train, data.val).run();
      return;
    }
    StallWatchdog dog({.limit_s = limit, .who = "rank 1 of 2", .advice = "", .failure_advice = "",
                       .on_stall = {}, .thread = false});
    BarrierSpy spy(comm, [&] {
      const Clock::time_point now = Clock::now();
      waits.push_back(dog.message(now));
      const double in_force = number_after(waits.back(), "(the limit is ");
      early.push_back(dog.check(now + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(0.9 * in_force))));
    });
    WatchedComm watched(spy, dog);
    Trainer t(be, watched, c, data.train, data.val);
    t.watchdog = &dog;
    t.run();
  });
  int checkpoints = 0, weights = 0;
  for (size_t i = 0; i < waits.size(); ++i) {
    EXPECT_FALSE(early[i]) << waits[i];
    // The step-0 and final weights (no optimizer state): the same grace for their size.
    for (const char* w : {"the step-0 weights (", "the final weights ("}) {
      const double mib = number_after(waits[i], w);
      if (std::isnan(mib)) continue;
      ++weights;
      EXPECT_GT(mib, 0.001) << waits[i];
      EXPECT_NEAR(number_after(waits[i], "(the limit is "), limit + mib, 0.01) << waits[i];
    }
    if (!has(waits[i], "checkpoint")) continue;
    ++checkpoints;
    EXPECT_TRUE(has(waits[i], "while waiting for: rank 0 to write the checkpoint of step ") &&
                has(waits[i], " > threads barrier"))
        << waits[i];
    const double mib = number_after(waits[i], "the checkpoint of step 2 (");
    if (std::isnan(mib)) continue;  // step 4's
    EXPECT_GT(mib, 0.01) << waits[i];
    EXPECT_NEAR(number_after(waits[i], "(the limit is "), limit + mib, 0.01) << waits[i];
  }
  EXPECT_EQ(checkpoints, 2);  // steps 2 and 4
  EXPECT_EQ(weights, 2);      // steps 0 and 4
}

TEST(StallWatchdog, ATrainerOnTheCpuMarksNoWaitOfItsOwn) {
  TempDir dir{"test_stall"};
  const ShardFiles data = synthetic_shards(dir / "data", 60000, 3000);
  TrainConfig c = short_run(dir, 3);
  c.val_every = 2;
  CpuBackend be(1);
  const std::vector<std::string> waits = waits_at_log_lines(be, c, data);
  ASSERT_GE(waits.size(), 6u);  // the run and model lines, 3 steps, 2 validations, saved
  for (const std::string& w : waits) EXPECT_EQ(w, "");
}

TEST(StallWatchdog, TrainTakesTheLimitAndRefusesANegativeOne) {
  const Outcome help = run_cli("train --help");
  EXPECT_TRUE(has(help.out, "--stall-timeout SECONDS=600")) << help.out;
  const Outcome bad = run_cli("train --stall-timeout -1 --steps 1");
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_TRUE(has(bad.out, "--stall-timeout -1: must be >= 0")) << bad.out;
}
