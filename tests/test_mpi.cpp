// Several processes through MPI on this machine (mpirun over loopback): the communicator's
// collectives, distributed Muon and each rank's data slices (tests/mpi/mpi_selftest.cpp);
// `speedrun train` on 2 ranks x 1 sequence against 1 rank x 2 step by step; a resumed
// 2-rank run continuing bit-identically; a failing rank ending the job with its message.
// On GPUs, through NCCL: its collectives against MPI's, and `speedrun train --device cuda`
// on 2 ranks against 1 rank of 2 micro-batches, where 2 GPUs are visible or in the CUDA
// emulator's build (each rank a process with an emulated GPU of its own, NCCL emulated over
// MPI: src/backend/cuda/emulator/nccl.cpp).
// Skipped, saying so, when this build has no MPI or mpirun is missing.
#include <gtest/gtest.h>

#include <signal.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/shard.h"
#include "backend/factory.h"
#include "dist/launch.h"
#include "fixtures.h"
#include "run_command.h"

using namespace speedrun;
using namespace speedrun::test;

namespace {

// mpirun as root needs --allow-run-as-root; more ranks than cores need --oversubscribe.
std::string mpirun(int ranks, int timeout_s = 600) {
  return "timeout " + std::to_string(timeout_s) +
         " mpirun --allow-run-as-root --oversubscribe --bind-to none -np " +
         std::to_string(ranks) + " ";
}

bool skip_reason(std::string* why) {
  if (!mpi_built()) {
    *why = "this build has no MPI (install libopenmpi-dev and rebuild)";
    return true;
  }
  if (run_shell("command -v mpirun").code != 0) {
    *why = "mpirun is not installed (apt-get install openmpi-bin)";
    return true;
  }
  return false;
}

std::vector<double> losses(const fs::path& metrics, const char* key) {
  std::vector<double> out;
  std::ifstream f(metrics);
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains(key)) out.push_back(j[key].get<double>());
  }
  return out;
}

class Mpi : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (skip_reason(&why)) GTEST_SKIP() << why;
  }
  TempDir dir{"test_mpi"};
  // One train shard: no reader changes shard during these runs.
  ShardFiles data = synthetic_shards(dir / "data", 200000, 3000);
  // A shard of token 5 but for token 500 (outside a vocabulary of 128) at `at`; its glob.
  std::string bad_shard(size_t at) const {
    fs::create_directories(dir / "bad");
    std::vector<uint16_t> tokens(20000, 5);
    tokens[at] = 500;
    write_shard((dir / "bad" / "bad_train_000000.bin").string(), tokens.data(),
                int64_t(tokens.size()));
    return (dir / "bad").string() + "/*.bin";
  }
  // A job of 2 ranks whose rank 1 runs `rank1` and rank 0 `rank0` (shell commands, through
  // `script`), expected to fail without hanging.
  Outcome failed_job(const fs::path& script, const std::string& rank1, const std::string& rank0) {
    write_bytes(script, "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then\n" + rank1 + "\nelse\n" +
                            rank0 + "\nfi\n");
    Outcome o = run_shell(mpirun(2, 120) + "sh " + script.string());
    EXPECT_NE(o.code, 0) << o.out;
    EXPECT_NE(o.code, 124) << "the job hung until timeout ended it:\n" << o.out;
    return o;
  }
  // A job script: rank 0 runs `train`; rank 1 runs it in the background (its pid into
  // `pid`) and sends it SIG`sig` once rank 0 has logged a step to run/metrics.jsonl, then
  // waits; whatever ends the shell continues and kills its trainer.
  void write_signalling_script(const fs::path& script, const std::string& train, const fs::path& run,
                               const std::string& sig, const fs::path& pid) const {
    write_bytes(script,
                "if [ \"$OMPI_COMM_WORLD_RANK\" != 1 ]; then exec " + train + "; fi\n" +
                train + " &\n"
                "child=$!\n"
                "echo $child > " + pid.string() + "\n"
                "trap 'kill -CONT $child 2>/dev/null; kill -KILL $child 2>/dev/null' EXIT TERM INT\n"
                "until grep -q train_loss " + (run / "metrics.jsonl").string() +
                " 2>/dev/null; do sleep 0.05; done\n"
                "kill -" + sig + " $child\n"
                "wait $child\n");
  }
  std::string micro_flags(const std::string& out) const {
    return "train --train '" + (dir / "data").string() + "/*train*.bin' --val '" +
           (dir / "data").string() + "/*val*.bin' --vocab 128 --eot 0 --layers 2 --heads 2 "
           "--head-dim 16 --seq-len 256 --batch 2 --steps 8 --cooldown 4 --window-start 64 "
           "--window-end 256 --momentum-warmup 6 --val-every 4 --val-tokens 512 --no-sample "
           "--threads 1 --device cpu --out " + (dir / out).string();
  }
};

}  // namespace

