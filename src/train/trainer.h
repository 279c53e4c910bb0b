// Trainer: SPEC.md's step loop, backend-agnostic. For s = 0..N: window(s); validation at
// s % val_every == 0 and at s == N; then (s < N) forward+backward on the next batch,
// optimizer step with lr_multiplier(s) and muon_momentum_at(s). Writes
// OUT/metrics.jsonl (one JSON object per step and per validation), weights
// OUT/model_step%06d.safetensors (step 0, every save_every steps, the end), and the
// record's console log lines.
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
  std::string final_weights;
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
