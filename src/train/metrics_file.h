// metrics.jsonl, the per-run record the trainer appends to: one JSON object per line,
//   {"step", "train_loss", "lr", "window", "momentum", "ms"}  per training step (ms: its
//                                                            wall time, validation excluded)
//   {"step", "val_loss", "window"}                           per validation
// `step` of a training record is the step index s (0-based; the console's step:s+1).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace speedrun {

struct MetricsLog {
  struct Train {
    int64_t step = 0;
    double loss = 0;
    double lr = NAN, momentum = NAN, ms = NAN, window = NAN;  // NaN when absent
  };
  struct Val {
    int64_t step = 0;
    double loss = 0;
    double window = NAN;
  };
  std::vector<Train> train;  // in file order
  std::vector<Val> val;
  // Non-empty when the last line was skipped as incomplete: says so, naming the file and line.
  std::string note;
};

// Reads a metrics file. A missing or empty file, a line that is not a JSON object with an
// integer "step" >= 0 and a numeric "train_loss" or "val_loss", throws Error naming the file
// and the line. A last line without its newline that is not JSON is a record still being
// written (or cut by a crash): it is skipped, and `note` says so.
MetricsLog read_metrics(const std::string& path);
// The same on the file's text; `path` names it in errors.
MetricsLog parse_metrics(std::string_view text, const std::string& path);

// Writes dst (atomically; dst may be src) with the lines of src whose "step" is below
// `step`: what a run resumed at `step` keeps before it appends. A last line cut short by a
// crash is dropped; any other line that is not JSON throws. A missing src gives an empty
// dst. Returns the number of lines kept.
int64_t keep_metrics_before(const std::string& src, const std::string& dst, int64_t step);
// What keep_metrics_before writes, from src's text; *kept receives the number of lines.
std::string metrics_before(std::string_view text, const std::string& src, int64_t step,
                           int64_t* kept);

}  // namespace speedrun
