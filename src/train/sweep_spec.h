// A sweep: variants of a training run, each trained from several seeds (docs/EXPERIMENTS.md).
// The spec file is JSON:
//   {
//     "preset": "tiny",                           the preset every run starts from (required)
//     "flags": {"steps": 200, "val-every": 25},   flags of every run (optional)
//     "variants": [                               at least one (required)
//       {"name": "window-warmup"},
//       {"name": "fixed-window", "flags": {"window-schedule": "fixed"}}
//     ],
//     "seeds": [0, 1, 2],                         or a count: 3 means 0, 1, 2 (required)
//     "out": "runs/window",                       the sweep's directory (required)
//     "target-loss": 4.2,                         validation loss to time (optional)
//     "parallel": 2,                              runs at a time (optional, default 1)
//     "threads": 8,                               CPU threads split between them (optional)
//     "device": "cpu"                             --device of every run (optional)
//   }
// Flags are `speedrun train`'s without the dashes, their values as the flag takes them
// (numbers, "fixed", true); a variant's flags come after the common ones. The sweep owns
// --out, --resume, --overwrite and --seed; --save-every defaults to a tenth of the run and
// --keep to 2. Every variant's flags are checked against the settings table when the spec
// is read, before anything runs. Errors name the file, the line and the key.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "train/config.h"

namespace speedrun {

using FlagList = std::vector<std::pair<std::string, std::string>>;  // (key, value text)

struct SweepVariant {
  std::string name;   // also its directory under out
  FlagList flags;     // the common flags, then the variant's own, as given
  TrainConfig config; // the preset with those flags, checked (seed and out not yet set)
  int line = 0;       // where it is in the spec file
};

struct SweepSpec {
  std::string file;  // the spec's path, for messages
  std::string text;  // the spec as written, recorded in the sweep's directory
  std::string preset;
  std::vector<SweepVariant> variants;
  std::vector<uint64_t> seeds;
  std::string out;
  std::optional<double> target_loss;
  int parallel = 1;
  int threads = 0;     // 0: every core, split between the parallel runs
  std::string device;  // "": train's default
};

// The most runs (variants x seeds) one sweep plans, and the most it runs at a time: a
// bound that no real study meets, so a typo ("seeds": 30000000) is an error, not a plan that
// fills the memory before the first run.
constexpr int64_t kMaxSweepRuns = 10000;
// The most CPU threads "threads" may split.
constexpr int64_t kMaxSweepThreads = 65536;

// Parses and checks a spec's text; `file` names it in errors ("spec.json line 7: ...").
SweepSpec parse_sweep_spec(const std::string& text, const std::string& file);
// Reads and parses the file.
SweepSpec read_sweep_spec(const std::string& path);

// One run of a sweep: a variant and a seed in out/<variant>/seed<seed>.
struct SweepRunPlan {
  std::string variant;
  uint64_t seed = 0;
  std::string dir;     // out/<variant>/seed<seed>
  std::string rel;     // <variant>/seed<seed>
  TrainConfig config;  // the variant's config with this seed and dir
  // The `speedrun train` flags of the run ("--key=value"), without --resume/--overwrite.
  std::vector<std::string> args;
};

// Every (variant, seed) in the spec's order: variants outer, seeds inner.
std::vector<SweepRunPlan> plan_sweep(const SweepSpec& spec);

// The --save-every a run gets when the spec does not give one: about ten checkpoints per
// run, so an interrupted sweep loses at most a tenth of a run.
int64_t default_save_every(int64_t steps);

}  // namespace speedrun
