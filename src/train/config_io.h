// TrainConfig as JSON, keyed by the `speedrun train` flag names ("seq-len", "muon-lr"...;
// fields without a flag use the same style: "adam-eps", "momentum-start"). Checkpoints
// store it; resume compares the stored and the current config key by key.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/config.h"

namespace speedrun {

// Every field of TrainConfig (doubles round-trip exactly through nlohmann's printing).
nlohmann::json config_to_json(const TrainConfig& c);
// The inverse; keys missing from `j` keep TrainConfig's defaults. `where` names the
// source (a meta.json) in errors about a key of the wrong type.
TrainConfig config_from_json(const nlohmann::json& j, const std::string& where);

// Keys that may differ on resume because they do not change what is computed: where
// files go, threads, checkpoint cadence, where the data is found (the shard list itself
// is compared separately), the --init file (weights come from the checkpoint).
bool resume_may_differ(const std::string& key);

// The config of a resumed run: the checkpoint's, with the keys in `given` (flags given on
// the command line, without dashes) taken from `flags`; "resume" and "stop-after" always
// come from `flags` (they describe this invocation, not the run).
nlohmann::json merge_resume_config(const nlohmann::json& checkpoint, const nlohmann::json& flags,
                                   const std::vector<std::string>& given);

// One line per key that differs and may not: "--seq-len: checkpoint 256, now 128".
std::vector<std::string> config_differences(const nlohmann::json& checkpoint,
                                            const nlohmann::json& now);

}  // namespace speedrun
