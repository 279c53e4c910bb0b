// A run directory (--out) belongs to one run:
//   OUT/run.json  {"format": "speedrun-run", "run_id": 16 hex digits, "created": UTC time,
//                  "launches": [{"step", "time", "host", ...}, ...]}
//                 written when the run starts; every checkpoint records the run_id, so a
//                 resume never picks up another run's checkpoint. Each launch (the start,
//                 then each resume) appends what ran it: the step it began at, UTC time,
//                 host, and the caller's fields (the trainer's: the build, command line,
//                 device and ranks)
//   OUT/.lock     locked (flock) by the one process writing OUT, holding its pid and host;
//                 a second writer is refused naming the holder, and the lock of a process
//                 that died is free again (the kernel drops it with the process)
// Opening a directory for writing also removes the leftovers of failed or killed writes
// (hidden checkpoint temporaries, *.tmp.<pid> files of atomic writes) whose process is gone.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace speedrun {

class RunDir {
 public:
  // A new run in `dir`: refuses a directory that holds another run (its metrics, weights,
  // checkpoints or run.json) unless `overwrite`, which deletes that run's files first.
  // `launch` (an object) is its first entry of "launches", with "step": 0, "time" and "host".
  static RunDir start(const std::string& dir, bool overwrite, const nlohmann::json& launch);
  // The run of `run_id` continues in `dir` (the directory its checkpoint is in) from step
  // `step`: `launch` joins run.json's "launches" as for start (a run.json that lacks the
  // list, from an older version, gets one; a directory without run.json is left without).
  static RunDir resume(const std::string& dir, const std::string& run_id, int64_t step,
                       const nlohmann::json& launch);

  RunDir(RunDir&& o) noexcept;
  RunDir& operator=(RunDir&&) = delete;
  ~RunDir();  // releases the lock

  const std::string& path() const { return path_; }
  const std::string& run_id() const { return run_id_; }

 private:
  RunDir(std::string path, int lock_fd, std::string run_id)
      : path_(std::move(path)), lock_fd_(lock_fd), run_id_(std::move(run_id)) {}
  std::string path_;
  int lock_fd_ = -1;
  std::string run_id_;
};

// Whether `dir` holds a run's files (metrics.jsonl, model_step*.safetensors, ckpt_step*/,
// run.json).
bool holds_a_run(const std::string& dir);

// Removes the leftovers of failed or killed writes in `dir` whose process is gone: hidden
// checkpoint temporaries and deletions (.ckpt_step*.{tmp,trash,old}.<pid>) and temporaries
// of atomic file writes (<file>.tmp.<pid>).
void remove_write_leftovers(const std::string& dir);

// The run_id in dir/run.json, or "" when there is none (a run of an older version).
std::string run_id_of(const std::string& dir);

// What ran the run in `dir`, from run.json's launches: the distinct source commits and
// devices, in launch order. Empty lists where run.json is missing, damaged or older than
// the launches (a reader's summary: never an error).
struct RunLaunches {
  std::vector<std::string> commits, devices;
};
RunLaunches run_launches(const std::string& dir);

// `base`-1, `base`-2, ...: the first that does not exist (the default --out of a new run,
// so running the same command twice never mixes two runs).
std::string next_run_dir(const std::string& base);

}  // namespace speedrun
