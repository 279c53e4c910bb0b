// The training-step benchmark behind `speedrun bench` (docs/PERFORMANCE.md): on any backend,
// for a preset's model, it measures
//   1. the device's two ceilings in the same run: a large square GEMM through
//      Backend::matmul in the compute dtype, and a large Backend::copy (bytes read + written);
//   2. per window, a per-op table of one forward+backward micro-batch and one optimizer step,
//      each op timed alone through TimingBackend (which serialises the device), with its
//      work (train/op_work.h), achieved rate and share of the measured ceiling;
//   3. per window, the real step without per-op synchronisation, exactly as the trainer runs
//      it (zero_grad, K micro-batches with grad_scale 1/K, the optimizer on every parameter,
//      take_mean_loss as the timing point): medians, tokens/s, model FLOPs and MFU against
//      the measured GEMM rate, peak memory;
//   4. the time from launch (process start) to the end of the first full step.
// The weights are the preset's initialisation with the zero-initialised matrices (c_proj,
// lm_head) given random values, so every product carries real data; the batches are random
// tokens cut into documents by EOTs (lognormal lengths, mean ~1000 tokens, as the GPU anchor
// of bench/gpu_anchor.py), so the masks have partial tiles; or the first step of token
// shards (--data). Only the Backend interface is
// used: the same code measures the CPU and the CUDA backends.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/precision.h"
#include "model/config.h"

namespace speedrun {

struct BenchOptions {
  std::string preset;             // record | previous-record | tiny; "": record on a GPU, else tiny
  int64_t seq_len = 0;            // tokens per sequence (0: the preset's)
  int64_t batch = 0;              // sequences per step (0: the preset's)
  int64_t micro_batch = 1;        // sequences per micro-batch (divides batch)
  std::vector<int64_t> windows;   // attention windows (empty: the preset's start and end)
  int reps = 5;                   // timed repetitions (medians)
  int warmup = 2;                 // untimed steps per window first
  int64_t gemm_size = 0;          // GEMM ceiling's n (0: 8192 on a GPU, 2048 on the CPU)
  int64_t copy_mib = 0;           // copy ceiling's buffer size (0: 1024 MiB on a GPU, 128 on the CPU)
  int64_t head_logits = 0;        // logits the head computes at once (0: the backend's choice)
  PrecisionChoice dtype = PrecisionChoice::Auto;
  uint64_t seed = 1;
  // The step's tokens: "" draws random documents (above); else a glob of token shards,
  // read as a training run reads its first step (StepLoader, rank 0 of 1): the token
  // distribution and documents of real text (the embedding backward's repeated tokens,
  // the masks of its documents).
  std::string data;
  int64_t vocab = 0;              // the model's vocabulary (0: the preset's)
  int64_t eot = -1;               // the document delimiter's id (-1: the preset's)
  void validate() const;          // throws naming the flag to fix
};

// Where "launch" is: the process's start (from /proc/self/stat) when it can be read, else
// the steady-clock time the caller took at main's first line.
struct LaunchTime {
  std::chrono::steady_clock::time_point at;
  std::string from;  // "process start" or "main"
  static LaunchTime detect(std::chrono::steady_clock::time_point main_entry);
};

struct Ceilings {
  int64_t gemm_n = 0;
  std::string gemm_dtype;
  double gemm_ms = 0, gemm_flops_per_s = 0;
  double copy_bytes = 0;  // read + written
  double copy_ms = 0, copy_bytes_per_s = 0;
};

// One line of the per-op table.
struct OpRow {
  std::string phase, op;
  int64_t calls = 0;    // per micro-batch (fwd+bwd) or per step (the others)
  double ms = 0;        // median over reps of the summed time of those calls
  double share = 0;     // of the serialised step, micro-batch rows counted K times
  double flops = 0, bytes = 0;
  bool host = false;    // host <-> device transfer: no device ceiling applies
  double rate() const;  // FLOP/s, or bytes/s for memory-bound ops
  // rate / the matching measured ceiling (GEMM or copy); 0 for host transfers.
  double of_ceiling(const Ceilings& c) const;
};

struct WindowBench {
  int64_t window = 0;
  int64_t attention_pairs = 0;  // visible (query, key) pairs in one step (all micro-batches)
  int64_t attention_tile = 0;   // the masks' tile edge in tokens (the backend's at this window)
  std::vector<OpRow> ops;
  double serial_step_ms = 0;    // the per-op table's total (micro-batch rows x K)
  // The real step: medians over reps.
  double fwd_bwd_ms = 0;        // one micro-batch
  double optimizer_ms = 0;
  double step_ms = 0;           // zero_grad .. take_mean_loss
  double tokens_per_s = 0;
  double matmul_flops = 0, attention_flops = 0;  // the step's model FLOPs, all micro-batches
  double optimizer_flops = 0;   // Newton-Schulz
  double model_flops() const { return matmul_flops + attention_flops; }
  double floor_ms = 0;          // model FLOPs at the measured GEMM rate
  double mfu = 0;               // model FLOPs / step time / measured GEMM rate
  // The last step's loss: finite (take_mean_loss checks it); it falls over the reps as the
  // model memorises the one batch every step reuses (the same work in every step).
  double loss = 0;
};

struct BenchResult {
  std::string backend, precision, preset, host;
  std::string data;  // the shards' glob, or "" for random documents
  int64_t eot = 0;
  int threads = 0;  // CPU threads (0 on a GPU)
  int64_t layers = 0, heads = 0, head_dim = 0, vocab = 0, params = 0, matmul_params = 0;
  int64_t seq_len = 0, batch = 0, micro_batch = 0, micro_batches = 0;
  int64_t head_rows = 0;  // rows of the head's chunks
  double head_bytes = 0;  // their logits buffer
  int reps = 0, warmup = 0;
  std::string date;
  double load_before = -1, load_after = -1;  // 1-minute load average (-1: unknown)
  int hardware_threads = 0;                  // of this machine's CPUs
  Ceilings ceilings;
  std::vector<WindowBench> windows;
  double peak_bytes = 0;
  std::string peak_kind;  // "device (Backend::peak_bytes)" or "process max RSS"
  std::string launch_from;
  double launch_to_backend_s = 0, launch_to_weights_s = 0, launch_to_first_step_s = 0;
  double first_step_ms = 0;
};

// Runs the benchmark on `backend` (made by the caller: its construction counts in the
// launch time). `progress` receives a line at each stage (may be empty).
BenchResult run_benchmark(Backend& backend, const BenchOptions& o, const LaunchTime& launch,
                          const std::function<void(const std::string&)>& progress = {});

// The report as text tables, and as JSON (the same numbers).
std::string format_bench(const BenchResult& r);
nlohmann::json bench_json(const BenchResult& r);

// Matmul parameters of a model: the block matrices and lm_head, 12 C^2 L + V C (6 x this x
// tokens is a step's matmul FLOPs).
int64_t matmul_param_count(const GPTConfig& c);

}  // namespace speedrun
