// speedrun report: one self-contained HTML page (inline SVG charts) from runs' metrics.jsonl.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/atomic_file.h"
#include "train/report.h"

namespace speedrun::cli {

namespace {

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out = "report.html", title = "speedrun report";
};

void run_report(const ReportArgs& a) {
  const auto runs = load_report_runs(a.runs);
  const std::string html = render_report(runs, a.title);
  AtomicFileWriter w(a.out, "report");
  w.write(html.data(), html.size());
  w.commit();
  size_t steps = 0;
  for (const auto& r : runs) steps += r.metrics.train.size();
  std::printf("report: %zu run(s), %zu training steps -> %s (%zu bytes)\n", runs.size(), steps,
              a.out.c_str(), html.size());
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  CLI::App* sub = app.add_subcommand(
      "report", "HTML page with SVG charts of runs' metrics.jsonl (loss, LR, window, momentum)");
  sub->add_option("runs", a->runs, "run directories (each with metrics.jsonl) or metrics files")
      ->required();
  sub->add_option("-o,--out", a->out, "the HTML file to write")->capture_default_str();
  sub->add_option("--title", a->title, "the page's title")->capture_default_str();
  sub->callback([a]() { run_report(*a); });
}

}  // namespace speedrun::cli
