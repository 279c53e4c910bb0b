// A checkpoint's meta.json (train/checkpoint.h), as --resume reads it: the fields
// read_checkpoint checks, then the run config it holds, turned into a TrainConfig and
// checked the way `speedrun train --resume` does (train_cmd.cpp).
#include "train/checkpoint.h"
#include "train/config_io.h"
#include "train/settings.h"

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = "fuzz/ckpt_step000001";
  speedrun::CheckpointMeta m;
  if (!fuzz::parses(dir, [&] { m = speedrun::parse_checkpoint_meta(fuzz::text(data, size), dir); }))
    return 0;
  fuzz::require(m.step >= 0 && m.optimizer_steps >= 0 && !m.loaders.empty() &&
                    m.files.size() == 2,
                "parse_checkpoint_meta accepted a meta it documents as invalid");
  const std::string where = dir + "/meta.json";
  const nlohmann::json now = speedrun::config_to_json(speedrun::TrainConfig{});
  speedrun::config_differences(m.config, now);
  nlohmann::json merged;
  fuzz::passes([&] { merged = speedrun::merge_resume_config(m.config, now, {"seq-len", "steps"}); });
  speedrun::TrainConfig c;
  if (!fuzz::parses(where, [&] { c = speedrun::config_from_json(merged, where); })) return 0;
  fuzz::passes([&] { c.validate(1); });
  return 0;
}
