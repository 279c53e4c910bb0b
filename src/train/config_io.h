// TrainConfig as JSON, keyed by the settings table (train/settings.h): one key per setting,
// the `speedrun train` flag without dashes ("seq-len", "muon-lr"; settings without a flag
// use the same style: "rope-base"). Checkpoints store it; resume compares the stored and
// the current config setting by setting.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/config.h"

namespace speedrun {

// Every setting of TrainConfig (doubles round-trip exactly through nlohmann's printing;
// enums as their names: "linear", "bf16").
nlohmann::json config_to_json(const TrainConfig& c);
// The inverse; settings missing from `j` keep TrainConfig's defaults, and keys that are no
// settings (an older version's "threads", "rank", "world") are ignored. `where` names the
// source (a meta.json) in errors about a value of the wrong type.
TrainConfig config_from_json(const nlohmann::json& j, const std::string& where);

// The config of a resumed run: the checkpoint's, with the settings in `given` (flags given
// on the command line, without dashes) taken from `flags`, and those that describe this
// invocation (OnResume::ThisRun: "resume", "stop-after") always from `flags`.
nlohmann::json merge_resume_config(const nlohmann::json& checkpoint, const nlohmann::json& flags,
                                   const std::vector<std::string>& given);

// One line per setting that differs and must not (OnResume::Same):
// "--seq-len: checkpoint 256, now 128". Keys that are no settings are not compared.
std::vector<std::string> config_differences(const nlohmann::json& checkpoint,
                                            const nlohmann::json& now);

}  // namespace speedrun
