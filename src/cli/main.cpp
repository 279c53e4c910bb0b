// speedrun: trains GPT models with the NanoGPT speedrun recipe. See README.md.
#include <chrono>
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/build_info.h"
#include "core/cpu_check.h"
#include "core/error.h"
#ifdef SPEEDRUN_HAVE_MPI
#include "dist/mpi/mpi_comm.h"
#endif

namespace {
// Prints an error; in a job of several MPI ranks it names this rank and ends every rank.
int report_error(const char* what) {
  std::fflush(stdout);
#ifdef SPEEDRUN_HAVE_MPI
  speedrun::abort_mpi_job_if_running(what);
#endif
  std::fprintf(stderr, "error: %s\n", what);
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
    return "error: " + CLI::FailureMessage::simple(a, e);
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
