// metrics.jsonl (train/metrics_file.h) as `speedrun report` reads it and renders it
// (train/report.h), and as a resume trims it (metrics_before).
#include "train/metrics_file.h"
#include "train/report.h"

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz/metrics.jsonl";
  const std::string_view text = fuzz::text(data, size);
  speedrun::MetricsLog log;
  if (fuzz::parses(name, [&] { log = speedrun::parse_metrics(text, name); })) {
    // Two runs of one variant (drawn as a band) and one alone: every chart path is taken;
    // the runs table's build and device columns, known and unknown, escaped.
    const std::string page = speedrun::render_report(
        {{"run<&>", log, "v<&>", "c<&>1; c2", "cuda, <H>&"}, {"b", log, "v<&>", "", ""},
         {"c", log, "", "c1", ""}},
        "t");
    fuzz::require(page.find("</html>") != page.npos, "the report page is incomplete");
  }
  const int64_t step = size > 0 ? int64_t(data[0]) - 8 : 0;
  int64_t kept = 0;
  std::string before;
  if (!fuzz::parses(name, [&] { before = speedrun::metrics_before(text, name, step, &kept); }))
    return 0;
  int64_t again = 0;
  fuzz::require(speedrun::metrics_before(before, name, step, &again) == before && again == kept,
                "metrics_before is not idempotent");
  return 0;
}
