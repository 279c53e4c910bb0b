// Bad input through the real binary: every case exits non-zero with a clear message that
// names the file or flag, and never crashes.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "backend/factory.h"
#include "data/shard.h"
#include "run_command.h"

namespace fs = std::filesystem;

namespace {


class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("speedrun_test_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::vector<uint16_t> toks(20000);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = uint16_t(i % 97 == 0 ? 0 : 1 + i % 50);
    speedrun::write_shard((dir / "good_train_000.bin").string(), toks.data(), int64_t(toks.size()));
    speedrun::write_shard((dir / "good_val_000.bin").string(), toks.data(), int64_t(toks.size()));
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string small(const std::string& extra) const {
    return "train --layers 2 --heads 2 --head-dim 16 --vocab 64 --eot 0 --seq-len 128 --batch 2 "
           "--window-end 128 --steps 2 --cooldown 1 --val-tokens 256 --no-sample --out " +
           (dir / "run").string() + " " + extra;
  }
  // Writes a copy of the good shard with one header int32 replaced (or truncated).
  std::string corrupt(const std::string& name, int field, int32_t value, long truncate = -1) {
    const fs::path p = dir / name;
    fs::copy_file(dir / "good_train_000.bin", p);
    if (field >= 0) {
      std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(field * 4);
      f.write(reinterpret_cast<const char*>(&value), 4);
    }
    if (truncate >= 0) fs::resize_file(p, uintmax_t(truncate));
    return p.string();
  }
  void expect_error(const std::string& args, const std::vector<std::string>& needles) {
    Outcome r = run_cli(args);
    EXPECT_NE(r.code, 0) << args << "\n" << r.out;
    EXPECT_LT(r.code, 128) << "crashed: " << r.out;
    for (const auto& n : needles)
      EXPECT_NE(r.out.find(n), std::string::npos) << "missing '" << n << "' in:\n" << r.out;
  }
  fs::path dir;
};

}  // namespace

