// Trainer: SPEC.md's step loop, backend-agnostic. For s = 0..N: window(s); validation at
// s % val_every == 0 and at s == N; then (s < N) forward+backward on the next batch,
// optimizer step with lr_multiplier(s) and muon_momentum_at(s). Writes
// OUT/metrics.jsonl (one JSON object per step and per validation, train/metrics_file.h),
// weights OUT/model_step%06d.safetensors at step 0 and the end, checkpoints
// OUT/ckpt_step%06d/ every save_every steps and at the end (train/checkpoint.h; the
// newest `keep`), and the record's console log lines with tokens/s and ETA.
// With config.resume it continues from a checkpoint bit-exactly: same parameters,
// optimizer state and step count, data position, log timers; metrics.jsonl keeps the
// lines before the checkpoint's step and is appended to. The checkpoint's config must
// equal this one (except resume_may_differ keys) and its shards the given ones.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "train/config.h"

namespace speedrun {

struct TrainResult {
  std::vector<double> train_losses;  // per step s = 0..N-1
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, loss)
  double final_val_loss = 0;
  std::string final_weights;     // the last weights (the checkpoint's when stopped early)
  std::string last_checkpoint;   // the newest checkpoint written, if any
  int64_t start_step = 0;        // the step the run began at (a resumed run's checkpoint step)
};

class Trainer {
 public:
  // train_files / val_files: shard paths (sorted); val_files may be empty (no validation).
  Trainer(Backend& backend, TrainConfig config, std::vector<std::string> train_files,
          std::vector<std::string> val_files);
  TrainResult run();
  // Called with each console line (default: stdout).
  std::function<void(const std::string&)> log;

 private:
  Backend& be_;
  TrainConfig cfg_;
  std::vector<std::string> train_files_, val_files_;
};

}  // namespace speedrun
