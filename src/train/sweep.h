// speedrun sweep: trains every (variant, seed) of a spec (train/sweep_spec.h), each as
// `speedrun train` in a child process (core/child_process.h), so a crash or a signal in one
// run never takes the sweep down and each run is exactly what that command does.
//
// The sweep's directory (the spec's "out"):
//   OUT/sweep.json                   the spec and, per run, its directory, steps, tokens per
//                                    step and config (what `speedrun report OUT` reads)
//   OUT/<variant>/seed<k>/           one run directory each (train/run_dir.h), with
//                      train.log     the run's console output, appended by every attempt
//   OUT/summary.json, summary.md     the summary (train/sweep_summary.h)
//   OUT/.sweep.lock                  held by the sweep running in OUT
//
// Each run is, in turn: finished (final weights and complete metrics): skipped; stopped
// with a checkpoint: resumed (--resume); stopped at the spec's stop-after: left until the
// spec no longer asks for the stop; started but without a usable checkpoint: started over
// (--overwrite); else started. A run directory that holds a run of other settings (a
// changed spec) is refused before anything runs. On SIGINT/SIGTERM the signal is forwarded
// once to every running child (each stops after its step with a checkpoint), the sweep
// waits for them and says how to continue: run the same sweep again.
#pragma once
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "train/sweep_spec.h"
#include "train/sweep_summary.h"

namespace speedrun {

struct SweepOptions {
  std::string train_binary;   // the speedrun executable whose `train` runs each run
  std::string rerun_command;  // how to run this sweep again, for messages
  bool dry_run = false;       // print each run's state and command; run nothing
  FILE* out = stdout;
};

struct SweepOutcome {
  int total = 0, finished = 0, paused = 0, failed = 0;
  int stopped_by_signal = 0;  // the signal that stopped the sweep, or 0
  SweepSummary summary;
};

SweepOutcome run_sweep(const SweepSpec& spec, const SweepOptions& o);

// The runs of the spec as they are on disk now, summarized; summary.json and summary.md
// are written into the sweep's directory when it exists.
SweepSummary summarize_sweep(const SweepSpec& spec);

// A sweep's directory (holding sweep.json): its runs, loaded, and the spec's target loss.
bool is_sweep_dir(const std::string& dir);
struct SweepDirRuns {
  std::vector<SweepRun> runs;
  std::optional<double> target_loss;
};
SweepDirRuns load_sweep_dir(const std::string& dir);

}  // namespace speedrun
