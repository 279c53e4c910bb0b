#include "train/run_files.h"

#include <filesystem>

#include <fmt/format.h>

#include "optim/schedule.h"
#include "train/metrics_file.h"

namespace speedrun {

namespace fs = std::filesystem;

RunFiles::RunFiles(const TrainConfig& config, bool writer)
    : cfg_(config), writer_(writer),
      metrics_path_((fs::path(config.out_dir) / "metrics.jsonl").string()) {
  if (writer_) fs::create_directories(cfg_.out_dir);
}

int64_t RunFiles::open_metrics(int64_t start, const std::string& resumed_run_dir) {
  if (!writer_) return 0;
  int64_t kept = 0;
  if (start > 0) {
    const std::string src = (fs::path(resumed_run_dir) / "metrics.jsonl").string();
    kept = keep_metrics_before(src, metrics_path_, start);
  }
  metrics_.open(metrics_path_, start > 0 ? std::ios::app : std::ios::trunc);
  check(bool(metrics_), "cannot write ", metrics_path_, ": check --out");
  return kept;
}

void RunFiles::emit(const nlohmann::json& record) {
  if (!writer_) return;
  metrics_ << record.dump() << '\n';
  metrics_.flush();
}

std::string RunFiles::weights_path(int64_t step) const {
  return (fs::path(cfg_.out_dir) / fmt::format("model_step{:06d}.safetensors", step)).string();
}

std::map<std::string, std::string> RunFiles::weights_meta(int64_t step) const {
  return {{"step", std::to_string(step)},
          {"preset", cfg_.preset},
          {"window", std::to_string(attention_window(cfg_.schedule, step))}};
}

void RunFiles::save_weights(const Parameters& params, int64_t step) const {
  if (writer_) params.save(weights_path(step), weights_meta(step));
}

std::string RunFiles::checkpoint(Backend& backend, const CheckpointMeta& meta,
                                 const Parameters& params, const Optimizer& opt) const {
  if (!writer_) return "";
  const std::string dir =
      write_checkpoint(cfg_.out_dir, backend, meta, params, opt, weights_meta(meta.step));
  prune_checkpoints(cfg_.out_dir, cfg_.keep);
  return dir;
}

}  // namespace speedrun
