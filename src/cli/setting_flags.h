// The flags of `speedrun train`, derived from the settings table (train/settings.h): one
// per setting, named by its key, bound to its TrainConfig field, its default (shown by
// --help) the field's value when declared, so the preset is chosen first.
#pragma once
#include <string>

#include <CLI/CLI.hpp>

#include "train/config.h"

namespace speedrun::cli {

// The --preset given in argv, read by CLI11 alone (every other argument left aside) before
// the flags are declared; TrainConfig's default preset when none is given or the name is
// unknown (the full parse then reports it).
std::string preset_in_args(int argc, char** argv);

// One option per setting with a flag, bound to its field of `cfg`.
void add_setting_flags(CLI::App* app, TrainConfig& cfg);

// "Presets:" and one line per preset with its description, for --help.
std::string presets_help();

}  // namespace speedrun::cli
