// What tests share: small model and training configs, random parameters and batches with
// documents, temporary directories, file helpers. One place, so a change of the model's
// shape rules or of the trainer's API is made once.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/synthetic.h"
#include "model/config.h"
#include "model/params.h"
#include "core/stall_watchdog.h"
#include "train/config.h"
#include "train/trainer.h"

namespace speedrun::test {

namespace fs = std::filesystem;

// A model small enough for finite differences in double: `layers` (even) blocks of 2 heads
// x 16 (width 32), 37 ids, EOT 3, 16-token tiles so short sequences have many tiles.
inline GPTConfig micro_gpt(int64_t layers = 2) {
  GPTConfig c;
  c.layers = layers;
  c.heads = 2;
  c.head_dim = 16;
  c.vocab = 37;
  c.eot = 3;
  c.attn_tile = 16;
  return c;
}

// Random values everywhere (the zero-initialised projections and head included), so every
// path of forward and backward carries signal: scalars around 0.6, matrices N(0, 0.3^2).
inline void randomize(Parameters& p, uint64_t seed) {
  Rng rng(seed);
  for (int i = 0; i < p.count(); ++i) {
    std::vector<double> h(size_t(p.value(i).numel()));
    const bool scalar = p.group(i) == ParamGroup::Scalar;
    for (auto& v : h) v = scalar ? 0.6 + 0.5 * rng.normal() : 0.3 * rng.normal();
    p.from_host_f64(i, h);
  }
}

// Every gradient of p (=) 0.01 N(0, 1) from a stream of its own per (step, parameter): the
// gradients of optimizer tests that compare runs, the same on every rank.
inline void random_grads(Backend& be, Parameters& p, int step) {
  for (int i = 0; i < p.count(); ++i) {
    Rng rng(uint64_t(100 * step + i));
    std::vector<double> g(size_t(p.grad(i).numel()));
    for (auto& x : g) x = 0.01 * rng.normal();
    be.from_host_f64(p.grad(i), g);
  }
}

// B sequences of T random tokens, EOTs at a third, just after it (a one-token document)
// and two thirds of the first sequence, and mid-way through the second.
inline void batch_with_documents(int64_t B, int64_t T, const GPTConfig& c,
                                 std::vector<int32_t>& x, std::vector<int32_t>& y,
                                 uint64_t seed) {
  Rng rng(seed);
  x.resize(size_t(B * T));
  y.resize(size_t(B * T));
  for (auto& t : x) {
    t = int32_t(rng.below(uint64_t(c.vocab)));
    if (t == c.eot) t = (t + 1) % int32_t(c.vocab);
  }
  for (auto& t : y) t = int32_t(rng.below(uint64_t(c.vocab)));
  x[0] = c.eot;
  x[size_t(T / 3)] = c.eot;
  x[size_t(T / 3 + 1)] = c.eot;
  x[size_t(2 * T / 3)] = c.eot;
  if (B > 1) x[size_t(T + T / 2)] = c.eot;
}

// A fresh directory under the system's temp dir, removed at the end unless `keep`.
// A folder of this process's own under the temp directory: tests of two builds (or a CI
// run beside a developer's) run at once without deleting each other's files.
inline fs::path process_temp(const std::string& name) {
  return fs::temp_directory_path() / ("speedrun_" + name + "_" + std::to_string(::getpid()));
}

struct TempDir {
  fs::path path;
  bool keep = false;
  explicit TempDir(const std::string& name) {
    path = process_temp(name);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    if (!keep) fs::remove_all(path);
  }
  fs::path operator/(const std::string& s) const { return path / s; }
};

inline std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

// The metrics of a run without the wall times and memory: one JSON text per line.
inline std::vector<std::string> metrics_without_times(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream f(p);
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("ms");
    j.erase("peak_mib");
    out.push_back(j.dump());
  }
  return out;
}

// Synthetic shards (vocab 128, EOT 0) split into train and validation file lists.
struct ShardFiles {
  std::vector<std::string> train, val;
};
inline ShardFiles synthetic_shards(const fs::path& dir, int64_t train_tokens,
                                   int64_t val_tokens, uint64_t seed = 99) {
  ShardFiles s;
  for (auto& f : write_synthetic_shards(dir.string(), train_tokens, val_tokens, 128, 0, seed))
    (f.find("_val_") != std::string::npos ? s.val : s.train).push_back(f);
  return s;
}

// A micro training run of 8 steps on synthetic_shards' vocabulary whose window, LR and
// momentum all move: 2 layers, 2 heads x 16, sequences of 256, 2 per step, window 64 ->
// 256, validation every 4 steps over 512 tokens.
inline TrainConfig micro_run(const fs::path& out, PrecisionChoice dtype = PrecisionChoice::FP32) {
  TrainConfig c = preset_config("tiny");
  c.model.layers = 2;
  c.model.heads = 2;
  c.model.head_dim = 16;
  c.model.vocab = 128;
  c.model.eot = 0;
  c.seq_len = 256;
  c.batch = 2;
  c.schedule.steps = 8;
  c.schedule.cooldown = 4;
  c.schedule.window_start = 64;
  c.schedule.window_end = 256;
  c.schedule.momentum_warmup = 6;
  c.val_every = 4;
  c.val_tokens = 512;
  c.dtype = dtype;
  c.out_dir = out.string();
  return c;
}

// A run long enough to learn: 100 steps of 4 x 256 tokens on synthetic_shards' vocabulary
// (2 layers, 2 heads x 32), window 64 -> 256, cooldown 30, momentum warmup 20; validation
// every 50 steps over 4096 tokens; each backend's own precision (--dtype auto). test_train
// checks it learns; the CUDA test compares the GPU's curve with the CPU's on it.
inline TrainConfig learning_run(const fs::path& out) {
  TrainConfig c = micro_run(out, PrecisionChoice::Auto);
  c.model.head_dim = 32;
  c.batch = 4;
  c.schedule.steps = 100;
  c.schedule.cooldown = 30;
  c.schedule.momentum_warmup = 20;
  c.val_every = 50;
  c.val_tokens = 4 * 256 * 4;
  return c;
}

// What a trainer on `be` marks as waits: at each console line (a step's is logged inside
// the step, a validation's inside the validation) the message its watchdog would give an
// hour past the limit; "" where nothing was marked. The watchdog has no thread: nothing
// ends the run.
inline std::vector<std::string> waits_at_log_lines(Backend& be, const TrainConfig& c,
                                                   const ShardFiles& data) {
  StallWatchdog dog({.limit_s = 60, .who = "", .advice = "", .failure_advice = "", .on_stall = {},
                     .thread = false});
  std::vector<std::string> seen;
  Trainer t(be, c, data.train, data.val);
  t.watchdog = &dog;
  t.log = [&](const std::string&) {
    seen.push_back(dog.message(StallWatchdog::Clock::now() + std::chrono::hours(1)));
  };
  t.run();
  return seen;
}

}  // namespace speedrun::test
