// speedrun bench: the speed of a training step on a device (train/benchmark.h): the device's
// measured ceilings, a per-op table per window, the real step's time, tokens/s and MFU, peak
// memory and the time from launch to the first step.
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "cli/backend_flags.h"
#include "cli/commands.h"
#include "cli/number_option.h"
#include "core/atomic_file.h"
#include "train/benchmark.h"

namespace speedrun::cli {

namespace {

struct BenchArgs {
  BenchOptions opt;
  BackendOptions backend;
  std::string windows, json;
};

std::vector<int64_t> parse_windows(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int64_t w = 0;
    try {
      w = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used > 0 && used == item.size() && w >= 1, "--windows '", s,
          "': give attention windows in tokens, >= 1, separated by commas (64,1792)");
    out.push_back(w);
  }
  check(!out.empty(), "--windows '", s, "': give at least one window");
  return out;
}

void run_bench(BenchArgs& a, const LaunchTime& launch) {
  if (!a.windows.empty()) a.opt.windows = parse_windows(a.windows);
  a.opt.validate();
  // The JSON file is opened first: a path that cannot be written fails now, not after a
  // benchmark of minutes. (Its temporary file is removed if the benchmark fails.)
  std::optional<AtomicFileWriter> json;
  if (!a.json.empty()) json.emplace(a.json, "bench JSON");
  std::unique_ptr<Backend> backend = make_backend(a.backend);
  const BenchResult r = run_benchmark(*backend, a.opt, launch, [](const std::string& s) {
    std::fprintf(stderr, "bench: %s\n", s.c_str());
  });
  std::fputs(format_bench(r).c_str(), stdout);
  if (json) {
    const std::string text = bench_json(r).dump(2) + "\n";
    json->write(text.data(), text.size());
    json->commit();
    std::printf("\nwrote %s\n", a.json.c_str());
  }
}

}  // namespace

void add_bench_command(CLI::App& app, std::chrono::steady_clock::time_point main_entry) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand(
      "bench", "Measure a training step: the device's ceilings, per-op times, tokens/s, MFU");
  sub->add_option("--preset", a->opt.preset,
                  "model: record | previous-record | tiny (default: record on cuda, tiny on cpu)")
      ->check(CLI::IsMember({"record", "previous-record", "tiny"}));
  add_number_option(sub, "--seq-len", a->opt.seq_len, "tokens per sequence (default: the preset's)");
  add_number_option(sub, "--batch", a->opt.batch,
                  "sequences per step (default: the preset's; 1 with --micro-batch 1 is one "
                  "sequence and an optimizer step, as the GPU anchor)");
  add_number_option(sub, "--micro-batch", a->opt.micro_batch, "sequences per micro-batch")
      ->capture_default_str();
  sub->add_option("--windows", a->windows,
                  "attention windows, comma-separated (default: the preset's start and end, "
                  "e.g. 64,1792)");
  add_number_option(sub, "--reps", a->opt.reps,
                    "timed repetitions (medians; the GEMM and copy ceilings take at least 5)")
      ->capture_default_str();
  add_number_option(sub, "--warmup", a->opt.warmup,
                    "untimed steps per window first (the ceilings: at least 1)")
      ->capture_default_str();
  add_number_option(sub, "--gemm-size", a->opt.gemm_size,
                  "n of the n^3 GEMM ceiling (default: 8192 on a GPU, 2048 on the CPU)");
  add_number_option(sub, "--copy-mib", a->opt.copy_mib,
                  "buffer of the copy ceiling in MiB (default: 1024 on a GPU, 128 on the CPU)");
  add_number_option(sub, "--head-logits", a->opt.head_logits,
                  "logits the head computes at once, rows x vocabulary (default: the device's: "
                  "2^28 on a GPU, 2^25 on the CPU)");
  add_number_option(sub, "--seed", a->opt.seed, "seed of the weights' nudge and the batches")
      ->capture_default_str();
  sub->add_option("--data", a->opt.data,
                  "glob of token shards: the step's tokens are their first step's, as "
                  "`speedrun train --train GLOB` reads it (default: random documents)");
  add_number_option(sub, "--vocab", a->opt.vocab, "the model's vocabulary (default: the preset's)");
  add_number_option(sub, "--eot", a->opt.eot, "the documents' delimiter id (default: the preset's)");
  sub->add_option("--json", a->json, "also write the results as JSON to this file");
  add_enum_option(sub, "--dtype", a->opt.dtype, "precision (auto: the device's)");
  add_backend_flags(sub, a->backend);
  sub->callback([a, main_entry]() { run_bench(*a, LaunchTime::detect(main_entry)); });
}

}  // namespace speedrun::cli
