// Presets: named starting values for `speedrun train`, as data over the settings table
// (train/settings.h): each is a list of settings, written as on the command line, applied
// over TrainConfig's defaults (which are SPEC.md's record). preset_config (train/config.h)
// builds one; --preset's choices and its help come from this list.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace speedrun {

struct Preset {
  const char* name;
  const char* description;  // one line for --help
  std::vector<std::pair<const char*, const char*>> values;  // setting key -> value as text
};

const std::vector<Preset>& presets();
std::vector<std::string> preset_names();

}  // namespace speedrun
