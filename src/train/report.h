// The HTML report of one or more training runs: a self-contained page (inline CSS and SVG;
// no script, no external font or file) with a summary table and five charts, the runs
// overlaid in one color each:
//   loss against step and against training time (train: thin line; val: thick line with
//   dots; log-scale y), the LR multiplier, the attention window and Muon's momentum
//   against step. Every series is one <path data-run="NAME" data-series="SERIES">, SERIES
//   in train_loss, val_loss, train_loss_time, val_loss_time, lr, window, momentum.
#pragma once
#include <string>
#include <vector>

#include "train/metrics_file.h"

namespace speedrun {

struct ReportRun {
  std::string name;  // shown in the legend
  MetricsLog metrics;
};

// The page; throws Error on an empty list.
std::string render_report(const std::vector<ReportRun>& runs, const std::string& title);

// The runs of `paths` (run directories holding metrics.jsonl, or metrics files), named by
// their directory (with the parent added where two names would clash).
std::vector<ReportRun> load_report_runs(const std::vector<std::string>& paths);

}  // namespace speedrun
