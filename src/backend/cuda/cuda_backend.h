// The CUDA backend's entry points, in plain C++ (no CUDA headers) so that the factory,
// compiled by the host compiler, can build it by name. The backend itself (bf16 compute
// over fp32 masters, cuBLASLt GEMMs, our kernels for the rest) lives in the .cu files of
// this folder, one per op family, mirroring backend/cpu/.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace speedrun::cuda {

// Number of visible GPUs; 0 with the reason in *why (no driver, no device, ...).
int visible_devices(std::string* why);

// The backend on GPU `gpu` (-1: the process's local rank modulo `visible`, 0 for a single
// process), reading and extending the GEMM algorithm record `gemm_algos` ("" none;
// gemm_record.h). Throws Error naming the device on failure, and on a GPU it cannot run on.
std::unique_ptr<Backend> make_backend(int gpu, int visible, const std::string& gemm_algos = "");
// The GEMM algorithm record of rank `rank` of a training run writing into `run_dir`:
// SPEEDRUN_GEMM_ALGOS where it is set ("" none), else <run_dir>/gemm_algos.tsv where
// SPEEDRUN_GEMM_TUNE times algorithms or that file exists (a run that timed them resumes
// with the same choices), else "". Over several ranks each rank has its own file, the
// rank's number before the extension (gemm_algos.rank3.tsv): their GPUs time apart.
std::string run_gemm_record(const std::string& run_dir, int rank, int world);
// The GPU make_backend(gpu, visible) takes.
int process_gpu(int gpu, int visible);
// Why the backend cannot run on GPU `gpu`, naming the fix; "" when it can: a GPU older than
// sm_80, or one the build has no code for (its kernels are looked up there, plan.h's
// gpu_support_problem). Makes `gpu` the current device where it looks a kernel up.
std::string gpu_problem(int gpu);
// What `speedrun devices` prints of the visible GPUs: per GPU its name, compute capability,
// SMs, memory, shared memory per block, whether this build runs on it (or why not) and the
// attention kernels' chunks there.
std::vector<std::string> describe_gpus(int visible);

// The GEMM cache of a CUDA backend (tests and diagnostics): cuBLASLt descriptors and the
// heuristic's algorithm (or with SPEEDRUN_GEMM_TUNE the fastest of its candidates) are
// chosen once per problem (shape, transposes, dtypes, accumulate, batch, alignment) and
// reused. last_algo fingerprints the algorithm of the last GEMM issued. Throws when `be`
// is not a CUDA backend.
struct GemmCacheInfo {
  size_t entries = 0;     // distinct problems seen
  uint64_t lookups = 0;   // GEMMs issued
  uint64_t misses = 0;    // of which chose an algorithm
  uint64_t last_algo = 0;
  uint64_t tuned = 0;     // problems whose candidates were timed (SPEEDRUN_GEMM_TUNE > 1)
  uint64_t retuned = 0;   // of them, where another than the heuristic's first was faster
  double tune_ms = 0;     // time spent timing them
  int tune = 1;           // candidates timed per new problem
  std::string record;     // the GEMM algorithm record's file ("" none)
  size_t record_read = 0; // entries it held when the backend started
  size_t record_entries = 0;  // entries it holds now
  uint64_t recorded = 0;  // problems that took a recorded algorithm (not timed)
};
GemmCacheInfo gemm_cache_info(const Backend& be);

}  // namespace speedrun::cuda
