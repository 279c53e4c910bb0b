// A run directory that cannot be corrupted, and the other holes a careless or hostile user
// finds: moved runs, two writers, reused directories, failed writes, leftovers, outputs
// over inputs, weights without our metadata, validation budgets beyond the data, signals,
// files that shrink while they are read.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/build_info.h"
#include "core/cpu_check.h"
#include "core/host_memory.h"
#include "core/safetensors.h"
#include "core/stop_signal.h"
#include "data/shard.h"
#include "fixtures.h"
#include "run_command.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/run_dir.h"
#include "train/run_files.h"

using namespace speedrun;
using namespace speedrun::test;

namespace {

std::vector<std::string> names_in(const fs::path& d) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(d)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class Reliability : public ::testing::Test {
 protected:
  TempDir dir{"test_reliability"};
  ShardFiles data = synthetic_shards(dir / "data", 60000, 3000);
  // The micro run M: 10 steps of a 2-layer model on synthetic shards.
  std::string micro(const fs::path& out, const std::string& extra = "") const {
    return "train --train '" + (dir / "data").string() + "/*train*.bin' --val '" +
           (dir / "data").string() + "/*val*.bin' --vocab 128 --eot 0 --layers 2 --heads 2 "
           "--head-dim 16 --seq-len 256 --batch 2 --window-end 256 --steps 10 --cooldown 2 "
           "--val-tokens 512 --val-every 5 --no-sample --threads 1 --device cpu --out " +
           out.string() + " " + extra;
  }
  Outcome ok(const std::string& args) {
    Outcome o = run_cli(args);
    EXPECT_EQ(o.code, 0) << args << "\n" << o.out;
    return o;
  }
  Outcome refused(const std::string& args, const std::vector<std::string>& needles) {
    Outcome o = run_cli(args);
    EXPECT_NE(o.code, 0) << args << "\n" << o.out;
    EXPECT_LT(o.code, 128) << "crashed: " << o.out;
    for (const auto& n : needles)
      EXPECT_NE(o.out.find(n), std::string::npos) << "missing '" << n << "' in:\n" << o.out;
    return o;
  }
};

}  // namespace

