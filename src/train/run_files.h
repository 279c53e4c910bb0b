// RunFiles: what a training run writes into its directory (--out), and only on the rank
// that writes (rank 0; on the others every call does nothing):
//   metrics.jsonl                 one JSON object per step and per validation
//   model_step%06d.safetensors    weights at step 0 and at the end
//   ckpt_step%06d/                checkpoints (train/checkpoint.h), the newest `keep`
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "train/checkpoint.h"
#include "train/config.h"

namespace speedrun {

class RunFiles {
 public:
  RunFiles(const TrainConfig& config, bool writer);
  ~RunFiles();
  RunFiles(const RunFiles&) = delete;
  RunFiles& operator=(const RunFiles&) = delete;

  // Opens metrics.jsonl: a fresh run truncates it; a run resumed at `start` from a
  // checkpoint in `resumed_run_dir` keeps that run's lines before `start` and appends.
  // Returns the number of lines kept.
  int64_t open_metrics(int64_t start, const std::string& resumed_run_dir = "");
  // Appends one record; a failed write (a full disk) throws naming the file, so a run
  // never goes on with a metrics file that ends mid-record.
  void emit(const nlohmann::json& record);

  std::string weights_path(int64_t step) const;
  // Metadata of weights files next to the model config: step, preset, window at `step`.
  std::map<std::string, std::string> weights_meta(int64_t step) const;
  void save_weights(const Parameters& params, int64_t step) const;
  // Writes the checkpoint of meta.step and prunes to the newest `keep`; returns its path
  // ("" when this rank does not write).
  std::string checkpoint(Backend& backend, const CheckpointMeta& meta, const Parameters& params,
                         const Optimizer& opt) const;

  bool writer() const { return writer_; }

 private:
  const TrainConfig& cfg_;
  bool writer_;
  std::string metrics_path_;
  int metrics_fd_ = -1;
};

}  // namespace speedrun
