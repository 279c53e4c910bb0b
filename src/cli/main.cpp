// speedrun: trains GPT models with the NanoGPT speedrun recipe. See README.md.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "core/build_info.h"
#include "dist/launch.h"
#include "core/cpu_check.h"
#include "core/error.h"
#ifdef SPEEDRUN_HAVE_MPI
#include "dist/mpi/mpi_comm.h"
#endif

namespace {
// CLI11 answers a word that is no subcommand with "A subcommand is required": name the
// word and the commands it could have been. Empty when `e` is not about a missing
// subcommand. `app` is the top level; the innermost parsed subcommand is the one missing one.
std::string unknown_subcommand_message(const CLI::App* app, const CLI::Error& e) {
  if (!dynamic_cast<const CLI::RequiredError*>(&e)) return "";
  std::string path = "speedrun";
  while (!app->get_subcommands().empty()) {
    app = app->get_subcommands().front();
    path += " " + app->get_name();
  }
  const auto subs = app->get_subcommands([](const CLI::App* s) { return !s->get_group().empty(); });
  if (subs.empty() || app->get_subcommands().size() >= app->get_require_subcommand_min())
    return "";
  std::string names;
  for (const CLI::App* s : subs) names += (names.empty() ? "" : ", ") + s->get_name();
  std::string word;
  for (const std::string& w : app->remaining())
    if (!w.empty() && w[0] != '-') {
      word = w;
      break;
    }
  if (word.empty())
    return "error: " + path + " needs a command: one of " + names + " (" + path +
           " --help describes them)\n";
  return "error: '" + word + "' is not a command of " + path + ": give one of " + names + " (" +
         path + " --help describes them)\n";
}

// "rank R of W: " for a process a launcher started as one rank of several, else "": errors
// that come before MPI runs (a flag, a missing file) name their rank as the later ones do.
std::string rank_prefix() {
  const speedrun::LaunchInfo l = speedrun::detect_launch();
  return l.world > 1 ? "rank " + std::to_string(l.rank) + " of " + std::to_string(l.world) + ": "
                     : "";
}

// Prints an error; in a job of several MPI ranks it names this rank and ends every rank.
int report_error(const char* what) {
  std::fflush(stdout);
#ifdef SPEEDRUN_HAVE_MPI
  speedrun::abort_mpi_job_if_running(what);
#endif
  std::fprintf(stderr, "error: %s%s\n", rank_prefix().c_str(), what);
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  const auto main_entry = std::chrono::steady_clock::now();  // speedrun bench: launch time
  speedrun::require_cpu_features();  // ran at load already; the call keeps it linked in
  speedrun::set_command_line(argc, argv);
  CLI::App app{"speedrun: train GPT models with the NanoGPT speedrun recipe (SPEC.md)"};
  app.set_version_flag("--version", speedrun::build_summary(),
                       "Print what built this speedrun (version, commit, compiler, CUDA) and exit");
  app.require_subcommand(1);
  // CLI11's own refusals (a missing required flag, an unknown one) start as every other
  // error does, so scripts and people find them the same way.
  app.failure_message([](const CLI::App* a, const CLI::Error& e) {
    const std::string unknown = unknown_subcommand_message(a, e);
    return unknown.empty() ? "error: " + rank_prefix() + CLI::FailureMessage::simple(a, e)
                           : unknown;
  });
  speedrun::cli::add_train_command(app, argc, argv);
  speedrun::cli::add_eval_command(app);
  speedrun::cli::add_prepare_command(app);
  speedrun::cli::add_tokenizer_command(app);
  speedrun::cli::add_sample_command(app);
  speedrun::cli::add_export_command(app);
  speedrun::cli::add_report_command(app);
  speedrun::cli::add_sweep_command(app);
  speedrun::cli::add_devices_command(app);
  speedrun::cli::add_bench_command(app, main_entry);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    return report_error(e.what());
  }
  return speedrun::cli::exit_status();
}

int& speedrun::cli::exit_status() {
  static int status = 0;
  return status;
}
