// speedrun: trains GPT models with the NanoGPT speedrun recipe. See README.md.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"speedrun: train GPT models with the NanoGPT speedrun recipe (SPEC.md)"};
  app.require_subcommand(1);
  speedrun::cli::add_train_command(app, argc, argv);
  speedrun::cli::add_eval_command(app);
  speedrun::cli::add_prepare_command(app);
  speedrun::cli::add_tokenizer_command(app);
  speedrun::cli::add_sample_command(app);
  speedrun::cli::add_export_command(app);
  speedrun::cli::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const speedrun::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
