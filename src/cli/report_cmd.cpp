// speedrun report: one self-contained HTML page (inline SVG charts) from runs' metrics.jsonl,
// a sweep's runs as one band per variant under its summary table.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/number_option.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "train/report.h"

namespace speedrun::cli {

namespace {

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out = "report.html", title = "speedrun report";
  std::optional<double> target_loss, loss_max;
};

// No output may overwrite an input: -o naming a run's metrics file (or a run directory, or
// a sweep's record) would replace the run's record with HTML.
void check_output_is_not_an_input(const ReportArgs& a) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const std::string& r : a.runs) {
    const fs::path in(r);
    for (const fs::path& p : {in, in / "metrics.jsonl", in / "sweep.json"})
      check(!fs::exists(a.out, ec) || !fs::exists(p, ec) || !fs::equivalent(a.out, p, ec),
            "report: -o ", a.out, " is the input ", p.string(),
            ": it would be overwritten; write the report to another file");
    check(fs::weakly_canonical(fs::path(a.out), ec) != fs::weakly_canonical(in / "metrics.jsonl", ec),
          "report: -o ", a.out, " is the input ", (in / "metrics.jsonl").string(),
          ": it would be overwritten; write the report to another file");
  }
}

void run_report(const ReportArgs& a) {
  check(!a.target_loss || std::isfinite(*a.target_loss), "--target-loss ", *a.target_loss,
        ": give a finite validation loss");
  check(!a.loss_max || (std::isfinite(*a.loss_max) && *a.loss_max > 0), "--loss-max ",
        *a.loss_max, ": give a finite loss above 0");
  check_output_is_not_an_input(a);
  const ReportInputs in = load_report_inputs(a.runs);
  const auto& runs = in.runs;
  check(!runs.empty(), "report: none of the runs has written metrics yet");
  for (const auto& r : runs)
    if (!r.metrics.note.empty()) std::fprintf(stderr, "note: %s\n", r.metrics.note.c_str());
  ReportOptions o;
  o.title = a.title;
  o.target_loss = a.target_loss ? a.target_loss : in.target_loss;
  o.loss_max = a.loss_max;
  // The summary table for a sweep, runs grouped by variant, or a target to time.
  if (in.grouped || o.target_loss) o.summary = summarize(in.records, o.target_loss);
  const std::string html = render_report(runs, o);
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
  sub->add_option("runs", a->runs,
                  "run directories (each with metrics.jsonl), metrics files, or sweep directories "
                  "(speedrun sweep's out: its runs drawn as one band per variant, with the "
                  "summary table); run directories named seed<k> are grouped by their parent")
      ->required();
  sub->add_option("-o,--out", a->out, "the HTML file to write")->capture_default_str();
  sub->add_option("--title", a->title, "the page's title")->capture_default_str();
  add_number_option(sub, "--target-loss", a->target_loss,
                  "validation loss to reach: a line on the loss charts, and the steps and time "
                  "to it in the summary table (default: a sweep's target)");
  add_number_option(sub, "--loss-max", a->loss_max,
                  "top of the loss charts' y axis (default: the highest loss): zooms on the end "
                  "of the runs, where variants differ by little");
  sub->callback([a]() { run_report(*a); });
}

}  // namespace speedrun::cli
