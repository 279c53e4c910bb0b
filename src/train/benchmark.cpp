#include "train/benchmark.h"

#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "backend/block_mask.h"
#include "backend/factory.h"
#include "core/arena.h"
#include "core/rng.h"
#include "core/utc_time.h"
#include "data/loader.h"
#include "data/shard.h"
#include "data/step_loader.h"
#include "model/gpt.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "train/config.h"
#include "train/timing_backend.h"

namespace speedrun {

namespace {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
double median(std::vector<double> v) {
  check(!v.empty(), "bench: median of no values");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Phases of the per-op table, in the order a step runs them.
constexpr const char* kMicro = "fwd+bwd";      // one micro-batch: upload, forward, backward
constexpr const char* kOptim = "optimizer";    // Optimizer::step
constexpr const char* kStep = "step";          // zero_grad, take_mean_loss

// Documents as the GPU anchor draws them (bench/gpu_anchor.py): lognormal lengths with
// sigma 1 and mean 1000 tokens (median ~607), each opening with EOT; the other tokens
// uniform over the vocabulary without EOT.
constexpr double kDocMean = 1000.0, kDocSigma = 1.0;

// One step's inputs and targets: `sequences` sequences of T tokens, each the first T and
// the last T of a stream of T + 1.
void make_batch(Rng& rng, const GPTConfig& c, int64_t sequences, int64_t T,
                std::vector<int32_t>& x, std::vector<int32_t>& y) {
  x.resize(size_t(sequences * T));
  y.resize(x.size());
  const double mu = std::log(kDocMean) - 0.5 * kDocSigma * kDocSigma;
  std::vector<int32_t> s(size_t(T + 1));
  for (int64_t b = 0; b < sequences; ++b) {
    // Start inside a document, as a packed sequence does.
    int64_t next_doc = int64_t(rng.below(uint64_t(kDocMean))) + 1;
    for (int64_t t = 0; t <= T; ++t) {
      if (t == next_doc) {
        s[size_t(t)] = c.eot;
        next_doc = t + std::max<int64_t>(1, std::llround(std::exp(mu + kDocSigma * rng.normal())));
      } else {
        int32_t v = int32_t(rng.below(uint64_t(c.vocab - 1)));
        s[size_t(t)] = v >= c.eot ? v + 1 : v;  // every id but EOT
      }
    }
    std::copy(s.begin(), s.end() - 1, x.begin() + b * T);
    std::copy(s.begin() + 1, s.end(), y.begin() + b * T);
  }
}

// Random values in [-1, 1) in every element of t: one random block of up to 1M elements
// uploaded, then copied over the rest on the device (cheap for multi-GiB buffers).
void fill_random(Backend& be, const Tensor& t, Rng& rng) {
  const Tensor flat = t.view({t.numel()});
  const int64_t n = flat.numel(), block = std::min<int64_t>(n, int64_t(1) << 20);
  std::vector<double> h(static_cast<size_t>(block));
  for (double& v : h) v = rng.uniform(-1.0, 1.0);
  be.from_host_f64(flat.slice(0, block), h);
  for (int64_t o = block; o < n; o += block) {
    const int64_t len = std::min(block, n - o);
    be.copy(flat.slice(o, o + len), flat.slice(0, len));
  }
  be.synchronize();
}

// The zero-initialised matrices (c_proj, mlp_proj, lm_head) get PyTorch's nn.Linear
// values, so no product in the step multiplies zeros (zeros can run faster than data).
void nudge_zero_weights(Parameters& p, uint64_t seed) {
  const std::vector<ParamSpec> table = param_table(p.config());
  Rng rng(seed ^ 0x6e75646765ULL);
  for (int i = 0; i < p.count(); ++i) {
    const ParamSpec& s = table[size_t(i)];
    if (s.init.kind != InitRule::Zero || s.shape.size() != 2) continue;
    const double bound = 1.0 / std::sqrt(double(s.shape[1]));
    std::vector<double> h(size_t(p.value(i).numel()));
    for (double& v : h) v = rng.uniform(-bound, bound);
    p.from_host_f64(i, h);
  }
}

// Median time of `reps` calls of f, each between two synchronisations, after `warmup`.
double time_op(Backend& be, int warmup, int reps, const std::function<void()>& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    be.synchronize();
    const auto t0 = Clock::now();
    f();
    be.synchronize();
    ms.push_back(ms_between(t0, Clock::now()));
  }
  return median(ms);
}

Ceilings measure_ceilings(Backend& be, const Precision& p, int64_t n, int64_t copy_mib,
                          int warmup, int reps, uint64_t seed) {
  Ceilings c;
  Rng rng(seed ^ 0x6365696cULL);
  {
    Arena a([&be](size_t b) { return be.allocate(b); }, [&be](void* q) { be.release(q); });
    Tensor A, B, C;
    a.add("gemm.A", p.compute, {n, n}, &A);
    a.add("gemm.B", p.compute, {n, n}, &B);
    a.add("gemm.C", p.compute, {n, n}, &C);
    a.materialize(be.device());
    fill_random(be, A, rng);
    fill_random(be, B, rng);
    c.gemm_n = n;
    c.gemm_dtype = dtype_name(p.compute);
    c.gemm_ms = time_op(be, warmup, reps, [&] { be.matmul(C, A, false, B, false, false); });
    c.gemm_flops_per_s = 2.0 * double(n) * double(n) * double(n) / (c.gemm_ms / 1e3);
  }
  {
    const int64_t elems = copy_mib * (int64_t(1) << 20) / 4;
    Arena a([&be](size_t b) { return be.allocate(b); }, [&be](void* q) { be.release(q); });
    Tensor src, dst;
    a.add("copy.src", DType::F32, {elems}, &src);
    a.add("copy.dst", DType::F32, {elems}, &dst);
    a.materialize(be.device());
    fill_random(be, src, rng);
    c.copy_bytes = 2.0 * double(src.bytes());
    c.copy_ms = time_op(be, warmup, reps, [&] { be.copy(dst, src); });
    c.copy_bytes_per_s = c.copy_bytes / (c.copy_ms / 1e3);
  }
  return c;
}

double load_average() {
  double l[1];
  return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const auto c = line.find(':');
      if (c != std::string::npos) return line.substr(line.find_first_not_of(" \t", c + 1));
    }
  return "unknown CPU";
}

// Everything a step needs, built on the TimingBackend.
struct Bench {
  TimingBackend& be;
  Parameters& params;
  GPT& model;
  Optimizer& opt;
  const std::vector<int32_t>& x;
  const std::vector<int32_t>& y;
  int64_t K, tokens_per_micro;
  double lr = 1.0, momentum = 0.95;