TEST_F(Mpi, SelftestCollectivesMuonAndSlices) {
  std::vector<uint16_t> tokens(4000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t(i);
  const std::string shard = (dir / "slices.bin").string();
  write_shard(shard, tokens.data(), int64_t(tokens.size()));
  for (int ranks : {1, 2, 3}) {
    const Outcome o = run_shell(mpirun(ranks) + SPEEDRUN_MPI_SELFTEST + " " + shard);
    EXPECT_EQ(o.code, 0) << o.out;
    EXPECT_NE(o.out.find("0 failures"), std::string::npos) << o.out;
  }
}

// Ranks with a GPU each: on real GPUs one per visible GPU, at most 2 (NCCL refuses two
// ranks on one GPU); on the emulator always 2, each its own emulated GPU. The command's
// prefix gives each rank a GPU of its local rank.
int gpu_ranks() {
#ifdef SPEEDRUN_CUDA_EMULATED
  return 2;
#else
  return std::min(2, cuda_device_count());
#endif
}
std::string gpu_mpirun(int ranks, int timeout_s = 600) {
#ifdef SPEEDRUN_CUDA_EMULATED
  return "SPEEDRUN_CUDA_EMULATOR_DEVICES=" + std::to_string(ranks) + " " + mpirun(ranks, timeout_s);
#else
  return mpirun(ranks, timeout_s);
#endif
}

TEST_F(Mpi, NcclOnThisGpuAgreesWithMpi) {
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL (the CUDA toolkit's nccl.h was not found)";
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA GPU visible: " << why;
  const Outcome o = run_shell(gpu_mpirun(gpu_ranks()) + SPEEDRUN_MPI_SELFTEST + " --nccl");
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("0 failures"), std::string::npos) << o.out;
}

// The emulator sees a collective's input written while the collective may still read it
// (a missing wait before reusing a reduced buffer), and nothing when the wait is there.
TEST_F(Mpi, EmulatedNcclReportsABufferWrittenWhileReduced) {
#ifndef SPEEDRUN_CUDA_EMULATED
  GTEST_SKIP() << "the check is the CUDA emulator's (scripts/emulate.sh)";
#else
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  const Outcome o = run_shell(gpu_mpirun(gpu_ranks()) + SPEEDRUN_MPI_SELFTEST + " --nccl-race");
  EXPECT_EQ(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("0 failures"), std::string::npos) << o.out;
#endif
}

// The GPU path of data parallelism end to end: NcclComm, the per-layer async reductions on
// their own stream, distributed Muon's update exchange on device buffers, validation
// averaged over ranks. 2 ranks x 1 sequence read what 1 rank of 2 micro-batches reads
// (docs/DISTRIBUTED.md), each sequence's forward and backward is the same computation on
// both, and the mean of two fp32 gradients is their sum halved, exactly, in either order:
// the runs agree bit for bit (on the emulator, whose NCCL sums in rank order, this is
// asserted; real NCCL may round a mean its own way, so to 1e-6 there). Muon and Adam
// hardly see a gradient's scale, so only that tightness notices a mean taken wrongly.
TEST_F(Mpi, TwoGpuRanksTrainLikeOneGpuOfTwoMicroBatches) {
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL (the CUDA toolkit's nccl.h was not found)";
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA GPU visible: " << why;
  if (gpu_ranks() < 2) GTEST_SKIP() << "one GPU visible: NCCL needs a GPU per rank";
  auto flags = [&](const std::string& out) {
    return "train --train '" + (dir / "data").string() + "/*train*.bin' --val '" + (dir / "data").string() +
           "/*val*.bin' --vocab 128 --eot 0 --layers 2 --heads 2 --head-dim 64 --seq-len 256 --batch 2 "
           "--steps 4 --cooldown 2 --window-start 128 --window-end 256 --momentum-warmup 3 --val-every 2 "
           "--val-tokens 512 --no-sample --threads 1 --device cuda --out " + (dir / out).string();
  };
  const Outcome one = run_shell(gpu_mpirun(1) + SPEEDRUN_BINARY + " " + flags("one") + " --grad-accum 2");
  ASSERT_EQ(one.code, 0) << one.out;
  const Outcome two = run_shell(gpu_mpirun(2) + SPEEDRUN_BINARY + " " + flags("two"));
  ASSERT_EQ(two.code, 0) << two.out;
  for (const char* key : {"train_loss", "val_loss"}) {
    const auto a = losses(dir / "one" / "metrics.jsonl", key);
    const auto b = losses(dir / "two" / "metrics.jsonl", key);
    ASSERT_EQ(a.size(), b.size()) << key;
    ASSERT_FALSE(a.empty()) << key;
    for (size_t s = 0; s < a.size(); ++s) {
#ifdef SPEEDRUN_CUDA_EMULATED
      EXPECT_EQ(a[s], b[s]) << key << " " << s;
#else
      EXPECT_NEAR(a[s], b[s], 1e-6 * a[s]) << key << " " << s;
#endif
    }
  }
}

// NCCL learns in the background that a peer is gone or a network link failed, and the
// collective it broke never ends: the GPU waits for data that never comes, and the host for
// the GPU. Every rank's watchdog asks NCCL every second and ends its process at once, even
// with --stall-timeout 0 (no wait is ever a stall): without it the job would hang for good.
// The emulator's NCCL loses the link on demand (each rank's third collective here).
TEST_F(Mpi, ALostNcclLinkEndsTheJobEvenWithoutAStallLimit) {
#ifndef SPEEDRUN_CUDA_EMULATED
  GTEST_SKIP() << "the CUDA emulator's NCCL loses a link on demand (scripts/emulate.sh)";
#else
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL";
  const std::string flags =
      "train --train '" + (dir / "data").string() + "/*train*.bin' --val '" + (dir / "data").string() +
      "/*val*.bin' --vocab 128 --eot 0 --layers 2 --heads 2 --head-dim 64 --seq-len 256 --batch 2 "
      "--steps 4 --cooldown 2 --window-end 256 --val-tokens 512 --no-sample --threads 1 "
      "--device cuda --stall-timeout 0 --save-every 2 --out " + (dir / "lost").string();
  const Outcome o = run_shell("SPEEDRUN_CUDA_EMULATOR_NCCL_FAIL=3 " + gpu_mpirun(2, 300) +
                              SPEEDRUN_BINARY + " " + flags);
  EXPECT_NE(o.code, 0) << o.out;
  EXPECT_NE(o.code, 124) << "the job hung until timeout ended it:\n" << o.out;
  EXPECT_NE(o.out.find(": NCCL reported a failure of the ranks' links: remote process exited or "
                       "there was a network error (emulated: "),
            std::string::npos)
      << o.out;
  EXPECT_NE(o.out.find("(it was waiting for: step 1/4 on cuda"), std::string::npos) << o.out;
  EXPECT_EQ(o.out.find("no progress for"), std::string::npos) << o.out;  // not a stall
  // What no probe finds, a frozen rank, would hang such a job: rank 0 says so at its start.
  EXPECT_NE(o.out.find("warning: --stall-timeout 0 with 2 ranks: a rank that freezes"),
            std::string::npos)
      << o.out;
#endif
}

TEST_F(Mpi, TwoRanksTrainLikeOneRankOfTwoSequences) {
  const Outcome one = run_cli(micro_flags("one") + " --dtype fp64");
  ASSERT_EQ(one.code, 0) << one.out;
  const Outcome two = run_shell(mpirun(2) + SPEEDRUN_BINARY + " " + micro_flags("two") + " --dtype fp64");
  ASSERT_EQ(two.code, 0) << two.out;
  const auto a = losses(dir / "one" / "metrics.jsonl", "train_loss");
  const auto b = losses(dir / "two" / "metrics.jsonl", "train_loss");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t s = 0; s < a.size(); ++s) EXPECT_NEAR(a[s], b[s], 1e-10) << "step " << s;
  const auto va = losses(dir / "one" / "metrics.jsonl", "val_loss");
  const auto vb = losses(dir / "two" / "metrics.jsonl", "val_loss");
  ASSERT_EQ(va.size(), vb.size());
  for (size_t k = 0; k < va.size(); ++k) EXPECT_NEAR(va[k], vb[k], 1e-10);
  // Only rank 0 logs the steps.
  size_t lines = 0;
  for (size_t p = two.out.find("train_loss:"); p != std::string::npos; p = two.out.find("train_loss:", p + 1)) ++lines;
  EXPECT_EQ(lines, 8u) << two.out;
}

TEST_F(Mpi, ResumeAtTheSameWorldSizeIsBitIdentical) {
  ASSERT_EQ(run_shell(mpirun(2) + SPEEDRUN_BINARY + " " + micro_flags("full")).code, 0);
  const Outcome stop = run_shell(mpirun(2) + SPEEDRUN_BINARY + " " + micro_flags("split") + " --stop-after 4");
  ASSERT_EQ(stop.code, 0) << stop.out;
  const Outcome resume = run_shell(mpirun(2) + SPEEDRUN_BINARY + " train --resume " +
                                   (dir / "split").string() + " --threads 1 --device cpu --no-sample");
  ASSERT_EQ(resume.code, 0) << resume.out;
  EXPECT_EQ(read_bytes(dir / "split" / "model_step000008.safetensors"),
            read_bytes(dir / "full" / "model_step000008.safetensors"));
  EXPECT_EQ(metrics_without_times(dir / "split" / "metrics.jsonl"),
            metrics_without_times(dir / "full" / "metrics.jsonl"));
}

TEST_F(Mpi, AFailingRankEndsTheJobWithItsMessage) {
  // Rank 1 reads tokens [256, 513) of the first step: one of them is outside the vocabulary.
  const std::string flags = "train --train '" + bad_shard(300) + "' --vocab 128 "
                            "--eot 0 --layers 2 --heads 2 --head-dim 16 --seq-len 256 --batch 2 "
                            "--window-end 256 --steps 4 --cooldown 1 --val-tokens 0 --no-sample --threads 1 "
                            "--device cpu --out " + (dir / "badrun").string();
  const Outcome o = run_shell(mpirun(2) + SPEEDRUN_BINARY + " " + flags);
  EXPECT_NE(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("rank 1 of 2"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("token 500"), std::string::npos) << o.out;
}

// The same on GPUs, where NCCL's ncclCommDestroy waits for every rank of the node to call it
// (the emulator's too): rank 1 fails in its second step, after GPU work and collectives,
// while rank 0 waits in that step's first collective. Had the failing rank unwound to main
// before ending the job, its communicator's teardown would wait for rank 0 and rank 0 for
// it, for good (--stall-timeout 0: no watchdog to end either), and its message would never
// print.
TEST_F(Mpi, AFailingGpuRankEndsTheJobWithItsMessage) {
  if (!nccl_built()) GTEST_SKIP() << "this build has no NCCL (the CUDA toolkit's nccl.h was not found)";
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA GPU visible: " << why;
  if (gpu_ranks() < 2) GTEST_SKIP() << "one GPU visible: NCCL needs a GPU per rank";
  // Rank 1's second step reads tokens [768, 1025).
  const std::string flags = "train --train '" + bad_shard(800) + "' --vocab 128 "
                            "--eot 0 --layers 2 --heads 2 --head-dim 64 --seq-len 256 --batch 2 "
                            "--window-end 256 --steps 4 --cooldown 1 --val-tokens 0 --no-sample "
                            "--threads 1 --device cuda --stall-timeout 0 --out " +
                            (dir / "badgpu").string();
  const Outcome o = run_shell(gpu_mpirun(2, 300) + SPEEDRUN_BINARY + " " + flags);
  EXPECT_NE(o.code, 0) << o.out;
  EXPECT_NE(o.code, 124) << "the job hung until timeout ended it:\n" << o.out;
  EXPECT_NE(o.out.find("error: rank 1 of 2: "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("token 500"), std::string::npos) << o.out;
}

// A job whose ranks were started with different flags (a per-node script, a hostfile's
// wrapper) stops before its first step, naming the flag, instead of hanging in collectives
// of different sizes.
TEST_F(Mpi, RanksStartedWithDifferentFlagsEndTheJobNamingThem) {
  const fs::path script = dir / "differ.sh";
  const std::string train = std::string(SPEEDRUN_BINARY) + " train --train '" +
                            (dir / "data").string() + "/*train*.bin' --vocab 128 --eot 0 "
                            "--layers 2 --heads 2 --head-dim 16 --batch 2 --window-end 128 "
                            "--steps 4 --cooldown 1 --val-tokens 0 --no-sample --threads 1 "
                            "--device cpu --out " + (dir / "differ").string();
  const Outcome o = failed_job(script, train + " --seq-len 128", train + " --seq-len 256");
  EXPECT_NE(o.out.find("the ranks do not run the same training"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("rank 1: --seq-len 128 (rank 0: 256)"), std::string::npos) << o.out;
}

// An error before the ranks have started (a flag, a missing file) names its rank as the
// later ones do.
TEST_F(Mpi, AnErrorBeforeTheRanksStartNamesItsRank) {
  const fs::path script = dir / "early.sh";
  const std::string train = std::string(SPEEDRUN_BINARY) + " " + micro_flags("early");
  const Outcome o = failed_job(script, train + " --no-such-flag", train);
  EXPECT_NE(o.out.find("error: rank 1 of 2: "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("--no-such-flag"), std::string::npos) << o.out;
}

// Rank 0 writes into the run directory only once every rank has passed its own checks and
// loaded its starting weights: a start that fails on another rank (here its --init file is
// missing, its working directory being another) leaves an earlier run's files as they were,
// --overwrite or not. Ranks whose --init files differ under the same path are refused too,
// before anything is written.
TEST_F(Mpi, AStartThatFailsOnAnyRankLeavesTheRunDirectoryAsItWas) {
  const fs::path run = dir / "kept", other = dir / "rank1";
  const Outcome first = run_shell(std::string(SPEEDRUN_BINARY) + " " + micro_flags("kept") +
                                  " --save-every 4 --seed 1");
  ASSERT_EQ(first.code, 0) << first.out;
  const auto before = read_bytes(run / "metrics.jsonl");
  fs::create_directories(other);
  fs::copy_file(run / "model_step000000.safetensors", dir / "init.safetensors");
  const fs::path script = dir / "start.sh";
  const std::string train = std::string(SPEEDRUN_BINARY) + " " + micro_flags("kept") +
                            " --overwrite --init init.safetensors";
  const std::string rank1 = "cd " + other.string() + " && " + train;
  const std::string rank0 = "cd " + dir.path.string() + " && " + train;
  Outcome o = failed_job(script, rank1, rank0);
  EXPECT_NE(o.out.find("rank 1 of 2"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("init.safetensors"), std::string::npos) << o.out;
  EXPECT_TRUE(fs::exists(run / "ckpt_step000004" / "meta.json"));
  EXPECT_TRUE(fs::exists(run / "model_step000008.safetensors"));
  EXPECT_EQ(read_bytes(run / "metrics.jsonl"), before);
  // Rank 1's init.safetensors: other weights (another seed's) under the same path.
  const Outcome seed2 = run_shell(std::string(SPEEDRUN_BINARY) + " " + micro_flags("seed2") +
                                  " --steps 1 --cooldown 1 --seed 2");
  ASSERT_EQ(seed2.code, 0) << seed2.out;
  fs::copy_file(dir / "seed2" / "model_step000000.safetensors", other / "init.safetensors");
  o = failed_job(script, rank1, rank0);
  EXPECT_NE(o.out.find("the ranks start from different weights: rank 1 from --init "
                       "init.safetensors (checksum "),
            std::string::npos)
      << o.out;
  EXPECT_TRUE(fs::exists(run / "ckpt_step000004" / "meta.json"));
  EXPECT_EQ(read_bytes(run / "metrics.jsonl"), before);
}

// SIGTERM to one rank (a scheduler's, or a user's kill) stops every rank after the same step
// with one checkpoint, and rank 0's log names the signal and the rank that got it.
TEST_F(Mpi, ASignalToOneRankStopsTheJobNamingIt) {
  const fs::path run = dir / "sig", script = dir / "sig.sh";
  const std::string train = std::string(SPEEDRUN_BINARY) + " " + micro_flags("sig") +
                            " --steps 100000 --val-every 0";
  write_signalling_script(script, train, run, "TERM", dir / "sig1.pid");
  const Outcome o = run_shell(mpirun(2, 300) + "sh " + script.string());
  EXPECT_NE(o.code, 124) << "the job hung until timeout ended it:\n" << o.out;
  EXPECT_NE(o.code, 0) << o.out;
  const size_t at = o.out.find("stopped after step ");
  ASSERT_NE(at, std::string::npos) << o.out;
  EXPECT_NE(o.out.find("(SIGTERM on rank 1): continue with speedrun train --resume", at),
            std::string::npos)
      << o.out;
  std::vector<std::string> checkpoints;
  for (const auto& e : fs::directory_iterator(run))
    if (e.path().filename().string().rfind("ckpt_step", 0) == 0) checkpoints.push_back(e.path());
  EXPECT_EQ(checkpoints.size(), 1u) << o.out;
}

// A rank that stops without its process ending (SIGSTOP here; a frozen node, a process
// swapped out or stuck in a driver elsewhere) would keep the others waiting in their next
// collective forever. Their watchdog ends them instead, naming the wait, and mpirun ends the
// job (core/stall_watchdog.h).
TEST_F(Mpi, AFrozenRankEndsTheJobInsteadOfHanging) {
  const fs::path run = dir / "frozen", pid = dir / "rank1.pid", script = dir / "rank.sh";
  const std::string train = std::string(SPEEDRUN_BINARY) + " train --train '" +
                            (dir / "data").string() + "/*train*.bin' --vocab 128 --eot 0 "
                            "--layers 2 --heads 2 --head-dim 16 --seq-len 256 --batch 2 "
                            "--window-end 256 --steps 1000 --cooldown 1 --val-tokens 0 "
                            "--no-sample --threads 1 --device cpu --stall-timeout 3 --out " +
                            run.string();
  write_signalling_script(script, train, run, "STOP", pid);
  const Outcome o = run_shell(mpirun(2, 300) + "sh " + script.string());
  // However it ended, leave no stopped process behind.
  std::ifstream f(pid);
  if (long p = 0; f >> p && p > 0) {
    ::kill(pid_t(p), SIGCONT);
    ::kill(pid_t(p), SIGKILL);
  }
  EXPECT_NE(o.code, 0) << o.out;
  EXPECT_NE(o.code, 124) << "the job hung until timeout ended it:\n" << o.out;
  EXPECT_NE(o.out.find("error: rank 0 of 2: no progress for "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("while waiting for: mpi "), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("--stall-timeout S sets the limit"), std::string::npos) << o.out;
}

