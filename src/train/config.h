// TrainConfig: everything `speedrun train` can be told, with presets. `record` is
// SPEC.md's record (1750 steps, window 64 -> 1792); `previous-record` its "before" column;
// `tiny` (the default) a small model that trains visibly on a laptop CPU in ~2 minutes.
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "model/config.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace speedrun {

struct TrainConfig {
  std::string preset = "tiny";
  GPTConfig model;
  ScheduleConfig schedule;
  OptimConfig optim;
  int64_t seq_len = 65536;      // T: tokens per sequence
  int64_t batch = 8;            // B: sequences per rank per step
  int64_t val_every = 125;      // steps between validations (0: only at the end)
  int64_t val_tokens = 10485760;
  int64_t save_every = 0;       // steps between checkpoints (0: none; weights at step 0 and end)
  int64_t keep = 0;             // checkpoints kept (the newest; 0: all)
  int64_t stop_after = 0;       // > 0: stop after this many steps with a checkpoint (resumable)
  std::string resume;           // a run or checkpoint directory to continue from
  uint64_t seed = 0;
  int threads = 0;              // 0: all cores
  DType dtype = DType::F32;     // CPU compute precision: F32, or F64 for exact comparisons
  std::string train_glob, val_glob, out_dir = "runs/latest", init;
  int rank = 0, world = 1;
  // Every field is listed in train/config_io.cpp (checkpoints store it, resume compares it).

  void validate() const;  // throws naming the flag to fix
};

// The named preset's values (throws on an unknown name, listing the known ones).
TrainConfig preset_config(const std::string& name);

}  // namespace speedrun
