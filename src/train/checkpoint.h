// Checkpoints of a training run, for exact resume (docs/CHECKPOINTS.md):
//   OUT/ckpt_step%06d/model.safetensors  parameters, SPEC.md names, in the run's dtype
//                     state.safetensors  optimizer state: <param>.exp_avg / .exp_avg_sq
//                                        (Adam), <param>.momentum_buffer (Muon)
//                     meta.json          step, optimizer step count, every data reader's position,
//                                        the log's timers, the run's config, the shard list,
//                                        and the size and checksum of both files
// A checkpoint is written into OUT/.ckpt_step%06d.tmp.<pid>/ (each file fsynced), then
// the directory is renamed into place and OUT fsynced: a crash leaves either the complete
// checkpoint or none under its name. Reading validates everything before anything is used.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/params.h"
#include "optim/optimizer.h"

namespace speedrun {

// A training shard a checkpoint was trained on (meta.json), checked on resume.
struct TrainShard {
  std::string file;  // base name
  int64_t tokens = 0;
  std::string sample_hash;  // shard_sample_hash (data/shard.h); "": not taken (older versions)
};

// A file of the checkpoint as meta.json records it.
struct CheckpointFile {
  uint64_t bytes = 0;
  std::string checksum;  // file_checksum()
};

struct CheckpointMeta {
  int64_t step = 0;             // training steps done (the next step to run)
  int64_t optimizer_steps = 0;  // Optimizer::steps_taken()
  // Where each data reader reads next: reader r*K + k is rank r's micro-batch k
  // (data/step_loader.h); one reader for a single process without micro-batches.
  std::vector<DataLoader::Position> loaders;
  int64_t world = 1;            // ranks of the run that wrote it
  std::string run_id;           // the run it belongs to (train/run_dir.h); "" from older versions
  std::string numerics;         // Backend::numerics() of the run that wrote it ("": unknown)
  std::string commit;           // the source commit of the speedrun that wrote it (its
                                // "speedrun" object, core/build_info.h; "": unknown)
  double train_ms = 0;          // the console log's train_time and step_avg counters
  int64_t timed_steps = 0;
  nlohmann::json config;        // config_to_json of the run
  std::vector<TrainShard> train_shards;
  std::map<std::string, CheckpointFile> files;  // model.safetensors, state.safetensors (read
                                                // back only; write_checkpoint measures them)
};

using LogFn = std::function<void(const std::string&)>;

// "ckpt_step000123".
std::string checkpoint_name(int64_t step);

// Writes OUT/ckpt_step%06d for meta.step (replacing one of that step, e.g. after a resume
// from an older one); returns its path. weights_meta goes into model.safetensors' metadata
// next to the model config.
std::string write_checkpoint(const std::string& out_dir, Backend& backend,
                             const CheckpointMeta& meta, const Parameters& params,
                             const Optimizer& opt,
                             const std::map<std::string, std::string>& weights_meta);

// Reads meta.json and checks both files against it (present, size, checksum, safetensors
// header); any defect throws Error naming the file and what to do.
CheckpointMeta read_checkpoint(const std::string& ckpt_dir);

// The checks of read_checkpoint on the text of meta.json alone (`ckpt_dir` names it in the
// errors): its fields, their types and ranges; the files it lists are not looked at.
CheckpointMeta parse_checkpoint_meta(std::string_view text, const std::string& ckpt_dir);

// Loads the parameters and the optimizer state of a checkpoint read by read_checkpoint
// (names, shapes and dtypes must match exactly) and sets the optimizer's step count.
void load_checkpoint(const std::string& ckpt_dir, const CheckpointMeta& meta, Backend& backend,
                     Parameters& params, Optimizer& opt);

// The checkpoint directories in run_dir (named ckpt_step + 6+ digits), newest step first.
std::vector<std::string> list_checkpoints(const std::string& run_dir);

// `path` is a checkpoint directory, or a run directory: then its newest checkpoint that
// reads back complete (each newer broken one is reported through `warn` and skipped).
// Throws when there is none, with each checkpoint's defect.
struct FoundCheckpoint {
  std::string dir;
  CheckpointMeta meta;
};
FoundCheckpoint find_checkpoint(const std::string& path, const LogFn& warn);

// Deletes all but the newest `keep` checkpoints of run_dir (keep 0: deletes none). Each
// is renamed to a hidden name first, so a crash mid-delete never leaves half of one
// under a checkpoint's name.
void prune_checkpoints(const std::string& run_dir, int64_t keep);

// A weights file for `path`: a .safetensors file itself, a checkpoint directory's
// model.safetensors, or a run directory's latest weights: its newest good checkpoint's or
// its model_step*.safetensors of the latest step, whichever has the later step (the
// checkpoint's at the same step).
std::string resolve_weights(const std::string& path, const LogFn& warn);

// 64-bit checksum of a file's bytes (hex), as stored in meta.json: detects truncation and
// corruption, not tampering.
std::string file_checksum(const std::string& path);

}  // namespace speedrun
