#include "train/presets.h"

#include <string>

#include "core/error.h"
#include "train/config.h"
#include "train/settings.h"

namespace speedrun {

const std::vector<Preset>& presets() {
  static const std::vector<Preset> list = {
      // SPEC.md: 8 sequences of 64K tokens per step (one per GPU on 8 GPUs; on one process
      // the same 8 sequences, each from its own reader, as one batch or as micro-batches:
      // the same batches and gradients). Newton-Schulz in fp32 (--ns-bf16 emulates the
      // GPU's bf16).
      {"record",
       "SPEC.md's record: GPT-2 small, 1750 steps of 8 x 65,536 tokens, window 64 -> 1792",
       {{"out", "runs/record"}}},
      {"previous-record",
       "the record before it: 1875 steps, fixed window 1024, beta1 0.9, Muon lr 0.04",
       {{"steps", "1875"},
        {"cooldown", "562"},
        {"window-schedule", "fixed"},
        {"window-start", "1024"},
        {"window-end", "1024"},
        {"adam-beta1", "0.9"},
        {"muon-lr", "0.04"},
        {"momentum-warmup", "500"},
        {"out", "runs/previous-record"}}},
      {"tiny",
       "4 layers x 2 heads x 64, sequences of 1024 tokens, 300 steps, window 64 -> 512: "
       "minutes on a CPU (head dim 64: the GPU's attention kernels take 64 or 128)",
       {{"layers", "4"},
        {"heads", "2"},
        {"head-dim", "64"},
        {"vocab", "512"},
        {"eot", "0"},
        {"seq-len", "1024"},
        {"batch", "4"},
        {"steps", "300"},
        {"cooldown", "110"},
        {"window-start", "64"},
        {"window-end", "512"},
        {"momentum-warmup", "50"},
        {"val-every", "50"},
        {"val-tokens", "32768"},
        {"out", "runs/tiny"}}},
  };
  return list;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : presets()) names.push_back(p.name);
  return names;
}

TrainConfig preset_config(const std::string& name) {
  for (const Preset& p : presets()) {
    if (name != p.name) continue;
    TrainConfig c;
    c.preset = name;
    for (const auto& [key, text] : p.values) set_setting(c, key, text, "preset " + name);
    return c;
  }
  fail("--preset '", name, "': unknown; choose ", choice_list(preset_names()));
}

}  // namespace speedrun
