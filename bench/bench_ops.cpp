// CPU op throughput at GPT-small-like sizes (N = 8192 rows, C = 768, fp32): effective GB/s
// of each memory-bound kernel (bytes each must read and write, divided by the best of a few
// runs) and Newton-Schulz milliseconds for the record's matrix shapes, one matrix alone and
// stacks of them through CpuBackend::newton_schulz (a thread per matrix) against the same
// matrices one after another. Runs in ~20 s.
// Usage: bench_ops   (threads from OMP_NUM_THREADS)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <tuple>
#include <vector>

#include "backend/cpu/adam.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/embedding.h"
#include "backend/cpu/head_norm_rotary.h"
#include "backend/cpu/muon.h"
#include "backend/cpu/relu_squared.h"
#include "backend/cpu/rms_norm.h"
#include "backend/cpu/scaled_sum.h"

using namespace speedrun;
using Buf = std::vector<float>;

namespace {

Buf randn(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Buf v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// Best wall time in seconds of `reps` runs after one warm-up run.
double best_seconds(const std::function<void()>& f, int reps) {
  f();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

void row(const char* op, const char* shape, double bytes, double sec) {
  std::printf("%-28s %-18s %10.3f %10.1f\n", op, shape, sec * 1e3, bytes / sec / 1e9);
}

}  // namespace

int main() {
  const int64_t N = 8192, C = 768, H = 6, D = 128, T = 1024, F = 4 * C, V = 50304;
  const int64_t n = N * C;
  const int reps = 5;
  std::printf("threads %d, N=%ld C=%ld (fp32)\n", omp_get_max_threads(), long(N), long(C));
  std::printf("%-28s %-18s %10s %10s\n", "op", "shape", "ms", "GB/s");

  Buf x = randn(n, 1), y = randn(n, 2), dy = randn(n, 3), dx(static_cast<size_t>(n));
  Buf rstd(static_cast<size_t>(N * H));
  const double f4 = 4.0;

  row("rms_norm_forward", "[8192,768]", f4 * 2 * n,
      best_seconds([&] { cpu::rms_norm_forward(y.data(), rstd.data(), x.data(), N, C, 1e-7f); }, reps));
  row("rms_norm_backward +=", "[8192,768]", f4 * 4 * n, best_seconds([&] {
        cpu::rms_norm_backward(dx.data(), dy.data(), x.data(), rstd.data(), N, C, true);
      }, reps));

  Buf cs(static_cast<size_t>(T * D / 2)), sn(cs.size());
  cpu::rotary_tables(cs.data(), sn.data(), T, D, 10000.0);
  row("head_norm_rotary_forward", "[8192,6,128]", f4 * 2 * n, best_seconds([&] {
        cpu::head_norm_rotary_forward(y.data(), rstd.data(), x.data(), cs.data(), sn.data(), N, T,
                                      H, D, 1e-7f);
      }, reps));
  row("head_norm_rotary_backward", "[8192,6,128]", f4 * 3 * n, best_seconds([&] {
        cpu::head_norm_rotary_backward(dx.data(), dy.data(), x.data(), rstd.data(), cs.data(),
                                       sn.data(), N, T, H, D);
      }, reps));

  {
    Buf h = randn(N * F, 4), g = randn(N * F, 5), o(static_cast<size_t>(N * F));
    row("relu_squared_forward", "[8192,3072]", f4 * 2 * N * F,
        best_seconds([&] { cpu::relu_squared_forward(o.data(), h.data(), N * F); }, reps));
    row("relu_squared_backward", "[8192,3072]", f4 * 3 * N * F,
        best_seconds([&] { cpu::relu_squared_backward(o.data(), g.data(), h.data(), N * F); }, reps));
  }

  row("scaled_sum_forward", "[8192,768]", f4 * 3 * n, best_seconds([&] {
        cpu::scaled_sum_forward(dx.data(), x.data(), 0.5f, y.data(), 0.5f, n);
      }, reps));
  {
    Buf gx(static_cast<size_t>(n), 0.0f), gy(static_cast<size_t>(n), 0.0f);
    row("scaled_sum_backward +=,+=", "[8192,768]", f4 * 7 * n, best_seconds([&] {
          cpu::scaled_sum_backward(gx.data(), true, gy.data(), true, dy.data(), 0.5f, x.data(),
                                   0.5f, y.data(), n);
        }, reps));
  }

  {
    std::vector<int32_t> tok(static_cast<size_t>(N));
    std::mt19937 rng(7);
    for (auto& t : tok) t = int32_t(rng() % 50257);
    Buf wte = randn(V * C, 8);
    row("embedding_forward", "[8192,768]", f4 * 2 * n,
        best_seconds([&] { cpu::embedding_forward(y.data(), tok.data(), wte.data(), N, C); }, reps));
    row("embedding_backward +=", "[8192,768]", f4 * 3 * n,
        best_seconds([&] { cpu::embedding_backward(wte.data(), tok.data(), dy.data(), N, C); }, reps));
  }

  {
    const int64_t R = 1024;
    Buf logits = randn(R * V, 9, 3.0f), work(logits.size()), losses(static_cast<size_t>(R));
    std::vector<int32_t> tg(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) tg[size_t(r)] = int32_t((r * 7919) % V);
    row("softcap_cross_entropy fwd", "[1024,50304]", f4 * R * V, best_seconds([&] {
          cpu::softcap_cross_entropy(logits.data(), losses.data(), tg.data(), R, V, 30.0f, 1.0f,
                                     false);
        }, 2));
    row("softcap_cross_entropy f+b", "[1024,50304]", f4 * 2 * R * V, best_seconds([&] {
          std::copy(logits.begin(), logits.end(), work.begin());
          cpu::softcap_cross_entropy(work.data(), losses.data(), tg.data(), R, V, 30.0f, 1.0f, true);
        }, 2));
  }

  {
    Buf p = randn(n, 10), m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
    int64_t step = 0;
    row("adam_step", "[8192,768]", f4 * 7 * n, best_seconds([&] {
          cpu::adam_step(p.data(), dy.data(), m.data(), v.data(), n, 0.6, 0.8, 0.95, 1e-8, ++step);
        }, reps));
    row("muon_momentum", "[8192,768]", f4 * 4 * n,
        best_seconds([&] { cpu::muon_momentum(dx.data(), m.data(), dy.data(), n, 0.95f); }, reps));
    row("axpy", "[8192,768]", f4 * 3 * n,
        best_seconds([&] { cpu::axpy(p.data(), dy.data(), -1e-3f, n); }, reps));
  }

  std::printf("\n%-28s %-18s %10s\n", "newton_schulz5 (5 steps)", "shape", "ms");
  for (const auto& shape_rc : {std::pair<int64_t, int64_t>{768, 768}, {3072, 768}}) {
    const int64_t r = shape_rc.first, c = shape_rc.second;  // clang < 16 cannot capture bindings
    Buf G = randn(r * c, 11), X(G.size());
    char shape[32];
    std::snprintf(shape, sizeof shape, "[%ld,%ld]", long(r), long(c));
    for (bool bf : {false, true}) {
      const double s = best_seconds(
          [&] { cpu::newton_schulz5(X.data(), G.data(), r, c, 5, bf); }, 2);
      std::printf("%-28s %-18s %10.1f\n", bf ? "  bf16-rounded" : "  fp32", shape, s * 1e3);
    }
  }

  // A Muon stack through the backend: its matrices on threads of their own (where there are
  // as many as threads, or they are small) against the same matrices one call each, whose
  // products share the threads. bf16-rounded, as Muon runs; the same bits either way.
  std::printf("\n%-28s %-18s %10s %10s\n", "newton_schulz stack", "shape", "stack ms", "alone ms");
  CpuBackend be;
  for (const auto& [count, r, c] : {std::tuple<int64_t, int64_t, int64_t>{16, 128, 128},
                                    {4, 512, 128}, {4, 768, 768}, {4, 3072, 768}}) {
    Buf G = randn(count * r * c, 12), X(G.size());
    const int64_t one = r * c;
    char shape[48];
    std::snprintf(shape, sizeof shape, "%ld x [%ld,%ld]", long(count), long(r), long(c));
    const double stack = best_seconds([&] {
      be.newton_schulz(Tensor(X.data(), DType::F32, {count, r, c}),
                       Tensor(G.data(), DType::F32, {count, r, c}), 5, true);
    }, 3);
    const double alone = best_seconds([&] {
      for (int64_t i = 0; i < count; ++i)
        be.newton_schulz(Tensor(X.data() + i * one, DType::F32, {r, c}),
                         Tensor(G.data() + i * one, DType::F32, {r, c}), 5, true);
    }, 3);
    std::printf("%-28s %-18s %10.1f %10.1f\n", "", shape, stack * 1e3, alone * 1e3);
  }
  return 0;
}
