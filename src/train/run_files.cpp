#include "train/run_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/build_info.h"
#include "optim/schedule.h"
#include "train/metrics_file.h"

namespace speedrun {

namespace fs = std::filesystem;

RunFiles::RunFiles(const TrainConfig& config, bool writer)
    : cfg_(config), writer_(writer),
      metrics_path_((fs::path(config.out_dir) / "metrics.jsonl").string()) {

}

int64_t RunFiles::open_metrics(int64_t start, const std::string& resumed_run_dir) {
  if (!writer_) return 0;
  int64_t kept = 0;
  if (start > 0) {
    const std::string src = (fs::path(resumed_run_dir) / "metrics.jsonl").string();
    kept = keep_metrics_before(src, metrics_path_, start);
  }
  metrics_fd_ = ::open(metrics_path_.c_str(),
                       O_WRONLY | O_CREAT | O_CLOEXEC | (start > 0 ? O_APPEND : O_TRUNC), 0644);
  check(metrics_fd_ >= 0, "cannot write ", metrics_path_, ": ", std::strerror(errno),
        " (check --out)");
  return kept;
}

RunFiles::~RunFiles() {
  if (metrics_fd_ >= 0) ::close(metrics_fd_);
}

void RunFiles::emit(const nlohmann::json& record) {
  if (!writer_) return;
  const std::string line = record.dump() + "\n";
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(metrics_fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : ENOSPC;
      // Cut the partial record (best effort) so the file stays whole lines.
      const off_t end = ::lseek(metrics_fd_, 0, SEEK_END);
      if (done > 0 && end >= off_t(done)) (void)!::ftruncate(metrics_fd_, end - off_t(done));
      const bool resumable = !list_checkpoints(cfg_.out_dir).empty();
      fail("cannot write ", metrics_path_, ": ", std::strerror(e), ": the run stops here; ",
           resumable ? "its checkpoints are intact (free space, then resume with --resume " +
                           cfg_.out_dir + ")"
                     : std::string("it has saved no checkpoint to resume from (free space, "
                                   "then start it again; --save-every K keeps checkpoints)"));
    }
    done += size_t(n);
  }
}

std::string RunFiles::weights_path(int64_t step) const {
  return (fs::path(cfg_.out_dir) / fmt::format("model_step{:06d}.safetensors", step)).string();
}

std::map<std::string, std::string> RunFiles::weights_meta(int64_t step) const {
  return {{"step", std::to_string(step)},
          {"preset", cfg_.preset},
          {"window", std::to_string(attention_window(cfg_.schedule, step))},
          {"speedrun", build_id()}};
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