  // The trainer's step (TrainingRun::train_step, without the data loader): the only wait is
  // the loss read at the end. Returns the loss.
  double step(int64_t window) {
    be.set_phase(kStep);
    params.zero_grad();
    be.set_phase(kMicro);
    for (int64_t k = 0; k < K; ++k)
      model.train_micro_batch(x.data() + k * tokens_per_micro, y.data() + k * tokens_per_micro,
                              window, 1.0 / double(K));
    be.set_phase(kOptim);
    opt.step(lr, momentum);
    be.set_phase(kStep);
    return model.take_mean_loss();
  }
};

}  // namespace

void BenchOptions::validate() const {
  check(preset.empty() || preset == "record" || preset == "previous-record" || preset == "tiny",
        "--preset '", preset, "': unknown; choose record, previous-record or tiny");
  check(seq_len >= 0, "--seq-len ", seq_len, ": must be >= 1");
  check(batch >= 0, "--batch ", batch, ": must be >= 1");
  check(micro_batch >= 1, "--micro-batch ", micro_batch, ": must be >= 1");
  for (int64_t w : windows) check(w >= 1, "--windows: window ", w, " must be >= 1");
  // (Upper bounds: far beyond a useful benchmark, and within what the counts and byte
  // sizes derived from them hold without overflowing.)
  check(reps >= 1 && reps <= 1000000, "--reps ", reps, ": must be in [1, 1000000]");
  check(warmup >= 0 && warmup <= 1000000, "--warmup ", warmup, ": must be in [0, 1000000]");
  check(gemm_size >= 0 && gemm_size <= 65536, "--gemm-size ", gemm_size,
        ": must be in [1, 65536] (0: by device)");
  check(copy_mib >= 0 && copy_mib <= (1 << 20), "--copy-mib ", copy_mib,
        ": must be in [1, 1048576] (0: by device)");
  check(head_logits >= 0, "--head-logits ", head_logits, ": must be >= 1 (0: by device)");
  check(vocab == 0 || vocab >= 2, "--vocab ", vocab, ": must be >= 2 (0: the preset's)");
  check(eot >= -1, "--eot ", eot, ": must be an id of the vocabulary (-1: the preset's)");
}

