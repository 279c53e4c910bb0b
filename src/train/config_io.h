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

// What a rank of a data-parallel run computes with, which every rank must share: the config
// JSON with the auto values resolved ("grad-accum": the micro-batches this rank runs,
// "dtype": its precision's name), the data by shard names and sizes ("train-shards",
// "val-shards"), the speedrun it runs ("speedrun": version and source commit: another build
// may lay out or order its collectives otherwise), and without what is a rank's own ("stall-timeout") or may name the same
// files by another path on another machine ("train", "val").
nlohmann::json rank_terms(const TrainConfig& c, int64_t micro_batches, const std::string& precision,
                          const std::vector<std::string>& train_shards,
                          const std::vector<std::string>& val_shards);

// One line per rank and term that differs from rank 0's, ranks[r] being rank r's
// rank_terms: "rank 2: --batch 16 (rank 0: 8)". Empty when every rank agrees.
std::vector<std::string> rank_differences(const std::vector<nlohmann::json>& ranks);

}  // namespace speedrun
