// The HTML report of one or more training runs: a self-contained page (inline CSS and SVG;
// no script, no external font or file) with a summary table and five charts, the runs
// overlaid in one color each:
//   loss against step and against training time (train: thin line; val: thick line with
//   dots; log-scale y), the LR multiplier, the attention window and Muon's momentum
//   against step. Every series is one <path data-run="INDEX" data-series="SERIES">, SERIES
//   in train_loss, val_loss, train_loss_time, val_loss_time, lr, window, momentum.
// Runs in groups (a sweep's variants) are drawn per group instead, one color each: every
// series as its mean over the group's runs at each step, <path data-variant="INDEX"
// data-series="SERIES">, and each loss series also as a band from the minimum to the
// maximum, <path data-variant="INDEX" data-series="SERIES" data-band="min-max">; the sweep's
// summary table (train/sweep_summary.h) comes above the charts. A target loss is a dashed
// line on the loss charts; a loss_max cuts their y axis there, so that the small
// differences at the end of runs are visible.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "train/metrics_file.h"
#include "train/sweep_summary.h"

namespace speedrun {

struct ReportRun {
  std::string name;   // shown in the legend
  MetricsLog metrics;
  std::string group;  // its variant: the runs of a group are drawn as one band; "" alone
  std::string built_by, ran_on;  // its launches' commits and devices (run_dir.h; "" unknown)
};

struct ReportOptions {
  std::string title = "speedrun report";
  std::optional<double> target_loss;    // a dashed line on the loss charts
  std::optional<double> loss_max;       // the loss charts' y axis ends here (zooms on the end)
  std::optional<SweepSummary> summary;  // the table above the charts
};

// The page; throws Error on an empty list. Drawn by group when any run has one.
std::string render_report(const std::vector<ReportRun>& runs, const ReportOptions& o);
std::string render_report(const std::vector<ReportRun>& runs, const std::string& title);

// What `speedrun report PATH...` shows. A path is a sweep's directory (its sweep.json: every
// run, grouped by variant), a run directory, or a metrics file. Run directories named
// seed<k> (a sweep's layout, OUT/<variant>/seed<k>) are grouped by their parent's name;
// when anything is grouped, a run alone is a group of one.
struct ReportInputs {
  std::vector<ReportRun> runs;         // the runs with metrics
  std::vector<SweepRun> records;       // every run, for the summary (unstarted ones too)
  bool grouped = false;
  std::optional<double> target_loss;   // the sweep's, if one was given
};
ReportInputs load_report_inputs(const std::vector<std::string>& paths);

// The runs of `paths` (run directories holding metrics.jsonl, or metrics files), named by
// their directory (with the parent added where two names would clash).
std::vector<ReportRun> load_report_runs(const std::vector<std::string>& paths);

}  // namespace speedrun