// 1. Resuming a moved run writes into the moved directory, never into the path it was
// started in (where another run now lives).
TEST_F(Reliability, ResumingAMovedRunWritesWhereItsCheckpointIs) {
  ok(micro(dir / "A", "--save-every 5 --keep 1 --stop-after 5"));
  fs::rename(dir / "A", dir / "A_old");
  ok(micro(dir / "A", "--seed 99 --save-every 5 --keep 1 --stop-after 5"));
  const std::string a_metrics = read_bytes(dir / "A" / "metrics.jsonl");
  const auto a_files = names_in(dir / "A");
  ok("train --resume " + (dir / "A_old").string() + " --threads 1 --no-sample");
  EXPECT_EQ(read_bytes(dir / "A" / "metrics.jsonl"), a_metrics);
  EXPECT_EQ(names_in(dir / "A"), a_files);
  EXPECT_TRUE(fs::exists(dir / "A_old" / "model_step000010.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "A_old" / "ckpt_step000010"));
  // --out elsewhere with --resume is refused rather than silently ignored.
  refused("train --resume " + (dir / "A_old").string() + " --out " + (dir / "B").string(),
          {"a resumed run writes into its own directory"});
}

// 2. A second process writing the same --out is refused, naming the holder; a lock left by
// a process that died is free.
TEST_F(Reliability, ASecondWriterIsRefusedNamingTheHolder) {
  {
    RunDir held = RunDir::start((dir / "D").string(), false, nlohmann::json::object());
    refused(micro(dir / "D", "--overwrite"), {"is being written by another process", "pid"});
  }
  // The lock file stays behind, with a dead holder's pid: the next run goes ahead.
  ASSERT_TRUE(fs::exists(dir / "D" / ".lock"));
  ok(micro(dir / "D", "--overwrite --steps 2 --cooldown 1 --val-every 0"));
}

// What ran a run is recorded: run.json lists each launch (the start, then each resume) with
// the build (version, commit), command line, host, device and ranks; each checkpoint names
// the build that wrote it, and a resume by another build says so.
TEST_F(Reliability, RunsRecordWhatRanThem) {
  ok(micro(dir / "P", "--save-every 5 --stop-after 5"));
  const std::string version = run_cli("--version").out;
  ASSERT_NE(version.find("speedrun " + build_info().version + " (commit " + build_info().commit + ")"),
            std::string::npos) << version;
  ok("train --resume " + (dir / "P").string() + " --threads 1 --device cpu");
  const nlohmann::json run = nlohmann::json::parse(read_bytes(dir / "P" / "run.json"));
  ASSERT_TRUE(run.contains("launches")) << run.dump(2);
  const nlohmann::json& launches = run["launches"];
  ASSERT_EQ(launches.size(), 2u) << run.dump(2);
  EXPECT_EQ(launches[0]["step"], 0);
  EXPECT_EQ(launches[1]["step"], 5);
  for (const auto& l : launches) {
    EXPECT_EQ(l["speedrun"]["commit"], build_info().commit) << l.dump(2);
    EXPECT_EQ(l["speedrun"]["version"], build_info().version) << l.dump(2);
    EXPECT_EQ(l["device"], "cpu, 1 thread") << l.dump(2);
    EXPECT_EQ(l["ranks"], 1);
    EXPECT_FALSE(l["host"].get<std::string>().empty());
    EXPECT_FALSE(l["time"].get<std::string>().empty());
    ASSERT_TRUE(l["command"].is_array()) << l.dump(2);
    EXPECT_EQ(l["command"][1], "train") << l.dump(2);
  }
  EXPECT_EQ(launches[1]["command"][2], "--resume");
  // The weights name the build that trained them.
  const auto weights = SafetensorsFile::open((dir / "P" / "model_step000010.safetensors").string());
  EXPECT_EQ(weights.metadata().at("speedrun"), build_info().version + " commit " + build_info().commit);
  // The checkpoint names its build; one written by another build resumes, saying so.
  const fs::path meta = dir / "P" / "ckpt_step000005" / "meta.json";
  nlohmann::json m = nlohmann::json::parse(read_bytes(meta));
  EXPECT_EQ(m["speedrun"]["commit"], build_info().commit) << m.dump(2);
  m["speedrun"]["commit"] = "0123456789ab";
  write_bytes(meta, m.dump(2));
  const Outcome o = ok("train --resume " + meta.parent_path().string() + " --threads 1 --device cpu");
  EXPECT_NE(o.out.find("written by speedrun 0123456789ab, this is " + build_info().commit),
            std::string::npos) << o.out;
  // A run.json edited into something else than JSON: refused, saying what deleting it does;
  // without it the run resumes.
  write_bytes(dir / "P" / "run.json", "{\"run_id\": ");
  refused("train --resume " + meta.parent_path().string() + " --threads 1 --device cpu",
          {"run.json is not valid JSON", "delete it to resume without the check"});
  fs::remove(dir / "P" / "run.json");
  ok("train --resume " + meta.parent_path().string() + " --threads 1 --device cpu");
}

// A block larger than the memory this process has left is refused before a page is touched,
// naming what was asked, what is left and what to lower; Linux would otherwise let the
// allocation succeed and kill the process, without a word, as the backend zeroes it.
TEST(HostMemory, WhatIsLeftIsFreeMemoryAndSwapWithinEveryCgroupLimit) {
  const std::string meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\n"
                              "MemAvailable:   20000000 kB\nSwapTotal: 0 kB\nSwapFree:  1000 kB\n";
  EXPECT_EQ(host_memory_available(meminfo, {}), size_t(20001000) * 1024);
  // cgroup levels innermost first: the tightest room wins; "max" is no limit.
  EXPECT_EQ(host_memory_available(meminfo, {{"max\n", "123\n"}, {"1000000\n", "400000\n"}}),
            size_t(600000));
  EXPECT_EQ(host_memory_available(meminfo, {{"5000\n", "9000\n"}}), size_t(0));  // over its limit
  EXPECT_EQ(host_memory_available(meminfo, {{"", ""}}), size_t(20001000) * 1024);  // no such file
  EXPECT_EQ(host_memory_available("MemTotal: 1 kB\n", {}), std::nullopt);
  EXPECT_EQ(host_memory_available("MemAvailable: lots\n", {}), std::nullopt);
  // This machine: known on Linux, and at most what it has.
  const auto here = host_memory_available();
  ASSERT_TRUE(here.has_value());
  EXPECT_GT(*here, size_t(0));
  const std::string m = host_oom_message(size_t(3) << 30, size_t(1) << 30);
  for (const char* piece : {"3.00 GiB", "3221225472 bytes", "has 1.00 GiB left", "--seq-len",
                            "--grad-accum", "--micro-batch", "--batch", "--vocab", "--layers"})
    EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
}

TEST_F(Reliability, AModelLargerThanTheMachineIsRefusedNamingTheFix) {
  // The record's 8 sequences of 65,536 tokens as one CPU batch: ~320 GiB of activations.
  const auto room = host_memory_available();
  if (room && *room > (size_t(400) << 30)) GTEST_SKIP() << "this machine has room for it";
  synthetic_shards(dir / "big_data", 600000, 600000);  // one step's 524,289 tokens, and validation's
  const std::string data = (dir / "big_data").string();
  refused("train --preset record --train '" + data + "/*train*.bin' --val '" + data +
              "/*val*.bin' --vocab 128 --eot 0 --device cpu --threads 1 --steps 2 --cooldown 1 "
              "--val-tokens 524288 --out " + (dir / "big").string(),
          {"cpu: out of memory allocating", "left", "--grad-accum", "h0.act"});
}

// 3. A new run into a used --out is refused unless --overwrite, which replaces the old
// run's files; without --out every run gets a directory of its own.
TEST_F(Reliability, ANewRunDoesNotMixWithAnOldOne) {
  ok(micro(dir / "R", "--save-every 5"));
  refused(micro(dir / "R", "--seed 3"), {"already holds a run", "--overwrite", "--resume"});
  ok(micro(dir / "R", "--seed 3 --steps 4 --cooldown 1 --val-every 0 --overwrite"));
  EXPECT_FALSE(fs::exists(dir / "R" / "ckpt_step000010"));  // the old run's checkpoints are gone
  EXPECT_FALSE(fs::exists(dir / "R" / "model_step000010.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "R" / "model_step000004.safetensors"));
  // A run that saved no checkpoint cannot be resumed: the refusal does not offer --resume.
  const Outcome again = run_cli(micro(dir / "R", "--seed 4"));
  EXPECT_NE(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("no checkpoint to continue from"), std::string::npos) << again.out;
  EXPECT_EQ(again.out.find("--resume"), std::string::npos) << again.out;
  // The default --out: runs/<preset>-N, a new one each time.
  const std::string cd = "cd " + dir.path.string() + " && ";
  std::string flags = micro(dir / "unused");
  flags = flags.substr(0, flags.find(" --out "));
  for (int k = 0; k < 2; ++k) {
    const Outcome o = run_shell(cd + SPEEDRUN_BINARY + " " + flags + " --steps 2 --cooldown 1 --val-every 0");
    EXPECT_EQ(o.code, 0) << o.out;
  }
  EXPECT_TRUE(fs::exists(dir / "runs" / "tiny-1" / "model_step000002.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "runs" / "tiny-2" / "model_step000002.safetensors"));
}

// 4. A failed write of metrics.jsonl stops the run naming the file (here: a full device).
TEST_F(Reliability, AFailedMetricsWriteStopsNamingTheFile) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
  fs::create_directories(dir / "full");
  fs::create_symlink("/dev/full", dir / "full" / "metrics.jsonl");
  TrainConfig c = micro_run(dir / "full");
  RunFiles files(c, true);
  files.open_metrics(0);
  try {
    files.emit({{"step", 0}, {"train_loss", 1.0}});
    ADD_FAILURE() << "the write to /dev/full succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("metrics.jsonl"), std::string::npos) << m;
    EXPECT_NE(m.find("No space left"), std::string::npos) << m;
    // No checkpoint in the directory: the message offers none to resume from.
    EXPECT_NE(m.find("no checkpoint to resume from"), std::string::npos) << m;
    EXPECT_EQ(m.find("--resume"), std::string::npos) << m;
  }
}

// 5. A checkpoint that fails to write leaves no temporary behind and the earlier
// checkpoints intact; leftovers of writes killed earlier are removed at the next start.
TEST_F(Reliability, FailedAndKilledWritesLeaveNothingBehind) {
  ok(micro(dir / "W", "--save-every 5 --stop-after 5"));
  const auto before = names_in(dir / "W");
  // Files may grow to 4 MB: the step-10 checkpoint's state (~1 MB) still fits, but no
  // larger files: resume with a file size limit under the model file's size (~330 KB).
  const Outcome o = run_shell("ulimit -f 200; trap '' XFSZ; " + std::string(SPEEDRUN_BINARY) +
                              " train --resume " + (dir / "W").string() +
                              " --threads 1 --no-sample --save-every 1");
  EXPECT_NE(o.code, 0) << o.out;
  EXPECT_NE(o.out.find("writing failed"), std::string::npos) << o.out;
  for (const auto& n : names_in(dir / "W")) EXPECT_EQ(n.find(".tmp."), std::string::npos) << n;
  EXPECT_TRUE(fs::exists(dir / "W" / "ckpt_step000005" / "meta.json"));
  // Leftovers of killed writes (their pid is gone) are removed when a run opens the dir.
  fs::create_directories(dir / "W" / ".ckpt_step000006.tmp.999999");
  write_bytes(dir / "W" / "metrics.jsonl.tmp.999999", "half a line");
  ok("train --resume " + (dir / "W").string() + " --threads 1 --no-sample");
  for (const auto& n : names_in(dir / "W")) EXPECT_EQ(n.find(".tmp."), std::string::npos) << n;
  (void)before;
}

// 6. No command's output may overwrite an input it reads.
TEST_F(Reliability, ReportRefusesToWriteOverItsInput) {
  ok(micro(dir / "P", "--steps 2 --cooldown 1 --val-every 0"));
  const std::string m = read_bytes(dir / "P" / "metrics.jsonl");
  refused("report " + (dir / "P").string() + " -o " + (dir / "P" / "metrics.jsonl").string(),
          {"would be overwritten"});
  EXPECT_EQ(read_bytes(dir / "P" / "metrics.jsonl"), m);
}

// 7. Weights without our metadata (written by PyTorch) are usable: the shapes give what
// they can, flags the rest.
TEST_F(Reliability, WeightsWithoutMetadataTakeTheRestAsFlags) {
  ok(micro(dir / "E", "--steps 2 --cooldown 1 --val-every 0"));
  const fs::path ours = dir / "E" / "model_step000002.safetensors";
  const SafetensorsFile f = SafetensorsFile::open(ours.string());
  std::vector<TensorRecord> recs;
  for (const auto& n : f.names()) {
    const auto v = f.get(n);
    recs.push_back({n, v.dtype, v.shape, v.data});
  }
  const fs::path bare = dir / "bare.safetensors";
  write_safetensors(bare.string(), recs, {});
  const std::string val = " --val '" + (dir / "data").string() + "/*val*.bin' --seq-len 256 "
                          "--val-tokens 512 --window 256 --device cpu";
  refused("eval --weights " + bare.string() + val, {"--heads or --head-dim", "2 layers", "width 32"});
  refused("eval --weights " + bare.string() + val + " --head-dim 16",
          {"--eot"});  // a vocabulary of 128 is not GPT-2's: the EOT id must be given
  const Outcome a = ok("eval --weights " + bare.string() + val + " --head-dim 16 --eot 0");
  const Outcome b = ok("eval --weights " + ours.string() + val);
  EXPECT_EQ(a.out.substr(0, a.out.find(" tokens")), b.out.substr(0, b.out.find(" tokens")));
  refused("eval --weights " + ours.string() + val + " --heads 4", {"says 2 heads"});
  ok("export " + bare.string() + " --head-dim 16 --eot 0 -o " + (dir / "x.safetensors").string());
  EXPECT_EQ(SafetensorsFile::open((dir / "x.safetensors").string()).metadata().at("heads"), "2");
}

// 8. A validation budget beyond what the validation shards hold is refused, not wrapped.
TEST_F(Reliability, ValidationTokensBeyondTheShardsAreRefused) {
  refused(micro(dir / "V", "--val-tokens 10240"), {"--val-tokens 10240", "before repeating"});
}

// 9. SIGTERM (or Ctrl-C) stops after the current step with a checkpoint; the resumed run
// is bit-identical to an uninterrupted one.
TEST_F(Reliability, SigtermStopsWithACheckpointAndResumesExactly) {
  const std::string flags = micro(dir / "S", "--steps 200 --cooldown 10 --val-every 0");
  ok(micro(dir / "ref", "--steps 200 --cooldown 10 --val-every 0"));
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::close(out[0]);
    ::execl("/bin/sh", "sh", "-c", ("exec " + std::string(SPEEDRUN_BINARY) + " " + flags).c_str(), nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  bool signalled = false;
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) {
    text.append(buf, size_t(n));
    if (!signalled && text.find("step:3/200") != std::string::npos) {
      // sh -c execs the binary: the child is the trainer itself.
      ::kill(pid, SIGTERM);
      signalled = true;
    }
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(signalled) << text.substr(0, 3000);
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << text;
  EXPECT_NE(text.find("(SIGTERM): continue with speedrun train --resume"), std::string::npos)
      << text;
  ok("train --resume " + (dir / "S").string() + " --threads 1 --no-sample");
  EXPECT_EQ(read_bytes(dir / "S" / "model_step000200.safetensors"),
            read_bytes(dir / "ref" / "model_step000200.safetensors"));
}

// 9b. The output's reader going away (`| head`; `| tee log` when Ctrl-C ends tee before the
// trainer) stops the run after its step with a checkpoint, as a signal does: SIGPIPE killed
// it mid-step, without one. So does the terminal's hangup (SIGHUP).
TEST_F(Reliability, AClosedOutputOrAHangupStopsWithACheckpoint) {
  const auto run = [&](const fs::path& out, bool close_output) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::signal(SIGPIPE, SIG_DFL);  // as a shell starts it, whatever this test process does
      ::signal(SIGHUP, SIG_DFL);
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::close(fds[0]);
      const std::string cmd = "exec " + std::string(SPEEDRUN_BINARY) + " " +
                              micro(out, "--steps 200 --cooldown 10 --val-every 0");
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(fds[1]);
    std::string text;
    char buf[4096];
    for (ssize_t n; text.find("step:3/200") == std::string::npos &&
                    (n = ::read(fds[0], buf, sizeof buf)) > 0;)
      text.append(buf, size_t(n));
    if (close_output) ::close(fds[0]);
    else ::kill(pid, SIGHUP);
    for (ssize_t n; !close_output && (n = ::read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
    if (!close_output) ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0)
                                   << "\n" << text;
    return std::pair{WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
  };
  const auto [piped, piped_text] = run(dir / "P", true);
  EXPECT_EQ(piped, 128 + SIGPIPE) << piped_text;
  ASSERT_FALSE(list_checkpoints((dir / "P").string()).empty()) << piped_text;
  const auto [hung, hung_text] = run(dir / "H", false);
  EXPECT_EQ(hung, 128 + SIGHUP) << hung_text;
  EXPECT_NE(hung_text.find("(SIGHUP): continue with speedrun train --resume"), std::string::npos)
      << hung_text;
  // The stopped run resumes to the uninterrupted run's weights.
  ok(micro(dir / "ref", "--steps 200 --cooldown 10 --val-every 0"));
  ok("train --resume " + (dir / "P").string() + " --threads 1 --no-sample");
  EXPECT_EQ(read_bytes(dir / "P" / "model_step000200.safetensors"),
            read_bytes(dir / "ref" / "model_step000200.safetensors"));
}

// The first SIGINT or SIGTERM asks for a stop after the step, saying a second one stops at
// once; the second ends the process at once, the default way.
TEST(StopSignalDeathTest, ASecondSignalEndsTheProcessAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        install_stop_handlers();
        clear_stop_request();
        ::raise(SIGINT);
        if (stop_requested() != SIGINT) std::_Exit(3);
        ::raise(SIGINT);
        std::_Exit(4);  // not reached
      },
      testing::KilledBySignal(SIGINT), "signal again to stop at once");
}

// The console's writer: a write to a pipe whose reader is gone asks for the stop once,
// as SIGPIPE, and never kills the process (SIGPIPE is ignored); a write that works asks
// for nothing. (The sweep's lines go through it as the trainer's do.)
TEST(ConsoleWrites, AClosedPipeAsksForTheStopOnce) {
  install_stop_handlers();
  clear_stop_request();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  FILE* f = ::fdopen(fds[1], "w");
  ASSERT_NE(f, nullptr);
  write_console(f, "read\n");
  EXPECT_EQ(stop_requested(), 0);
  char buf[8];
  EXPECT_EQ(::read(fds[0], buf, sizeof buf), 5);
  ::close(fds[0]);
  write_console(f, "lost\n");
  EXPECT_EQ(stop_requested(), SIGPIPE);
  write_console(f, "lost too\n");  // no second request, no signal
  EXPECT_EQ(stop_requested(), SIGPIPE);
  EXPECT_STREQ(signal_name(stop_requested()), "SIGPIPE");
  std::fclose(f);
  clear_stop_request();
}

// 10. Smaller holes.
TEST_F(Reliability, SmallerHolesGetClearErrors) {
  write_bytes(dir / "afile", "x");
  refused(micro(dir / "afile"), {"is a file, not a directory"});
  // A damaged newest checkpoint: one warning, named by the command that reads it.
  ok(micro(dir / "K", "--save-every 5"));
  write_bytes(dir / "K" / "ckpt_step000010" / "meta.json", "{broken");
  const Outcome e = ok("export " + (dir / "K").string() + " -o " + (dir / "k.safetensors").string());
  EXPECT_NE(e.out.find("export: skipping a damaged checkpoint"), std::string::npos) << e.out;
  EXPECT_EQ(e.out.find("resume:"), std::string::npos) << e.out;
  const Outcome r = ok("train --resume " + (dir / "K").string() + " --threads 1 --no-sample");
  size_t warnings = 0;
  for (size_t p = r.out.find("skipping a damaged"); p != std::string::npos;
       p = r.out.find("skipping a damaged", p + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u) << r.out;
  // prepare -o "a b" names -o, not a --name that was not given.
  write_bytes(dir / "doc.txt", "a document\n");
  refused("prepare " + (dir / "doc.txt").string() + " -o '" + (dir / "a b").string() + "'",
          {"-o ", "pass --name"});
}

// 11. A shard (or checkpoint) that another program truncates or rewrites in place while it
// is mapped: reading past its new end faults (SIGBUS). The process ends with status 1 and
// the file's name instead of a bare crash. Another mapping's fault still reaches the
// handler installed before ours.
TEST_F(Reliability, AMappedFileThatShrinksEndsTheRunNamingIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // each statement in a fresh process
  const std::string shard = data.train[0];
  const fs::path copy = dir / "shrinking.bin";
  EXPECT_EXIT(
      {
        fs::copy_file(shard, copy, fs::copy_options::overwrite_existing);
        const Shard s = Shard::open(copy.string());
        ASSERT_GT(s.size(), 20000);
        fs::resize_file(copy, 1024);  // the header alone, as `: > file` then a slow rewrite
        volatile uint16_t t = s.tokens()[s.size() - 1];  // pages past the end: SIGBUS
        (void)t;
        std::_Exit(0);  // not reached
      },
      testing::ExitedWithCode(1),
      "error: shard .*shrinking.bin: the file shrank while it was being read \\(another "
      "program truncated it or rewrote it in place\\)");
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_handler = [](int) { std::_Exit(7); };
        ::sigaction(SIGBUS, &sa, nullptr);
        const Shard guarded = Shard::open(shard);  // installs the handler, after this one
        fs::copy_file(shard, copy, fs::copy_options::overwrite_existing);
        const int fd = ::open(copy.c_str(), O_RDONLY);
        const size_t n = size_t(fs::file_size(copy));
        const auto* p = static_cast<const volatile uint8_t*>(
            ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0));
        fs::resize_file(copy, 1024);
        volatile uint8_t b = p[n - 1];  // not a MappedFile's: the earlier handler's
        (void)b;
        std::_Exit(0);
      },
      testing::ExitedWithCode(7), "");
}

// The build's CPU extensions (SPEEDRUN_CPU_ARCH): this machine runs the build, so it has
// every one, and the check knows each name (an unknown one would count as missing). A CPU
// without some is told which, and the rebuild that fixes it, before anything uses them.
TEST(CpuCheck, ThisCpuHasEveryExtensionTheBuildUses) {
  const std::vector<std::string>& req = required_cpu_features();
  EXPECT_TRUE(missing_cpu_features(req, cpu_supports).empty())
      << cpu_features_message(missing_cpu_features(req, cpu_supports));
#if defined(__x86_64__) && defined(__AVX2__)
  // x86-64-v3's (the default), also in the other builds' lists (native, x86-64-v4).
  for (const char* f : {"avx", "avx2", "fma", "bmi2"})
    EXPECT_NE(std::find(req.begin(), req.end(), f), req.end()) << f;
#endif
  EXPECT_FALSE(cpu_supports("no-such-extension"));
}

TEST(CpuCheck, ACpuWithoutAvx2IsToldWhichRebuildFixesIt) {
  const std::vector<std::string> req = {"sse4.2", "avx", "avx2", "fma", "bmi2"};
  const auto missing = missing_cpu_features(req, [](const std::string& f) {
    return f != "avx2" && f != "fma";
  });
  EXPECT_EQ(missing, (std::vector<std::string>{"avx2", "fma"}));
  const std::string msg = cpu_features_message(missing);
  EXPECT_NE(msg.find("this CPU lacks avx2, fma"), std::string::npos) << msg;
  EXPECT_NE(msg.find("SPEEDRUN_CPU_ARCH=native scripts/build.sh"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::string("built for ") + (cpu_arch_name()[0] ? cpu_arch_name() : "these")),
            std::string::npos) << msg;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

// The real thing, on a CPU that lacks them: QEMU's user-mode emulation of a Nehalem (SSE4.2,
// no AVX) runs the built speedrun, which must end with the message, not an illegal
// instruction (which is what a build without the check did there).
TEST(CpuCheck, ACpuWithoutTheBuildsExtensionsGetsTheMessageNotACrash) {
#if !(defined(__x86_64__) && defined(__AVX__))
  GTEST_SKIP() << "this build uses no extension beyond x86-64's baseline";
#else
  if (kAddressSanitizer) GTEST_SKIP() << "AddressSanitizer's shadow memory does not map under QEMU's user mode";
  if (run_shell("command -v qemu-x86_64").code != 0)
    GTEST_SKIP() << "qemu-x86_64 not found (Debian: qemu-user, which scripts/setup.sh installs)";
  const Outcome old_cpu = run_cli("--help", "qemu-x86_64 -cpu Nehalem");
  EXPECT_EQ(old_cpu.code, 1) << old_cpu.out;
  EXPECT_NE(old_cpu.out.find("and this CPU lacks avx"), std::string::npos) << old_cpu.out;
  EXPECT_NE(old_cpu.out.find("SPEEDRUN_CPU_ARCH=native scripts/build.sh"), std::string::npos)
      << old_cpu.out;
  EXPECT_EQ(old_cpu.out.find("Illegal instruction"), std::string::npos) << old_cpu.out;
#endif
}
