// One function per subcommand, each in its own file: registers the subcommand, its flags
// and its action on the app. argv is passed for flags that select defaults (--preset).
#pragma once
#include <chrono>

#include <CLI/CLI.hpp>

namespace speedrun::cli {

// The exit status of a command that ended without an error but did not finish (a training
// run stopped by a signal: 128 + the signal, as a shell reports it); 0 otherwise.
int& exit_status();

void add_train_command(CLI::App& app, int argc, char** argv);
void add_eval_command(CLI::App& app);
void add_prepare_command(CLI::App& app);    // prepare, shards info
void add_tokenizer_command(CLI::App& app);  // tokenizer train | encode | decode
void add_sample_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_sweep_command(CLI::App& app);
void add_devices_command(CLI::App& app);
// main_entry: the time at main's first line, for the launch -> first step time when the
// process's start cannot be read.
void add_bench_command(CLI::App& app, std::chrono::steady_clock::time_point main_entry);

}  // namespace speedrun::cli