LaunchTime LaunchTime::detect(Clock::time_point main_entry) {
  const Clock::time_point now = Clock::now();
  const double since_main = ms_between(main_entry, now) / 1e3;
  // Field 22 of /proc/self/stat: the start time in clock ticks after boot (CLOCK_BOOTTIME).
  std::ifstream f("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  timespec ts{};
  if (paren != std::string::npos && clock_gettime(CLOCK_BOOTTIME, &ts) == 0) {
    std::istringstream is(stat.substr(paren + 2));
    std::string field;  // fields 3..22 follow the parenthesised command name
    bool read = true;
    for (int k = 3; k <= 22 && read; ++k) read = bool(is >> field);
    const double start_s = std::strtod(field.c_str(), nullptr) / double(sysconf(_SC_CLK_TCK));
    const double age = double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec) - start_s;
    // Believe it only if it is consistent with main's clock (ticks are 10 ms).
    if (read && age >= since_main - 0.02 && age < since_main + 60.0)
      return {now - std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(std::max(age, since_main))),
              "process start"};
  }
  return {main_entry, "main"};
}

double OpRow::rate() const {
  const double s = ms / 1e3;
  if (s <= 0) return 0;
  return (flops > 0 ? flops : bytes) / s;
}

double OpRow::of_ceiling(const Ceilings& c) const {
  if (host) return 0;
  const double ceiling = flops > 0 ? c.gemm_flops_per_s : c.copy_bytes_per_s;
  return ceiling > 0 ? rate() / ceiling : 0;
}

int64_t matmul_param_count(const GPTConfig& c) {
  const int64_t C = c.width();
  return 12 * C * C * c.layers + c.vocab * C;
}

