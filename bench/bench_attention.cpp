// CPU block-sparse attention, forward + backward, fp32: time against T and window.
// The cost should follow the number of tiles the mask lists (~T/tile * (window/tile + 1)),
// i.e. T * window, not T^2: the ns/(T*window) column stays flat while T or window grow
// (it rises only when window ~ tile, where the diagonal tiles dominate). Prints a table.
// --tiles times the same kernels with masks of 32-, 64- and 128-token tiles over a range of
// windows, beside the tile the CPU backend picks for each (CpuBackend::attention_tile).
//   bench_attention [--quick] [--tiles]   (--quick: fewer and smaller cases, for smoke runs)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "backend/block_mask.h"
#include "backend/cpu/attention/backward.h"
#include "backend/cpu/attention/forward.h"
#include "backend/cpu/cpu_backend.h"

namespace {

constexpr int32_t kEot = 50256;

struct Case {
  int64_t T, window, H, D;
  bool docs;  // random documents (mean length 1024) instead of one document
};

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Timing {
  double fwd_ms, bwd_ms, cpu_ms;  // best of the reps: wall time of each pass, CPU time of both
  int64_t blocks, full;           // tiles the mask lists per head; of them without a mask test
};

Timing time_case(const Case& c, int reps, int64_t tile) {
  using namespace speedrun;
  const int64_t B = 1, n = B * c.T * c.H * c.D;
  std::mt19937_64 rng(uint64_t(c.T * 31 + c.window));
  std::vector<int32_t> tokens(static_cast<size_t>(c.T));
  std::uniform_int_distribution<int32_t> id(0, 50000);
  std::bernoulli_distribution eot(1.0 / 1024);
  for (auto& t : tokens) t = c.docs && eot(rng) ? kEot : id(rng);
  const BlockMask mask = build_block_mask(tokens.data(), c.T, kEot, c.window, tile);

  std::normal_distribution<float> n01(0.f, 1.f);
  std::vector<float> q(static_cast<size_t>(n)), k(q.size()), v(q.size()), dout(q.size());
  for (auto* x : {&q, &k, &v, &dout})
    for (auto& e : *x) e = n01(rng);
  std::vector<float> out(q.size()), dq(q.size()), dk(q.size()), dv(q.size());
  std::vector<float> lse(static_cast<size_t>(B * c.H * c.T));
  const float scale = 1.f / std::sqrt(float(c.D));

  // Best of reps after one warm-up: wall time of forward and backward, and the process CPU
  // time of both (all threads), which other load on the machine inflates far less.
  double fwd = 1e30, bwd = 1e30, cpu = 1e30;
  for (int r = 0; r <= reps; ++r) {
    const double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    cpu::attention_forward<float>(out.data(), lse.data(), q.data(), k.data(), v.data(), &mask, B,
                                  c.T, c.H, c.D, scale);
    const double f = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    cpu::attention_backward<float>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                                   v.data(), out.data(), lse.data(), &mask, B, c.T, c.H, c.D, scale);
    const double b = seconds_since(t0);
    const double used = cpu_seconds() - c0;
    if (r > 0) {
      fwd = std::min(fwd, f);
      bwd = std::min(bwd, b);
      cpu = std::min(cpu, used);
    }
  }
  return {1e3 * fwd, 1e3 * bwd, 1e3 * cpu, int64_t(mask.q_kv.size()), mask.count_full()};
}

void run(const Case& c, int reps) {
  const int64_t tile = 128;
  const Timing t = time_case(c, reps, tile);
  const double total_ms = t.fwd_ms + t.bwd_ms;
  // Matmul work over whole listed tiles: forward QK^T and PV, backward QK^T, dO V^T, P^T dO,
  // dS^T Q, dS K (one pass); 2 flops per multiply-add.
  const double tile_flops = 2.0 * double(tile * tile * c.D) * double(c.H * t.blocks);
  const double tw = double(c.T) * double(std::min(c.window, c.T));
  std::printf("%6lld %6lld %7s %2lld %4lld %7lld %5lld %8.1f %8.1f %9.1f %8.1f %11.1f %10.1f\n",
              (long long)c.T, (long long)c.window, c.docs ? "random" : "single", (long long)c.H,
              (long long)c.D, (long long)t.blocks, (long long)t.full, t.fwd_ms, t.bwd_ms, total_ms,
              t.cpu_ms, 1e6 * total_ms / tw, tile_flops * 7 / (t.cpu_ms * 1e-3) / 1e9);
  std::fflush(stdout);
}

