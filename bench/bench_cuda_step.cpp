// One training step of a preset's model on a backend, timed the way bench/gpu_anchor.py
// times PyTorch: forward+backward of one micro-batch per attention window, the optimizer
// step, the full step (medians after warm-up; Backend::synchronize + steady_clock), peak
// memory (Backend::peak_bytes) and the time from process start to the end of the first
// step. bench/cuda_check.sh runs it when the speedrun binary has no `bench` command; its
// JSON uses the key names of `speedrun bench --json` for the numbers both report.
//
//   bench_cuda_step [--device cuda|cpu|auto] [--preset record|previous-record|tiny]
//                   [--seq-len T] [--windows 64,1792] [--warmup 2] [--reps 10] [--json FILE]
//                   [--threads N (CPU; 0: all cores)]
//
// Defaults: the record's model on one sequence of 65,536 tokens (the record's batch per
// GPU). Data: random tokens cut into documents by EOT with lognormal lengths (mean ~1000
// tokens, as the anchor), so the block masks have partial tiles. Exit status 2 when the
// device cannot be used (no GPU, or a build without CUDA), 1 on any other error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/factory.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "train/config.h"

using namespace speedrun;
using Clock = std::chrono::steady_clock;

namespace {

// Seconds since this process started (from /proc), or -1 when /proc cannot be read.
double seconds_since_process_start() {
  std::ifstream stat("/proc/self/stat"), up("/proc/uptime");
  std::string s;
  double uptime = 0;
  if (!std::getline(stat, s) || !(up >> uptime)) return -1;
  const size_t close = s.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return -1;
  std::istringstream rest(s.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && (rest >> field); ++i)
    if (i == 22) return uptime - std::stod(field) / double(sysconf(_SC_CLK_TCK));
  return -1;
}

// The time of the first call (main's first line calls it).
Clock::time_point g_main_entry() {
  static const Clock::time_point t = Clock::now();
  return t;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// T+1 tokens: documents opening with EOT, lognormal lengths (sigma 1, mean ~1000), the other
// ids uniform over the ordinary ones.
std::vector<int32_t> sequence(Rng& rng, int64_t T, int64_t vocab, int32_t eot) {
  std::vector<int32_t> t;
  t.reserve(size_t(T + 1));
  while (int64_t(t.size()) < T + 1) {
    const double len = std::exp(std::log(1000.0) - 0.5 + rng.normal());
    t.push_back(eot);
    for (int64_t i = 1; i < std::max<int64_t>(1, int64_t(len)) && int64_t(t.size()) < T + 1; ++i) {
      int32_t id = int32_t(rng.below(uint64_t(std::min<int64_t>(vocab, 50257))));
      if (id == eot) id = (id + 1) % int32_t(vocab);
      t.push_back(id);
    }
  }
  return t;
}

struct Args {
  std::string device = "cuda", preset = "record", json;
  int64_t seq_len = 0;
  std::vector<int64_t> windows;
  int warmup = 2, reps = 10, threads = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    const bool has = i + 1 < argc;
    if (k == "--device" && has) a.device = argv[++i];
    else if (k == "--preset" && has) a.preset = argv[++i];
    else if (k == "--seq-len" && has) a.seq_len = std::atoll(argv[++i]);
    else if (k == "--warmup" && has) a.warmup = std::atoi(argv[++i]);
    else if (k == "--reps" && has) a.reps = std::atoi(argv[++i]);
    else if (k == "--json" && has) a.json = argv[++i];
    else if (k == "--threads" && has) a.threads = std::atoi(argv[++i]);
    else if (k == "--windows" && has) {
      std::stringstream ss(argv[++i]);
      std::string w;
      while (std::getline(ss, w, ',')) a.windows.push_back(std::atoll(w.c_str()));
    } else {
      fail("bench_cuda_step: unknown or incomplete argument '", k,
           "'; see the comment at the top of bench/bench_cuda_step.cpp");
    }
  }
  check(a.reps >= 1 && a.warmup >= 0, "--reps must be >= 1 and --warmup >= 0");
  return a;
}

int run(const Args& a, double launch_s) {
  const TrainConfig cfg = preset_config(a.preset);
  const int64_t T = a.seq_len > 0 ? a.seq_len : cfg.seq_len;
  std::vector<int64_t> windows = a.windows;
  if (windows.empty()) windows = {cfg.schedule.window_start, cfg.schedule.window_end};

  BackendOptions bo;
  bo.device = parse_enum<DeviceChoice>(a.device, "--device");
  bo.gpu = 0;
  bo.threads = a.threads;
  if (bo.device == DeviceChoice::CUDA) {
    std::string why;
    if (!cuda_built() || cuda_device_count(&why) == 0) {
      std::printf("bench_cuda_step: skipped: no usable CUDA device (%s)\n",
                  cuda_built() ? why.c_str() : "this build has no CUDA backend");
      return 2;
    }
  }
  std::unique_ptr<Backend> be = make_backend(bo);
  const Precision prec = resolve_precision(*be, PrecisionChoice::Auto);
  Parameters p(*be, cfg.model, prec);
  p.init(1);
  GPT model(*be, p, 1, T);
  Optimizer opt(*be, p, cfg.optim);
  std::printf("bench_cuda_step: %s %s, preset %s (%lld layers, %lld heads x %lld, vocab %lld), "
              "1 x %lld tokens, windows", be->name().c_str(), prec.str().c_str(),
              a.preset.c_str(), (long long)cfg.model.layers, (long long)cfg.model.heads,
              (long long)cfg.model.head_dim, (long long)cfg.model.vocab, (long long)T);
  for (int64_t w : windows) std::printf(" %lld", (long long)w);
  std::printf("; warm-up %d, median of %d\n", a.warmup, a.reps);
  std::fflush(stdout);

  Rng rng(7);
  std::vector<std::vector<int32_t>> seqs;
  for (int i = 0; i < 2; ++i) seqs.push_back(sequence(rng, T, cfg.model.vocab, cfg.model.eot));
  int which = 0;
  auto step_parts = [&](int64_t window, double* fb_ms, double* opt_ms) {
    const std::vector<int32_t>& s = seqs[size_t(which++ % 2)];
    p.zero_grad();
    be->synchronize();
    const auto t0 = Clock::now();
    model.train_micro_batch(s.data(), s.data() + 1, window);
    be->synchronize();
    const double fb = ms_since(t0);
    const auto t1 = Clock::now();
    opt.step(1.0, 0.95);
    be->synchronize();
    const double o = ms_since(t1);
    const double loss = model.take_mean_loss();
    if (fb_ms) *fb_ms = fb;
    if (opt_ms) *opt_ms = o;
    return loss;
  };

  // The first step, as a training run takes it: everything since process start.
  const auto t_first = Clock::now();
  const double loss0 = step_parts(windows[0], nullptr, nullptr);
  const double first_step_ms = ms_since(t_first);
  const double to_first_step_s = launch_s + ms_since(g_main_entry()) / 1000.0;
  std::printf("first step: loss %.4f, %.1f ms; %.2f s from launch\n", loss0, first_step_ms,
              to_first_step_s);

  nlohmann::json jw = nlohmann::json::array();
  std::printf("| window | fwd+bwd ms | optimizer ms | step ms | tokens/s | loss |\n"
              "|---|---|---|---|---|---|\n");
  for (int64_t w : windows) {
    std::vector<double> fb, op, st;
    double loss = 0;
    for (int r = 0; r < a.warmup + a.reps; ++r) {
      double f = 0, o = 0;
      loss = step_parts(w, &f, &o);
      if (r >= a.warmup) fb.push_back(f), op.push_back(o), st.push_back(f + o);
    }
    const double step_ms = median(st);
    const double tps = double(T) / (step_ms / 1000.0);
    std::printf("| %lld | %.1f | %.1f | %.1f | %.0f | %.4f |\n", (long long)w, median(fb),
                median(op), step_ms, tps, loss);
    std::fflush(stdout);
    jw.push_back({{"window", w},
                  {"step",
                   {{"fwd_bwd_ms", median(fb)}, {"optimizer_ms", median(op)},
                    {"step_ms", step_ms}, {"tokens_per_s", tps}, {"loss", loss},
                    {"fwd_bwd_ms_all", fb}, {"optimizer_ms_all", op}}}});
  }
  const double peak = double(be->peak_bytes());
  std::printf("peak memory: %s\n",
              peak > 0 ? (std::to_string(peak / double(1ull << 30)).substr(0, 5) + " GiB").c_str()
                       : "not tracked by this backend");
  if (!a.json.empty()) {
    nlohmann::json j = {
        {"tool", "bench_cuda_step"},
        {"backend", be->name()},
        {"host", be->numerics()},
        {"precision", prec.str()},
        {"config",
         {{"preset", a.preset}, {"layers", cfg.model.layers}, {"heads", cfg.model.heads},
          {"head_dim", cfg.model.head_dim}, {"vocab", cfg.model.vocab}, {"seq_len", T},
          {"batch", 1}, {"reps", a.reps}, {"warmup", a.warmup}}},
        {"launch",
         {{"from", launch_s > 0 ? "process start" : "main"},
          {"to_first_step_s", to_first_step_s}, {"first_step_ms", first_step_ms}}},
        {"peak_memory", {{"bytes", peak}, {"kind", "device (Backend::peak_bytes)"}}},
        {"windows", jw}};
    std::ofstream(a.json) << j.dump(1) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  g_main_entry();
  const double launch_s = std::max(0.0, seconds_since_process_start());
  try {
    return run(parse(argc, argv), launch_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
