// The benchmark's report: text tables for the console and docs, JSON for tools.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/build_info.h"
#include "train/benchmark.h"

namespace speedrun {

namespace {

// 1234567 -> "1.23 M": three significant digits and an SI prefix.
std::string si(double v) {
  static const char* prefix[] = {"", "k", "M", "G", "T", "P", "E"};
  int p = 0;
  double a = std::fabs(v);
  while (a >= 999.5 && p < 6) {
    a /= 1000;
    v /= 1000;
    ++p;
  }
  const int decimals = a >= 99.5 ? 0 : a >= 9.95 ? 1 : 2;
  return fmt::format("{:.{}f} {}", v, decimals, prefix[p]);
}

std::string work(const OpRow& r) {
  if (r.flops > 0) return si(r.flops) + "FLOP";
  return si(r.bytes) + "B";
}

std::string rate(const OpRow& r) {
  if (r.rate() <= 0) return "-";
  return si(r.rate()) + (r.flops > 0 ? "FLOP/s" : "B/s");
}

std::string pct(double f) { return fmt::format("{:.1f}%", 100.0 * f); }

}  // namespace

std::string format_bench(const BenchResult& r) {
  std::string o;
  auto line = [&o](const std::string& s) { o += s + "\n"; };
  const Ceilings& c = r.ceilings;
  line(fmt::format("speedrun bench, {}: {} backend on {}{}, {}", r.date, r.backend, r.host,
                   r.threads > 0 ? fmt::format(", {} thread{}", r.threads, r.threads == 1 ? "" : "s") : "", r.precision));
  line("build: " + build_summary());
  line(fmt::format("model: preset {}, {} layers, {} heads x {} (width {}), vocab {}: {:.2f}M "
                   "parameters, {:.2f}M in matmuls",
                   r.preset, r.layers, r.heads, r.head_dim, r.heads * r.head_dim, r.vocab,
                   double(r.params) / 1e6, double(r.matmul_params) / 1e6));
  line(fmt::format("step: {} x {} = {} tokens as {} micro-batch{} of {} sequence{}; {} warm-up "
                   "steps, medians of {}",
                   r.batch, r.seq_len, r.batch * r.seq_len, r.micro_batches,
                   r.micro_batches == 1 ? "" : "es", r.micro_batch, r.micro_batch == 1 ? "" : "s",
                   r.warmup, r.reps));
  line(r.data.empty()
           ? fmt::format("tokens: random ids in documents of lognormal lengths (mean ~1000), EOT {}", r.eot)
           : fmt::format("tokens: the first step of {} (EOT {})", r.data, r.eot));
  const int64_t rows = r.micro_batch * r.seq_len;
  line(fmt::format("head: chunks of {} rows ({} per micro-batch, {:.1f} MiB of logits)",
                   r.head_rows, (rows + r.head_rows - 1) / std::max<int64_t>(r.head_rows, 1),
                   r.head_bytes / double(1 << 20)));
  if (r.load_before >= 0)
    line(fmt::format("load average (1 min): {:.2f} before, {:.2f} after", r.load_before,
                     r.load_after));
  // Other work on the CPUs slows the host side of every step (on the CPU backend, the
  // step itself: OpenMP's barriers wait for descheduled threads).
  if (r.hardware_threads > 0 && std::max(r.load_before, r.load_after) > 0.5 * r.hardware_threads)
    line(fmt::format("warning: other work is running on this machine (load {:.1f} on {} hardware "
                     "threads): times are slower and noisier than on a quiet one",
                     std::max(r.load_before, r.load_after), r.hardware_threads));
  line("");
  line("ceilings, measured in this run (warm-up, median):");
  line(fmt::format("  GEMM {}^3 {} (Backend::matmul)   {:9.3f} ms  {}FLOP/s", c.gemm_n,
                   c.gemm_dtype, c.gemm_ms, si(c.gemm_flops_per_s)));
  line(fmt::format("  copy {:.0f} MiB F32 (Backend::copy)   {:9.3f} ms  {}B/s read + written",
                   c.copy_bytes / 2 / (1 << 20), c.copy_ms, si(c.copy_bytes_per_s)));
  line("");
  line(fmt::format("launch -> first step: {:.2f} s from {} (backend ready {:.2f} s, weights and "
                   "activations {:.2f} s, first step {:.0f} ms)",
                   r.launch_to_first_step_s, r.launch_from, r.launch_to_backend_s,
                   r.launch_to_weights_s, r.first_step_ms));
  line(fmt::format("peak memory: {:.1f} MiB ({})", r.peak_bytes / (1 << 20), r.peak_kind));
  for (const WindowBench& w : r.windows) {
    line("");
    line(fmt::format("window {} (masks of {}-token tiles): per op, one micro-batch (x{} in a "
                     "step) and one optimizer step.",
                     w.window, w.attention_tile, r.micro_batches));
    line("  Each op runs alone between two synchronisations, which serialises the device (no");
    line("  overlap between ops), and host work between ops is not counted: compare the total");
    line("  with the real step below. step% counts the micro-batch rows x" +
         std::to_string(r.micro_batches) + ".");
    line(fmt::format("  {:<10} {:<26} {:>5} {:>10} {:>6} {:>12} {:>14} {:>7}", "phase", "op",
                     "calls", "ms", "step%", "work", "rate", "%ceil"));
    for (const OpRow& row : w.ops)
      line(fmt::format("  {:<10} {:<26} {:>5} {:>10.3f} {:>6} {:>12} {:>14} {:>7}", row.phase,
                       row.op, row.calls, row.ms, pct(row.share), work(row), rate(row),
                       row.host ? "host" : pct(row.of_ceiling(c))));
    line(fmt::format("  {:<43} {:>10.3f} {:>6}", "serialised step", w.serial_step_ms,
                     pct(1.0)));
    bool over = false;
    for (const OpRow& row : w.ops) over |= row.of_ceiling(c) > 1.0;
    if (over)
      line("  (over 100%: that op's operands fit in a cache; the copy ceiling is measured on "
           "buffers that do not)");
    line(fmt::format("  real step, no per-op synchronisation (median of {}): fwd+bwd {:.3f} ms "
                     "per micro-batch (x{}), optimizer {:.3f} ms, step {:.3f} ms",
                     r.reps, w.fwd_bwd_ms, r.micro_batches, w.optimizer_ms, w.step_ms));
    line(fmt::format("  {:.0f} tokens/s; model {}FLOP per step (matmul {}FLOP, attention {}FLOP "
                     "over {} visible pairs): floor {:.3f} ms at the measured GEMM rate, MFU {}",
                     w.tokens_per_s, si(w.model_flops()), si(w.matmul_flops),
                     si(w.attention_flops), w.attention_pairs, w.floor_ms, pct(w.mfu)));
    line(fmt::format("  optimizer: Newton-Schulz {}FLOP per step (not in the model FLOPs)",
                     si(w.optimizer_flops)));
  }
  return o;
}

nlohmann::json bench_json(const BenchResult& r) {
  using nlohmann::json;
  const Ceilings& c = r.ceilings;
  json j = {
      {"date", r.date},
      {"speedrun", build_info_json()},
      {"backend", r.backend},
      {"host", r.host},
      {"threads", r.threads},
      {"precision", r.precision},
      {"load_average", {{"before", r.load_before}, {"after", r.load_after}}},
      {"hardware_threads", r.hardware_threads},
      {"config",
       {{"preset", r.preset}, {"layers", r.layers}, {"heads", r.heads},
        {"head_dim", r.head_dim}, {"vocab", r.vocab}, {"params", r.params},
        {"matmul_params", r.matmul_params}, {"seq_len", r.seq_len}, {"batch", r.batch},
        {"micro_batch", r.micro_batch}, {"micro_batches", r.micro_batches},
        {"head_rows", r.head_rows}, {"eot", r.eot},
        {"data", r.data.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.data)},
        {"reps", r.reps}, {"warmup", r.warmup}}},
      {"ceilings",
       {{"gemm", {{"n", c.gemm_n}, {"dtype", c.gemm_dtype}, {"ms", c.gemm_ms},
                  {"flops_per_s", c.gemm_flops_per_s}}},
        {"copy", {{"bytes", c.copy_bytes}, {"ms", c.copy_ms},
                  {"bytes_per_s", c.copy_bytes_per_s}}}}},
      {"launch",
       {{"from", r.launch_from}, {"to_backend_s", r.launch_to_backend_s},
        {"to_weights_s", r.launch_to_weights_s}, {"to_first_step_s", r.launch_to_first_step_s},
        {"first_step_ms", r.first_step_ms}}},
      {"peak_memory", {{"bytes", r.peak_bytes}, {"kind", r.peak_kind}}},
  };
  json windows = json::array();
  for (const WindowBench& w : r.windows) {
    json ops = json::array();
    for (const OpRow& row : w.ops)
      ops.push_back({{"phase", row.phase}, {"op", row.op}, {"calls", row.calls},
                     {"ms", row.ms}, {"share", row.share}, {"flops", row.flops},
                     {"bytes", row.bytes}, {"host", row.host}, {"rate", row.rate()},
                     {"rate_unit", row.flops > 0 ? "FLOP/s" : "B/s"},
                     {"of_ceiling", row.of_ceiling(c)}});
    windows.push_back({{"window", w.window},
                       {"ops", ops},
                       {"serial_step_ms", w.serial_step_ms},
                       {"step",
                        {{"fwd_bwd_ms", w.fwd_bwd_ms}, {"optimizer_ms", w.optimizer_ms},
                         {"step_ms", w.step_ms}, {"tokens_per_s", w.tokens_per_s},
                         {"model_flops", w.model_flops()}, {"matmul_flops", w.matmul_flops},
                         {"attention_flops", w.attention_flops},
                         {"attention_pairs", w.attention_pairs},
                         {"attention_tile", w.attention_tile},
                         {"optimizer_flops", w.optimizer_flops}, {"floor_ms", w.floor_ms},
                         {"mfu", w.mfu}, {"loss", w.loss}}}});
  }
  j["windows"] = windows;
  return j;
}

}  // namespace speedrun
