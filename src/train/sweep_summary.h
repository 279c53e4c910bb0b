// The summary of a sweep (or of run directories grouped by variant), per variant over its
// seeds:
//   - the final validation loss (the one at --steps) of the finished runs: mean and sample
//     standard deviation (n - 1; none for one run);
//   - seeds finished of seeds given;
//   - steps and training time to the target loss: the first validation at or below it,
//     interpolated linearly from the validation before (the run crossed the target between
//     the two); mean and standard deviation over the finished runs that reached it;
//   - tokens seen: steps trained x tokens per step.
// Training time is the sum of the training steps' "ms" in metrics.jsonl, validation
// excluded, as the record's train_time.
// Only finished runs (final weights written, metrics complete) enter the statistics.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/metrics_file.h"

namespace speedrun {

// One run as the summary sees it.
struct SweepRun {
  std::string variant;
  uint64_t seed = 0;
  std::string dir;
  MetricsLog metrics;           // empty when the run has not started
  std::string problem;          // why its metrics did not read back (then empty), or ""
  int64_t steps = 0;            // --steps (N); 0: unknown
  int64_t tokens_per_step = 0;  // batch x seq-len; 0: unknown
  bool finished = false;
  std::vector<std::string> commits, devices;  // what ran it (run.json's launches; run_dir.h)
};

// Whether metrics hold a whole run of `steps` steps: every training step up to N-1 and,
// when the run validates, the validation at N.
bool metrics_complete(const MetricsLog& m, int64_t steps);

// Loads a run directory: its metrics (if any), and whether it finished (weights
// model_step<N>.safetensors present and metrics complete). Metrics that do not read back (a
// line cut by a crash) leave the run unfinished with the reason in `problem`. steps / tokens_per_step: the
// run's, or 0 to read them from its newest checkpoint's config (steps also from its final
// weights' name).
SweepRun load_sweep_run(const std::string& dir, const std::string& variant, uint64_t seed,
                        int64_t steps = 0, int64_t tokens_per_step = 0);

// Where a run's validation loss first reached `target`.
struct TargetCrossing {
  double step = 0;  // interpolated between the validations before and at the crossing
  double ms = 0;    // training time at that step, interpolated the same way
};
std::optional<TargetCrossing> target_crossing(const MetricsLog& m, double target);

// Training time before step s: the sum of "ms" of the training steps below s.
double training_ms_before(const MetricsLog& m, int64_t s);

struct SampleStats {
  int n = 0;
  double mean = 0;
  std::optional<double> std;  // sample standard deviation (n - 1), for n >= 2
};
SampleStats sample_stats(const std::vector<double>& xs);

struct VariantSummary {
  std::string variant;
  int seeds = 0, finished = 0, reached = 0;  // reached: finished runs that reached the target
  SampleStats final_val_loss;
  SampleStats steps_to_target, seconds_to_target, tokens_to_target;
  std::optional<double> tokens_seen;  // mean over the finished runs
  struct Run {
    uint64_t seed = 0;
    std::string dir;
    bool finished = false;
    int64_t steps_done = 0;
    std::optional<double> final_val_loss;
    std::optional<TargetCrossing> crossing;
  };
  std::vector<Run> runs;
};

struct SweepSummary {
  std::optional<double> target_loss;
  std::vector<VariantSummary> variants;  // in the order they first appear in the runs
  // The speedrun commits and the devices that ran the runs, with how many runs each (a run
  // resumed elsewhere counts for each): more than one of either and the note says what it
  // confounds.
  std::vector<std::pair<std::string, int>> commits, devices;
};

SweepSummary summarize(const std::vector<SweepRun>& runs, std::optional<double> target_loss);

// The table for the console (aligned columns), as Markdown, and as JSON.
std::string summary_text(const SweepSummary& s);
std::string summary_markdown(const SweepSummary& s);
nlohmann::ordered_json summary_json(const SweepSummary& s);

// The table's cells, shared by the formats and the HTML report: a header row, then one row
// per variant.
std::vector<std::vector<std::string>> summary_cells(const SweepSummary& s);
// What the table's numbers are, in a sentence or two, for below it.
std::string summary_note(const SweepSummary& s);

}  // namespace speedrun