BenchResult run_benchmark(Backend& backend, const BenchOptions& o, const LaunchTime& launch,
                          const std::function<void(const std::string&)>& progress) {
  const Clock::time_point t_backend = Clock::now();
  o.validate();
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  const bool gpu = backend.device() != Device::CPU;
  BenchResult r;
  r.load_before = load_average();
  r.hardware_threads = int(std::thread::hardware_concurrency());
  r.date = utc_now("%Y-%m-%d %H:%M UTC");
  r.backend = backend.name();
  r.preset = o.preset.empty() ? (gpu ? "record" : "tiny") : o.preset;
  TrainConfig tc = preset_config(r.preset);
  if (o.vocab > 0) tc.model.vocab = o.vocab;
  const int64_t eot = o.eot >= 0 ? o.eot : tc.model.eot;
  check(eot < tc.model.vocab, "--eot ", eot, " is outside the vocabulary [0, ", tc.model.vocab,
        ") of the model (the ", r.preset, " preset's, or --vocab)");
  tc.model.eot = int32_t(eot);
  tc.model.validate();
  const GPTConfig& mc = tc.model;
  r.seq_len = o.seq_len > 0 ? o.seq_len : tc.seq_len;
  r.batch = o.batch > 0 ? o.batch : tc.batch;
  r.micro_batch = o.micro_batch;
  check(r.batch % r.micro_batch == 0, "--micro-batch ", r.micro_batch, " does not divide the ",
        r.batch, " sequences of a step (--batch): pick a divisor");
  r.micro_batches = r.batch / r.micro_batch;
  check(r.batch <= kMaxStepTokens / r.seq_len, "--batch ", r.batch, " x --seq-len ", r.seq_len,
        " is more than 2^40 tokens per step: lower them");
  std::vector<int64_t> windows = o.windows;
  if (windows.empty()) {
    windows = {tc.schedule.window_start};
    if (tc.schedule.window_end != tc.schedule.window_start)
      windows.push_back(tc.schedule.window_end);
  }
  r.layers = mc.layers;
  r.heads = mc.heads;
  r.head_dim = mc.head_dim;
  r.vocab = mc.vocab;
  r.eot = mc.eot;
  r.data = o.data;
  r.matmul_params = matmul_param_count(mc);
  r.reps = o.reps;
  r.warmup = o.warmup;
  r.threads = gpu ? 0 : omp_get_max_threads();
  // On a GPU, its name and architecture ("cuda, NVIDIA H100 80GB HBM3, sm_90"): a timing is
  // compared only with one from the same GPU model.
  r.host = gpu ? backend.numerics() : fmt::format("{} ({} hardware threads)", cpu_model(),
                                                  r.hardware_threads);
  const Precision precision = resolve_precision(backend, o.dtype);
  r.precision = precision.str();

  // Setup as the trainer does it: parameters, optimizer, model; then the first step.
  TimingBackend be(backend);
  Parameters params(be, mc, precision);
  params.init(tc.seed);
  const auto t_nudge = Clock::now();
  nudge_zero_weights(params, o.seed);
  be.synchronize();
  const double nudge_ms = ms_between(t_nudge, Clock::now());  // the benchmark's own: left out
  r.params = params.numel();
  Optimizer opt(be, params, tc.optim);
  GPT model(be, params, r.micro_batch, r.seq_len, o.head_logits);
  r.head_rows = model.head_rows();
  r.head_bytes = double(r.head_rows * mc.vocab) * double(dtype_size(precision.compute));
  be.synchronize();
  const Clock::time_point t_weights = Clock::now();
  Rng rng(o.seed);
  std::vector<int32_t> x, y;
  if (o.data.empty()) {
    make_batch(rng, mc, r.batch, r.seq_len, x, y);
  } else {
    x.resize(size_t(r.batch * r.seq_len));
    y.resize(x.size());
    StepLoader loader(expand_glob(o.data, "--data"), r.micro_batch, r.seq_len, r.micro_batches,
                      0, 1, mc.vocab);
    loader.next(x.data(), y.data());
  }
  Bench bench{be, params, model, opt, x, y, r.micro_batches, r.micro_batch * r.seq_len};
  bench.momentum = tc.schedule.momentum_end;
  const Clock::time_point t_first0 = Clock::now();
  bench.step(windows[0]);
  const Clock::time_point t_first = Clock::now();
  auto since_launch = [&](Clock::time_point t) {
    return (ms_between(launch.at, t) - nudge_ms) / 1e3;
  };
  r.launch_from = launch.from;
  r.launch_to_backend_s = ms_between(launch.at, t_backend) / 1e3;
  r.launch_to_weights_s = since_launch(t_weights);
  r.launch_to_first_step_s = since_launch(t_first);
  r.first_step_ms = ms_between(t_first0, t_first);
  say(fmt::format("first step done {:.2f} s after {} ({:.0f} ms)", r.launch_to_first_step_s,
                  launch.from, r.first_step_ms));

  const double tokens = double(r.batch * r.seq_len);
  const int64_t K = r.micro_batches, n = r.micro_batch * r.seq_len;
  for (int64_t window : windows) {
    WindowBench w;
    w.window = window;
    say(fmt::format("window {}: {} warm-up steps, {} timed steps, {} per-op steps", window,
                    o.warmup, 2 * o.reps, o.reps));
    for (int i = 0; i < o.warmup; ++i) bench.step(window);
    // The real step, and the same step with a synchronisation between its phases (the
    // phase times), interleaved so that drift affects both alike.
    std::vector<double> step_ms, micro_ms, optim_ms;
    for (int i = 0; i < o.reps; ++i) {
      const auto t0 = Clock::now();
      w.loss = bench.step(window);
      step_ms.push_back(ms_between(t0, Clock::now()));
      params.zero_grad();
      be.synchronize();
      const auto s0 = Clock::now();
      for (int64_t k = 0; k < K; ++k)
        model.train_micro_batch(x.data() + k * n, y.data() + k * n, window, 1.0 / double(K));
      be.synchronize();
      const auto s1 = Clock::now();
      opt.step(bench.lr, bench.momentum);
      be.synchronize();
      const auto s2 = Clock::now();
      model.take_mean_loss();
      micro_ms.push_back(ms_between(s0, s1) / double(K));
      optim_ms.push_back(ms_between(s1, s2));
    }
    w.step_ms = median(step_ms);
    w.fwd_bwd_ms = median(micro_ms);
    w.optimizer_ms = median(optim_ms);
    w.tokens_per_s = tokens / (w.step_ms / 1e3);

    // Per-op: one micro-batch and one optimizer step, each op alone between two
    // synchronisations; per (phase, op) the median over reps of its summed time.
    be.set_timing(true);
    std::vector<std::vector<OpStat>> runs;
    for (int i = 0; i < o.reps; ++i) {
      be.reset();
      be.set_phase(kStep);
      params.zero_grad();
      be.set_phase(kMicro);
      model.train_micro_batch(x.data(), y.data(), window, 1.0 / double(K));
      be.set_phase(kOptim);
      opt.step(bench.lr, bench.momentum);
      be.set_phase(kStep);
      model.take_mean_loss();
      runs.push_back(be.stats());
    }
    be.set_timing(false);
    be.reset();
    for (const char* phase : {kMicro, kOptim, kStep}) {
      std::vector<OpRow> rows;
      for (const OpStat& s : runs.back()) {
        if (s.phase != phase) continue;
        std::vector<double> ms;
        for (const auto& run : runs)
          for (const OpStat& t : run)
            if (t.phase == s.phase && t.op == s.op) ms.push_back(t.ms);
        rows.push_back(OpRow{s.phase, s.op, s.calls, median(ms), 0, s.flops, s.bytes, s.host});
      }
      std::stable_sort(rows.begin(), rows.end(),
                       [](const OpRow& a, const OpRow& b) { return a.ms > b.ms; });
      w.ops.insert(w.ops.end(), rows.begin(), rows.end());
    }
    for (const OpRow& row : w.ops) w.serial_step_ms += row.ms * (row.phase == kMicro ? double(K) : 1.0);
    for (OpRow& row : w.ops)
      row.share = row.ms * (row.phase == kMicro ? double(K) : 1.0) / w.serial_step_ms;

    // The step's model FLOPs: matmuls as counted in the table (the same in every
    // micro-batch), attention from every micro-batch's masks.
    int64_t pairs = 0;
    w.attention_tile = mask_tile(mc, be, window);
    for (int64_t b = 0; b < r.batch; ++b)
      pairs += visible_pairs(build_block_mask(x.data() + b * r.seq_len, r.seq_len, mc.eot, window,
                                              w.attention_tile));
    w.attention_pairs = pairs;
    for (const OpRow& row : w.ops)
      if (row.phase == kMicro && (row.op == "matmul" || row.op == "matmul_add"))
        w.matmul_flops += double(K) * row.flops;
      else if (row.phase == kOptim && (row.op == "muon_stack" || row.op == "newton_schulz"))
        w.optimizer_flops += row.flops;
    w.attention_flops = double(mc.layers) *
                        (attention_forward_flops(pairs, mc.heads, mc.head_dim) +
                         attention_backward_flops(pairs, mc.heads, mc.head_dim));
    r.windows.push_back(std::move(w));
  }

  // Peak memory before the ceilings allocate their buffers.
  r.peak_bytes = double(backend.peak_bytes());
  r.peak_kind = "device (Backend::peak_bytes)";
  if (r.peak_bytes == 0) {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    r.peak_bytes = double(ru.ru_maxrss) * 1024.0;  // KiB on Linux
    r.peak_kind = "process max RSS";
  }

  const int64_t gemm_n = o.gemm_size > 0 ? o.gemm_size : gpu ? 8192 : 2048;
  const int64_t copy_mib = o.copy_mib > 0 ? o.copy_mib : gpu ? 1024 : 128;
  say(fmt::format("ceilings: GEMM {}^3 {}, copy {} MiB", gemm_n, dtype_name(precision.compute),
                  copy_mib));
  r.ceilings = measure_ceilings(backend, precision, gemm_n, copy_mib, std::max(1, o.warmup),
                                std::max(5, o.reps), o.seed);
  for (WindowBench& w : r.windows) {
    w.floor_ms = w.model_flops() / r.ceilings.gemm_flops_per_s * 1e3;
    w.mfu = w.floor_ms / w.step_ms;
  }
  r.load_after = load_average();
  return r;
}

}  // namespace speedrun
