// Trainer: SPEC.md's step loop, backend- and rank-agnostic. For s = 0..N: window(s);
// validation at s % val_every == 0 and at s == N; then (s < N) one step: K micro-batches
// of forward+backward accumulating the gradient, the gradients averaged over the ranks,
// the optimizer step with lr_multiplier(s) and muon_momentum_at(s).
//
// Artefacts (rank 0 alone writes them; train/run_files.h): OUT/metrics.jsonl (one JSON
// object per step and per validation, train/metrics_file.h), weights
// OUT/model_step%06d.safetensors at step 0 and the end, checkpoints OUT/ckpt_step%06d/
// every save_every steps and at the end (train/checkpoint.h; the newest `keep`), and the
// record's console log lines with tokens/s and ETA.
//
// Batches: config.batch sequences per step over all ranks; rank r reads its batch / W
// sequences (the record's loader, SPEC.md "Data") and runs them as K micro-batches
// (--grad-accum, or auto: the backend's preferred micro-batch size), so one GPU with K = 8
// computes what 8 GPUs compute. With config.resume it continues from a checkpoint
// bit-exactly (same precision, threads and ranks): parameters, optimizer state, step
// count, data position, log timers; metrics.jsonl keeps the lines before the checkpoint's
// step and is appended to. The checkpoint's config must equal this one (except the keys a
// resume may change) and its shards the given ones.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/stall_watchdog.h"
#include "dist/comm.h"
#include "dist/local_comm.h"
#include "train/config.h"

namespace speedrun {

struct TrainResult {
  std::vector<double> train_losses;  // per step s = 0..N-1 (mean over the ranks)
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, loss)
  double final_val_loss = 0;
  std::string final_weights;     // the last weights (the checkpoint's when stopped early)
  std::string last_checkpoint;   // the newest checkpoint written, if any
  int64_t start_step = 0;        // the step the run began at (a resumed run's checkpoint step)
  int64_t micro_batches = 1;     // K: micro-batches per rank per step
  int stopped_by_signal = 0;     // SIGINT/SIGTERM when a signal stopped the run (-1: another rank's,
                                 // which the log names)
};

class Trainer {
 public:
  // train_files / val_files: shard paths (sorted); val_files may be empty (no validation).
  // comm: this process's rank of the run (every rank constructs a Trainer and calls run()).
  Trainer(Backend& backend, Comm& comm, TrainConfig config, std::vector<std::string> train_files,
          std::vector<std::string> val_files);
  // A single-process run.
  Trainer(Backend& backend, TrainConfig config, std::vector<std::string> train_files,
          std::vector<std::string> val_files);
  TrainResult run();
  // Called with each console line on rank 0 (default: stdout); other ranks log nothing.
  std::function<void(const std::string&)> log;
  // Where the run marks its waits for a GPU (each step, each validation) when the backend
  // is not the CPU; null: none. The Comm's waits are the Comm's to mark (WatchedComm). Must
  // outlive run().
  StallWatchdog* watchdog = nullptr;

 private:
  friend class TrainingRun;
  Backend& be_;
  LocalComm local_;
  Comm& comm_;
  TrainConfig cfg_;
  std::vector<std::string> train_files_, val_files_;
};

}  // namespace speedrun