TEST_F(Cli, GoodRunSucceeds) {
  Outcome r = run_cli(small("--train '" + (dir / "good_train_*.bin").string() + "' --val '" +
                    (dir / "good_val_*.bin").string() + "'"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step:2/2 val_loss:"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "run" / "model_step000002.safetensors"));
  EXPECT_EQ(r.out.find("validates nothing"), std::string::npos) << r.out;
  // --train without --val trains without validation, and says so.
  r = run_cli(small("--overwrite --train '" + (dir / "good_train_*.bin").string() + "'"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("no --val given: the run validates nothing"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("val_loss"), std::string::npos) << r.out;
}

// Every command reads its numbers as decimal text (core/number_text.h), as presets and
// sweep specs do: "--steps 010" trains ten steps (CLI11 read eight), and a number that is
// not one, or beyond what the flag's type holds, is refused naming the flag and why.
TEST_F(Cli, NumbersAreDecimalOnEveryCommand) {
  Outcome r = run_cli(small("--steps 010 --train '" + (dir / "good_train_*.bin").string() +
                            "' --val '" + (dir / "good_val_*.bin").string() + "'"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step:10/10 val_loss:"), std::string::npos) << r.out;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train --steps 0x10", "error: --steps '0x10': not an integer"},
      {"train --steps 1e3", "error: --steps '1e3': not an integer"},
      {"train --steps 99999999999999999999",
       "error: --steps 99999999999999999999: out of range (an integer in "
       "[-9223372036854775808, 9223372036854775807]); must be >= 1"},
      {"train --threads 99999999999",
       "error: --threads 99999999999: out of range (an integer in [-2147483648, 2147483647])"},
      {"bench --seed -1", "error: --seed '-1': not an integer >= 0"},
      {"bench --reps 0x10", "error: --reps '0x10': not an integer"},
      {"eval --weights w --val v --window 0x40", "error: --window '0x40': not an integer"},
      {"sample --checkpoint c --temperature warm", "error: --temperature 'warm': not a number"},
      {"sample --checkpoint c --heads 1.5", "error: --heads '1.5': not an integer"},
      {"prepare f -o o --shard-tokens 1e8", "error: --shard-tokens '1e8': not an integer"},
      {"shards info f --eot x", "error: --eot 'x': not an integer"},
      {"tokenizer train f -o o --vocab-size 3e4", "error: --vocab-size '3e4': not an integer"},
      {"report r --target-loss low", "error: --target-loss 'low': not a number"},
      // CLI11's own refusals begin as every other error does.
      {"sample", "error: --checkpoint is required"},
  };
  for (const auto& [args, message] : cases) {
    r = run_cli(args);
    EXPECT_EQ(r.code == 0, false) << args;
    EXPECT_LT(r.code, 128) << "crashed: " << args << "\n" << r.out;
    EXPECT_EQ(r.out.rfind(message, 0), 0u) << args << ":\n" << r.out;
  }
}

// More threads than cores slow every step many times over (each parallel region waits for
// the slowest of threads taking turns): said once, and the command goes on.
TEST_F(Cli, MoreThreadsThanCoresIsWarned) {
  const Outcome r = run_cli("eval --weights " + (dir / "none.safetensors").string() +
                            " --val x --device cpu --threads 1000000");
  EXPECT_NE(r.out.find("warning: --threads 1000000 on "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("none.safetensors: no such file"), std::string::npos) << r.out;
}

TEST_F(Cli, ShardWithWrongMagic) {
  const auto p = corrupt("bad_magic.bin", 0, 12345);
  expect_error(small("--train " + p), {"bad_magic.bin", "magic"});
}

TEST_F(Cli, ShardWithWrongVersion) {
  const auto p = corrupt("bad_version.bin", 1, 7);
  expect_error(small("--train " + p), {"bad_version.bin", "version"});
}

TEST_F(Cli, ShardWithWrongTokenCount) {
  const auto p = corrupt("bad_count.bin", 2, 30000);
  expect_error(small("--train " + p), {"bad_count.bin"});
}

TEST_F(Cli, TruncatedShard) {
  const auto p = corrupt("truncated.bin", -1, 0, 1024 + 2 * 20000 - 10);
  expect_error(small("--train " + p), {"truncated.bin"});
  const auto q = corrupt("tiny_header.bin", -1, 0, 100);
  expect_error(small("--train " + q), {"tiny_header.bin"});
}

TEST_F(Cli, GlobMatchingNothing) {
  expect_error(small("--train '" + (dir / "nothing_*.bin").string() + "'"),
               {"--train", "nothing_*.bin"});
}

TEST_F(Cli, ShardTooSmallForOneBatch) {
  std::vector<uint16_t> toks(100, 1);
  speedrun::write_shard((dir / "short.bin").string(), toks.data(), 100);
  expect_error(small("--train " + (dir / "short.bin").string()), {"short.bin"});
}

TEST_F(Cli, InconsistentConfigs) {
  const std::string tr = "--train " + (dir / "good_train_000.bin").string() + " ";
  expect_error(small(tr + "--layers 3"), {"--layers"});
  expect_error(small(tr + "--window-start 100"), {"--window-start", "64"});
  expect_error(small(tr + "--window-end 1000"), {"--window-end", "64"});
  expect_error(small(tr + "--head-dim 15"), {"--head-dim"});
  expect_error(small(tr + "--preset fastest"), {"--preset"});
  expect_error(small(tr + "--no-such-flag 1"), {"--no-such-flag"});
  expect_error(small(tr + "--steps abc"), {"--steps"});
}

// A path or glob given empty (a script's unset variable) is refused, not read as the flag
// left out: --train "" would train on the built-in corpus, --resume "" start a new run.
// A resume takes no --overwrite, and no --init other than the run's own.
TEST_F(Cli, EmptyAndConflictingRunFlagsAreRefused) {
  for (const char* flag : {"--train", "--val", "--out", "--init", "--resume"})
    expect_error(small(std::string(flag) + " ''"), {flag, "empty"});
  const std::string tr = "--train " + (dir / "good_train_000.bin").string();
  Outcome ok = run_cli(small(tr + " --save-every 1 --stop-after 1"));
  ASSERT_EQ(ok.code, 0) << ok.out;
  const std::string run = (dir / "run").string();
  const std::string resume = "train --resume " + run + " --no-sample ";
  expect_error(resume + "--overwrite", {"--overwrite with --resume", "--out " + run});
  expect_error(resume + "--init " + (dir / "run" / "model_step000000.safetensors").string(),
               {"--init", "--resume", "its initialisation", "leave --init out"});
  // A run started from --init resumes with the same file under another spelling.
  fs::copy_file(dir / "run" / "model_step000000.safetensors", dir / "init.safetensors");
  const std::string init = (dir / "init.safetensors").string();
  ASSERT_EQ(run_cli(small(tr + " --out " + (dir / "fromInit").string() + " --init " + init +
                          " --save-every 1 --stop-after 1")).code, 0);
  const std::string respelled = (dir / "." / "init.safetensors").string();
  Outcome again = run_cli("train --resume " + (dir / "fromInit").string() + " --no-sample --init " +
                          respelled);
  EXPECT_EQ(again.code, 0) << again.out;
  Outcome r = run_cli(resume);
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(Cli, TokenOutsideVocabulary) {
  expect_error(small("--train " + (dir / "good_train_000.bin").string() + " --vocab 40"),
               {"good_train_000.bin", "--vocab"});
}

// An unknown command is named with the valid ones, at the top level and under a command
// that has its own (CLI11 alone says only "A subcommand is required").
TEST_F(Cli, AnUnknownCommandIsNamedWithTheValidOnes) {
  expect_error("bogus", {"error: 'bogus' is not a command of speedrun: give one of train, eval, "
                         "prepare, shards, tokenizer", "speedrun --help"});
  expect_error("tokenizer bogus", {"error: 'bogus' is not a command of speedrun tokenizer: give "
                                   "one of train, encode, decode"});
  expect_error("tokenizer", {"error: speedrun tokenizer needs a command: one of train, encode, "
                             "decode"});
  expect_error("shards bogus --vocab 3", {"'bogus' is not a command of speedrun shards: give one "
                                          "of info"});
  // Other missing-flag errors keep CLI11's wording.
  expect_error("tokenizer train x.txt", {"--vocab-size is required"});
}

TEST_F(Cli, WeightsThatDoNotFitTheConfig) {
  Outcome ok = run_cli(small("--train " + (dir / "good_train_000.bin").string()));
  ASSERT_EQ(ok.code, 0) << ok.out;
  const std::string w = (dir / "run" / "model_step000000.safetensors").string();
  fs::copy_file(w, dir / "init.safetensors");
  const std::string init = (dir / "init.safetensors").string();
  expect_error(small("--train " + (dir / "good_train_000.bin").string() + " --init " + init +
                     " --layers 4"),
               {"init.safetensors", "transformer.h.2"});
  expect_error(small("--train " + (dir / "good_train_000.bin").string() + " --init " + init +
                     " --head-dim 8"),
               {"init.safetensors", "shape"});
  // Not a safetensors file at all, and a truncated one.
  expect_error(small("--train " + (dir / "good_train_000.bin").string() + " --init " +
                     (dir / "good_val_000.bin").string()),
               {"good_val_000.bin"});
  // A run directory stands for its latest weights (as for eval, sample and export).
  Outcome from_dir = run_cli(small("--train " + (dir / "good_train_000.bin").string() +
                                   " --init " + (dir / "run").string() + " --out " +
                                   (dir / "from_dir").string()));
  EXPECT_EQ(from_dir.code, 0) << from_dir.out;
  EXPECT_NE(from_dir.out.find("init: weights from " + (dir / "run" / "model_step000002.safetensors").string()),
            std::string::npos)
      << from_dir.out;
  // The same tensor shapes with another split of the width into heads: the metadata says.
  expect_error(small("--train " + (dir / "good_train_000.bin").string() + " --init " + init +
                     " --heads 4 --head-dim 8"),
               {"init.safetensors", "2 heads of 16", "--heads 2 --head-dim 16"});
  fs::copy_file(w, dir / "cut.safetensors");
  fs::resize_file(dir / "cut.safetensors", fs::file_size(w) / 2);
  expect_error(small("--train " + (dir / "good_train_000.bin").string() + " --init " +
                     (dir / "cut.safetensors").string()),
               {"cut.safetensors"});
}

TEST_F(Cli, EvalReadsTheShapeFromTheWeights) {
  Outcome ok = run_cli(small("--train " + (dir / "good_train_000.bin").string()));
  ASSERT_EQ(ok.code, 0) << ok.out;
  const std::string w = (dir / "run" / "model_step000002.safetensors").string();
  Outcome r = run_cli("eval --weights " + w + " --val " + (dir / "good_val_000.bin").string() +
              " --window 64 --seq-len 128 --val-tokens 1024");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("val_loss:"), std::string::npos) << r.out;
  expect_error("eval --weights " + w + " --val " + (dir / "good_val_000.bin").string() +
                   " --window 64 --seq-len 128 --val-tokens 1000",
               {"--val-tokens"});
  // A run directory stands for its newest weights (the final ones here), as for sample.
  Outcome by_dir = run_cli("eval --weights " + (dir / "run").string() + " --val " +
                           (dir / "good_val_000.bin").string() +
                           " --window 64 --seq-len 128 --val-tokens 1024");
  EXPECT_EQ(by_dir.code, 0) << by_dir.out;
  EXPECT_EQ(by_dir.out.substr(by_dir.out.find("val_loss:"), 20),
            r.out.substr(r.out.find("val_loss:"), 20));
  EXPECT_NE(by_dir.out.find("model_step000002.safetensors"), std::string::npos) << by_dir.out;
  // A budget past what the shards hold (19,968 tokens in batches of 128) would read
  // batches again: refused, as train refuses it.
  expect_error("eval --weights " + w + " --val " + (dir / "good_val_000.bin").string() +
                   " --window 64 --seq-len 128 --val-tokens 131072",
               {"--val-tokens 131072 is more than", "156 batches", "lower --val-tokens"});
}

// The documents' delimiter is not in a shard's header: a folder's manifest (prepare.json)
// that names another EOT than --eot is refused, naming it and the fix; shards with no
// manifest that do not begin with --eot are run with a warning.
TEST_F(Cli, ShardsDelimitedByAnotherEotAreRefusedOrWarned) {
  const std::string tr = "--train " + (dir / "good_train_000.bin").string();
  { std::ofstream(dir / "prepare.json") << R"({"generator": "speedrun prepare", "eot": 7})"; }
  expect_error(small(tr), {"EOT 0", "delimit their documents with 7", "prepare.json",
                           "give --eot 7"});
  fs::remove(dir / "prepare.json");
  Outcome ok = run_cli(small(tr));
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_EQ(ok.out.find("warning: "), std::string::npos) << ok.out;  // it begins with 0
  Outcome warned = run_cli(small(tr + " --eot 3 --overwrite"));
  EXPECT_EQ(warned.code, 0) << warned.out;
  EXPECT_NE(warned.out.find("begins with token 0, not the EOT 3"), std::string::npos) << warned.out;
  EXPECT_NE(warned.out.find("give --eot 0"), std::string::npos) << warned.out;
  // Training and validation folders that record different EOTs: they are of two tokenizers.
  fs::create_directories(dir / "v7");
  fs::copy_file(dir / "good_val_000.bin", dir / "v7" / "good_val_000.bin");
  { std::ofstream(dir / "v7" / "prepare.json") << R"({"eot": 7})"; }
  { std::ofstream(dir / "prepare.json") << R"({"eot": 0})"; }
  expect_error(small(tr + " --val " + (dir / "v7" / "good_val_000.bin").string() + " --overwrite"),
               {"--train shards record EOT 0", "--val shards EOT 7", "different tokenizers"});
  fs::remove(dir / "v7" / "prepare.json");
  // A run that trained with another EOT than its folder records (one started before this
  // check) resumes with its own, warned.
  { std::ofstream(dir / "prepare.json") << R"({"eot": 3})"; }
  Outcome stopped = run_cli(small(tr + " --eot 3 --overwrite --stop-after 1 --save-every 1"));
  ASSERT_EQ(stopped.code, 0) << stopped.out;
  { std::ofstream(dir / "prepare.json") << R"({"eot": 0})"; }
  Outcome resumed = run_cli("train --resume " + (dir / "run").string() + " --no-sample");
  EXPECT_EQ(resumed.code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("warning: EOT 3: the shards in"), std::string::npos) << resumed.out;
  EXPECT_NE(resumed.out.find("goes on with its --eot 3"), std::string::npos) << resumed.out;
}

TEST_F(Cli, DivergingRunStopsWithAClearError) {
  // An absurd learning rate overflows the weights: the run must stop at the first
  // non-finite loss, say so, and keep the weights written before.
  expect_error(small("--train " + (dir / "good_train_000.bin").string() +
                     " --lr-embed 1e39 --lr-head 1e39 --steps 4"),
               {"training step 1", "NaN", "lower the learning rates"});
  EXPECT_TRUE(fs::exists(dir / "run" / "model_step000000.safetensors"));
}

// This executable, and every command it starts, sees no GPU however it is run, by ctest or
// by hand on a GPU machine (tests/hide_gpus.cpp): --device auto takes the CPU.
TEST_F(Cli, TheCpuEnginesTestsSeeNoGpu) {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  ASSERT_NE(visible, nullptr);
  EXPECT_STREQ(visible, "");
  EXPECT_EQ(speedrun::cuda_device_count(), 0);
}

// cuBLASLt is opened by the CUDA backend when it first runs a GEMM, not linked: its
// initialisers cost every process that loads it ~0.3 s (src/backend/cuda/cublaslt_loader.h).
// Neither a CPU process nor a `speedrun` command that does not train on a GPU loads it.
TEST_F(Cli, ProcessesThatRunNoGpuCodeLoadNoCublasLt) {
  std::ifstream maps("/proc/self/maps");
  const std::string mapped((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
  ASSERT_NE(mapped.find("test_cli"), std::string::npos) << "cannot read /proc/self/maps";
  EXPECT_EQ(mapped.find("libcublasLt"), std::string::npos);
  // The loader names every library it opens (LD_DEBUG=files); the command itself runs.
  const Outcome r = run_cli("train --help", "LD_DEBUG=files");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("file="), std::string::npos) << "LD_DEBUG printed nothing: " << r.out;
  EXPECT_EQ(r.out.find("libcublasLt"), std::string::npos) << r.out;
}

// speedrun devices: the backends of this build, and here no GPU (the CPU tests hide them).
TEST_F(Cli, DevicesSaysWhatThisBuildRunsOn) {
  const Outcome r = run_cli("devices");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("speedrun: CPU backend", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("\nbuild: speedrun "), std::string::npos) << r.out;
  if (speedrun::cuda_built()) {
    EXPECT_NE(r.out.find("; CUDA backend"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("no CUDA GPU visible"), std::string::npos) << r.out;
#ifndef SPEEDRUN_CUDA_EMULATED
    EXPECT_NE(r.out.find("CUDA kernels compiled for "), std::string::npos) << r.out;
#endif
  } else {
    EXPECT_NE(r.out.find("no CUDA backend"), std::string::npos) << r.out;
  }
#ifdef SPEEDRUN_HAVE_MPI
  EXPECT_NE(r.out.find("; MPI"), std::string::npos) << r.out;
#endif
}

// The commit a build records (cmake/source_commit.cmake, run at every build): the tree's own,
// "-dirty" with uncommitted changes, "unknown" outside git; rewritten only when it changed,
// so that a build of an unchanged tree recompiles nothing.
TEST_F(Cli, TheBuildRecordsTheTreesCommit) {
  if (run_shell("git --version").code != 0) GTEST_SKIP() << "git is not installed here";
  const fs::path repo = dir / "repo", header = dir / "commit.h";
  const std::string script = std::string(SPEEDRUN_SOURCE_DIR) + "/cmake/source_commit.cmake";
  auto commit_of = [&](const fs::path& src) {
    const Outcome r = run_shell("cmake -DSRC=" + src.string() + " -DOUT=" + header.string() +
                                " -P " + script + " 2>&1");
    EXPECT_EQ(r.code, 0) << r.out;
    std::ifstream f(header);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::string key = "#define SPEEDRUN_SOURCE_COMMIT \"";
    const size_t at = text.find(key);
    if (at == std::string::npos) return "(no definition in: " + text + ")";
    return text.substr(at + key.size(), text.find('"', at + key.size()) - at - key.size());
  };
  fs::create_directories(repo);
  EXPECT_EQ(commit_of(repo), "unknown");
  const std::string git = "cd " + repo.string() + " && git -c user.name=t -c user.email=t@t ";
  ASSERT_EQ(run_shell(git + "init -q . && echo a > f && " + git + "add f && " + git +
                      "commit -q -m a 2>&1").code, 0);
  const std::string head = run_shell("cd " + repo.string() + " && git rev-parse --short=12 HEAD").out;
  ASSERT_GE(head.size(), 12u);
  EXPECT_EQ(commit_of(repo), head.substr(0, 12));
  const auto written = fs::last_write_time(header);
  EXPECT_EQ(commit_of(repo), head.substr(0, 12));
  EXPECT_EQ(fs::last_write_time(header), written) << "rewritten with the same commit";
  run_shell("echo b > " + (repo / "f").string());
  EXPECT_EQ(commit_of(repo), head.substr(0, 12) + "-dirty");
  // What this binary records is what --version prints.
  const Outcome v = run_cli("--version");
  EXPECT_EQ(v.code, 0) << v.out;
  EXPECT_EQ(v.out.rfind("speedrun ", 0), 0u) << v.out;
  EXPECT_NE(v.out.find("(commit "), std::string::npos) << v.out;
}

// --device cuda where there is no CUDA backend (a CPU-only build) or no GPU says which, on
// every command that takes it; --device nonsense lists the devices.
TEST_F(Cli, DeviceCudaWithoutAGpuSaysWhy) {
  if (speedrun::cuda_device_count() > 0) GTEST_SKIP() << "a GPU is visible here";
  const std::string why = speedrun::cuda_built() ? "no CUDA GPU is visible"
                                                 : "this build of speedrun has no CUDA backend";
  expect_error(small("--device cuda"), {"--device cuda", why, "--device cpu"});
  expect_error("eval --weights x.safetensors --val 'x*' --device cuda", {"--device cuda", why});
  expect_error(small("--device tpu"), {"--device"});
  const Outcome r = run_cli("train --help");
  EXPECT_NE(r.out.find("auto | cpu | cuda"), std::string::npos) << r.out;
}
