// speedrun sweep SPEC: trains every variant of a spec from every seed, each run a `speedrun
// train` child of this same binary, N at a time, skipping finished runs and resuming
// interrupted ones; then the summary table (train/sweep.h, docs/EXPERIMENTS.md).
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "train/sweep.h"

namespace speedrun::cli {

namespace {

struct SweepArgs {
  std::string spec, out;
  bool summary = false, dry_run = false;
};

void run_sweep_cmd(const SweepArgs& a) {
  SweepSpec spec = read_sweep_spec(a.spec);
  if (!a.out.empty()) spec.out = a.out;
  if (a.summary) {
    const SweepSummary s = summarize_sweep(spec);
    std::printf("%s", summary_text(s).c_str());
    std::printf("(mean ± sample standard deviation over the finished seeds)\n");
    return;
  }
  SweepOptions o;
  // This process's own image, even if the file is rebuilt while the sweep runs: every run
  // of a sweep runs the same binary.
  o.train_binary = "/proc/self/exe";
  o.rerun_command = "speedrun sweep " + a.spec + (a.out.empty() ? "" : " --out " + a.out);
  o.dry_run = a.dry_run;
  const SweepOutcome r = run_sweep(spec, o);
  if (r.stopped_by_signal != 0) exit_status() = 128 + r.stopped_by_signal;
  else if (r.failed > 0) exit_status() = 1;
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  CLI::App* sub = app.add_subcommand(
      "sweep", "Train every variant of a sweep spec from every seed (each run a speedrun train "
               "child), skipping finished runs and resuming stopped ones; then the summary");
  sub->footer("The spec's format: docs/EXPERIMENTS.md. Ctrl-C stops every run with a "
              "checkpoint; running the same sweep again continues it.");
  sub->add_option("spec", a->spec, "the sweep spec (JSON)")->required();
  sub->add_flag("--summary", a->summary,
                "print the summary of the runs as they are (and write summary.json and "
                "summary.md); run nothing");
  sub->add_flag("--dry-run", a->dry_run, "print each run's state and command; run nothing");
  sub->add_option("--out", a->out, "the sweep's directory instead of the spec's \"out\"");
  sub->callback([a]() { run_sweep_cmd(*a); });
}

}  // namespace speedrun::cli
