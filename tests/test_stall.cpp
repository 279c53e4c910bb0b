// A run that would wait forever ends instead (core/stall_watchdog.h): a wait past the limit
// names who waited, for what and how long, once; the default ends the process with status 1;
// a Comm's collectives are marked (a rank waiting for one that never comes ends); a trainer
// on the CPU marks nothing of its own (host computation is never a stall); `speedrun train
// --stall-timeout` reaches it. The GPU's marks are in test_cuda_backend, a frozen rank of an
// MPI job in test_mpi.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "backend/factory.h"
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
          .on_stall = {}, .thread = false};
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
        StallWatchdog dog({.limit_s = 0.05, .who = "rank 0 of 2", .advice = "", .on_stall = {}});
        const auto w = dog.watch("mpi barrier");
        std::this_thread::sleep_for(std::chrono::minutes(5));  // ended long before
      },
      testing::ExitedWithCode(1),
      "error: rank 0 of 2: no progress for [0-9]+ s \\(the limit is 0.05 s\\) while waiting "
      "for: mpi barrier\\.");
}

// Rank 0 waits in a barrier that rank 1 joins only once rank 0's watchdog has spoken: the
// wait is named by its Comm and collective, and the Comm's results pass through unchanged.
TEST(StallWatchdog, ACommsCollectivesAreMarked) {
  std::mutex m;
  std::string said;
  std::atomic<bool> fired{false};
  StallWatchdog dog({.limit_s = 0.2, .who = "rank 0 of 2", .advice = "",
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

TEST(StallWatchdog, ATrainerOnTheCpuMarksNoWaitOfItsOwn) {
  TempDir dir{"test_stall"};
  const ShardFiles data = synthetic_shards(dir / "data", 60000, 3000);
  TrainConfig c = micro_run(dir / "run");
  c.schedule.steps = 3;
  c.schedule.cooldown = 1;
  c.val_every = 2;
  BackendOptions bo;
  bo.device = DeviceChoice::CPU;
  bo.threads = 1;
  const auto be = make_backend(bo);
  const std::vector<std::string> waits = waits_at_log_lines(*be, c, data);
  ASSERT_GE(waits.size(), 5u);  // the model line, 3 steps, 2 validations, saved
  for (const std::string& w : waits) EXPECT_EQ(w, "");
}

TEST(StallWatchdog, TrainTakesTheLimitAndRefusesANegativeOne) {
  const Outcome help = run_cli("train --help");
  EXPECT_TRUE(has(help.out, "--stall-timeout SECONDS=600")) << help.out;
  const Outcome bad = run_cli("train --stall-timeout -1 --steps 1");
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_TRUE(has(bad.out, "--stall-timeout -1: must be >= 0")) << bad.out;
}