// Forward + backward wall time per tile edge, random documents, for head dims 64 and 128.
void tiles(bool quick) {
  const int reps = quick ? 1 : 2;
  const int64_t T = quick ? 2048 : 8192, H = 2;
  const speedrun::CpuBackend cpu;
  std::printf("CPU block-sparse attention by tile edge: fwd + bwd wall ms, fp32, B=1, T=%lld, "
              "H=%lld, random documents (mean 1024 tokens), %d threads; best of %d runs\n"
              "backend: the CPU backend's tile for the window; ratio: its time over tile 128's\n\n",
              (long long)T, (long long)H, omp_get_max_threads(), reps);
  std::printf("%4s %6s %9s %9s %9s %8s %6s\n", "D", "window", "tile 32", "tile 64", "tile 128",
              "backend", "ratio");
  for (int64_t D : {64, 128})
    for (int64_t w : {32, 64, 128, 256, 512, 1024, 1792}) {
      const Case c{T, w, H, D, true};
      const int64_t own = cpu.attention_tile(w);
      double ms[3], own_ms = NAN;
      for (int i = 0; i < 3; ++i) {
        const int64_t tile = int64_t(32) << i;  // 32, 64, 128
        const Timing t = time_case(c, reps, tile);
        ms[i] = t.fwd_ms + t.bwd_ms;
        if (tile == own) own_ms = ms[i];
      }
      std::printf("%4lld %6lld %9.1f %9.1f %9.1f %8lld %6.2f\n", (long long)D, (long long)w,
                  ms[0], ms[1], ms[2], (long long)own, own_ms / ms[2]);
      std::fflush(stdout);
    }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, by_tile = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--tiles") == 0) {
      by_tile = true;
    } else {
      std::fprintf(stderr, "bench_attention: unknown argument %s (takes --quick, --tiles)\n", argv[i]);
      return 2;
    }
  }
  if (by_tile) {
    tiles(quick);
    return 0;
  }
  std::printf("CPU block-sparse attention, fp32, B=1, tile 128, %d threads; best of %d runs\n",
              omp_get_max_threads(), quick ? 1 : 2);
  std::printf(
      "blocks: tiles listed per head (full: of them without a mask test); ms: wall time;\n"
      "cpu ms: CPU time of fwd + bwd over all threads; ns/(T*win) = total ms * 1e6 / (T * min(window, T));\n"
      "GFLOP/s/core: whole listed tiles, 7 tile matmuls each (fwd 2, bwd 5), per CPU second\n\n");
  std::printf("%6s %6s %7s %2s %4s %7s %5s %8s %8s %9s %8s %11s %10s\n", "T", "window", "docs", "H",
              "D", "blocks", "full", "fwd ms", "bwd ms", "total ms", "cpu ms", "ns/(T*win)",
              "GFLOP/s/c");
  const int reps = quick ? 1 : 2;
  std::vector<Case> cases;
  const int64_t Tfix = quick ? 2048 : 8192;
  for (bool docs : {false, true})
    for (int64_t w = 128; w <= Tfix; w *= 2) cases.push_back({Tfix, w, 4, 64, docs});
  for (bool docs : {false, true})
    for (int64_t T = 1024; T <= (quick ? 4096 : 16384); T *= 2) cases.push_back({T, 256, 4, 64, docs});
  for (int64_t w : {256, 1024}) cases.push_back({Tfix, w, 4, 128, false});
  if (!quick) cases.push_back({16384, 1792, 6, 128, true});  // the record's largest window, 6 heads
  const double cpu0 = cpu_seconds();
  const auto wall0 = std::chrono::steady_clock::now();
  for (const Case& c : cases) run(c, reps);
  // Other work on the machine shows as CPU use well under 100%: wall times then overstate.
  std::printf("\nCPU use over the run: %.0f%% of %d threads\n",
              100.0 * (cpu_seconds() - cpu0) / (seconds_since(wall0) * omp_get_max_threads()),
              omp_get_max_threads());
  return 0;
}
