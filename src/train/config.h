// TrainConfig: what a training run computes: the model, the schedules, the optimizers, the
// batch, the data, the artefacts. Every field is a setting declared once in the settings
// table (train/settings.cpp), from which come the command-line flags, the checkpoint's JSON,
// the resume comparison and the flag names in errors. Presets (record, previous-record,
// tiny) are data over that table (train/presets.cpp). Where a run executes (--device,
// --threads) is not part of it: see BackendOptions (backend/factory.h).
#pragma once
#include <cstdint>
#include <string>

#include "core/precision.h"
#include "model/config.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace speedrun {

// The defaults are SPEC.md's record: the "record" preset is these values.
struct TrainConfig {
  std::string preset = "tiny";  // the preset `speedrun train` starts from when none is given
  GPTConfig model;
  ScheduleConfig schedule;
  OptimConfig optim;
  int64_t seq_len = 65536;      // T: tokens per sequence
  int64_t batch = 8;            // sequences per step, over all ranks and micro-batches
  int64_t grad_accum = 0;       // micro-batches per rank per step (0: auto, see below)
  int64_t val_every = 125;      // steps between validations (0: only at the end)
  int64_t val_tokens = 10485760;
  int64_t save_every = 0;       // steps between checkpoints (0: none; weights at step 0 and end)
  int64_t keep = 0;             // checkpoints kept (the newest; 0: all)
  int64_t stop_after = 0;       // > 0: stop after this many steps with a checkpoint (resumable)
  double stall_timeout = 600;   // seconds a rank may wait for another or for its GPU (0: forever)
  std::string resume;           // a run or checkpoint directory to continue from
  bool overwrite = false;       // a new run may replace the run already in out_dir
  uint64_t seed = 0;
  PrecisionChoice dtype = PrecisionChoice::Auto;  // fp32 | fp64 | bf16 | auto (backend's)
  std::string train_glob, val_glob, out_dir = "runs/latest", init;

  // Throws naming the flag to fix: each setting's range (train/settings.h), then the rules
  // between settings. world: the number of ranks the run will use.
  void validate(int world = 1) const;
};

// The named preset's values (throws on an unknown name, listing the known ones).
TrainConfig preset_config(const std::string& name);

// The micro-batches each rank runs per step: grad_accum, or for 0 (auto) the fewest that
// keep a micro-batch within `max_tokens` tokens (1 when unlimited); always a divisor of
// batch / world. Throws when batch is not a multiple of world * grad_accum.
int64_t micro_batches(const TrainConfig& c, int world, int64_t max_tokens = 0);

}  // namespace speedrun
