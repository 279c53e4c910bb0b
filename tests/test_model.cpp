// The whole model: its hand-written backward against central finite differences in double
// on a micro config, SPEC.md's step-0 facts, and the gradient flow of zero-initialised
// projections.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/bf16.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "model/params.h"
#include "fixtures.h"
#include "tolerances.h"

using namespace speedrun;
using namespace speedrun::test;


TEST(Model, GradientMatchesFiniteDifferencesInDouble) {
  CpuBackend be;
  const GPTConfig cfg = micro_gpt();
  const int64_t B = 2, T = 40, window = 12;
  Parameters p(be, cfg, DType::F64);
  randomize(p, 7);
  GPT model(be, p, B, T);
  std::vector<int32_t> x, y;
  batch_with_documents(B, T, cfg, x, y, 11);

  p.zero_grad();
  const double loss = model.forward_backward(x.data(), y.data(), window);
  EXPECT_TRUE(std::isfinite(loss));

  Rng pick(3);
  const double h = 1e-6;
  int checked = 0;
  for (int i = 0; i < p.count(); ++i) {
    const int64_t n = p.value(i).numel();
    std::vector<double> g(static_cast<size_t>(n));
    be.download(g.data(), p.grad(i));
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::fabs(v));
    std::vector<double> w = p.to_host_f64(i);
    // Every scalar and up to 12 random entries of each matrix.
    std::vector<int64_t> idx;
    if (n <= 12) {
      for (int64_t k = 0; k < n; ++k) idx.push_back(k);
    } else {
      for (int k = 0; k < 12; ++k) idx.push_back(int64_t(pick.below(uint64_t(n))));
    }
    for (int64_t k : idx) {
      const double w0 = w[size_t(k)];
      w[size_t(k)] = w0 + h;
      p.from_host_f64(i, w);
      const double lp = model.forward_loss(x.data(), y.data(), window);
      w[size_t(k)] = w0 - h;
      p.from_host_f64(i, w);
      const double lm = model.forward_loss(x.data(), y.data(), window);
      w[size_t(k)] = w0;
      p.from_host_f64(i, w);
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(g[size_t(k)], fd, tol::kFiniteDiff * std::max(1.0, gmax))
          << p.name(i) << "[" << k << "]";
      ++checked;
    }
    // A wrong backward often leaves a whole tensor at zero: every tensor here must move.
    if (p.name(i) != "transformer.h.0.attn.lamb") {
      EXPECT_GT(gmax, 1e-8) << p.name(i);
    }
  }
  EXPECT_GT(checked, 150);
}

TEST(Model, FirstLayerLambHasExactlyZeroGradient) {
  // SPEC.md: v1 is layer 0's own v, so (1-lamb) v + lamb v1 does not depend on lamb there.
  CpuBackend be;
  const GPTConfig cfg = micro_gpt();
  Parameters p(be, cfg, DType::F64);
  randomize(p, 5);
  GPT model(be, p, 2, 40);
  std::vector<int32_t> x, y;
  batch_with_documents(2, 40, cfg, x, y, 1);
  p.zero_grad();
  model.forward_backward(x.data(), y.data(), 64);
  double g0 = 1, g1 = 0;
  be.download(&g0, p.grad(p.index("transformer.h.0.attn.lamb")));
  be.download(&g1, p.grad(p.index("transformer.h.1.attn.lamb")));
  EXPECT_EQ(g0, 0.0);
  EXPECT_NE(g1, 0.0);
}

TEST(Model, StepZeroLossIsLnVocabAndOnlyTheHeadGetsGradient) {
  CpuBackend be;
  GPTConfig cfg = micro_gpt();
  cfg.vocab = 64;
  Parameters p(be, cfg, DType::F32);
  p.init(42);
  GPT model(be, p, 2, 40);
  std::vector<int32_t> x, y;
  batch_with_documents(2, 40, cfg, x, y, 2);
  p.zero_grad();
  const double loss = model.forward_backward(x.data(), y.data(), 64);
  EXPECT_NEAR(loss, std::log(64.0), 1e-6);
  for (int i = 0; i < p.count(); ++i) {
    std::vector<float> g(size_t(p.grad(i).numel()));
    be.download(g.data(), p.grad(i));
    double gmax = 0;
    for (float v : g) gmax = std::max(gmax, double(std::fabs(v)));
    if (p.name(i) == "lm_head.weight")
      EXPECT_GT(gmax, 1e-4);
    else
      EXPECT_EQ(gmax, 0.0) << p.name(i);
  }
}

TEST(Model, InitFollowsSpec) {
  CpuBackend be;
  GPTConfig cfg = micro_gpt();
  Parameters p(be, cfg, DType::F32);
  p.init(1);
  auto stats = [&](const std::string& n) {
    auto v = p.to_host_f64(p.index(n));
    double mx = 0, s2 = 0;
    for (double x : v) {
      mx = std::max(mx, std::fabs(x));
      s2 += x * x;
      // bf16-representable: the low 16 bits of the fp32 pattern are zero.
      float f = float(x);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      EXPECT_EQ(u & 0xffffu, 0u) << n;
    }
    return std::pair{mx, std::sqrt(s2 / double(v.size()))};
  };
  const double bound = 1.0 / std::sqrt(32.0);
  auto [qmax, qrms] = stats("transformer.h.0.attn.c_q.weight");
  EXPECT_LE(qmax, bound * 1.004);
  EXPECT_NEAR(qrms, bound / std::sqrt(3.0), 0.1 * bound);
  auto [fmax, frms] = stats("transformer.h.1.mlp.c_fc.weight");
  EXPECT_LE(fmax, bound * 1.004);
  auto [emax, erms] = stats("transformer.wte.weight");
  EXPECT_NEAR(erms, 1.0, 0.1);
  EXPECT_EQ(stats("lm_head.weight").first, 0.0);
  EXPECT_EQ(stats("transformer.h.1.attn.c_proj.weight").first, 0.0);
  EXPECT_EQ(stats("transformer.h.0.mlp.c_proj.weight").first, 0.0);
  EXPECT_EQ(p.to_host_f64(p.index("transformer.h.1.lambdas")), (std::vector<double>{1.0, 0.0}));
  EXPECT_EQ(p.to_host_f64(p.index("transformer.h.1.attn.lamb")), (std::vector<double>{0.5}));
  EXPECT_EQ(p.to_host_f64(p.index("skip_weights")), (std::vector<double>{1.0}));
}

TEST(Model, InitIsOneRandomStreamInTableOrder) {
  // init draws its normals' uniforms in order and transforms them in parallel, block by
  // block: the values must be those of one sequential stream, across block boundaries
  // (an embedding of 1.3M values spans two blocks of 2^20), in table order, and the same
  // in an fp32 master (rounded on the host) as in an fp64 one. Re-initialising overwrites.
  CpuBackend be;
  GPTConfig cfg = micro_gpt();
  cfg.vocab = 40000;
  Parameters p64(be, cfg, DType::F64), p32(be, cfg, DType::F32);
  p64.init(5);
  p32.from_host_f64(p32.index("lm_head.weight"), std::vector<double>(size_t(40000 * 32), 0.25));
  p32.init(5);
  Rng rng(5);
  const std::vector<double> wte = p64.to_host_f64(p64.index("transformer.wte.weight"));
  ASSERT_EQ(wte.size(), size_t(40000 * 32));
  for (size_t k = 0; k < wte.size(); ++k)
    ASSERT_EQ(wte[k], round_bf16(rng.normal())) << "wte[" << k << "]";
  const double bound = 1.0 / std::sqrt(32.0);
  for (const char* n : {"transformer.h.0.attn.c_q.weight", "transformer.h.0.attn.c_k.weight"}) {
    const std::vector<double> w = p64.to_host_f64(p64.index(n));
    for (size_t k = 0; k < w.size(); ++k)
      ASSERT_EQ(w[k], round_bf16(rng.uniform(-bound, bound))) << n << "[" << k << "]";
  }
  for (int i = 0; i < p64.count(); ++i)
    EXPECT_EQ(p32.to_host_f64(i), p64.to_host_f64(i)) << p64.name(i);
}

TEST(Model, SequencesInABatchAreIndependent) {
  // Loss of a batch of two sequences = mean of each sequence's loss alone: no attention
  // or rotary position crosses the boundary between batch rows.
  CpuBackend be;
  const GPTConfig cfg = micro_gpt();
  Parameters p(be, cfg, DType::F64);
  randomize(p, 9);
  std::vector<int32_t> x, y;
  batch_with_documents(2, 40, cfg, x, y, 4);
  GPT both(be, p, 2, 40), one(be, p, 1, 40);
  const double l2 = both.forward_loss(x.data(), y.data(), 24);
  const double a = one.forward_loss(x.data(), y.data(), 24);
  const double b = one.forward_loss(x.data() + 40, y.data() + 40, 24);
  EXPECT_NEAR(l2, (a + b) / 2, 1e-12);
}

TEST(Model, DocumentMaskingIsolatesDocuments) {
  // Changing tokens of an earlier document must not change the loss on later documents'
  // positions: compare per-position logits after the last EOT.
  CpuBackend be;
  const GPTConfig cfg = micro_gpt();
  Parameters p(be, cfg, DType::F64);
  randomize(p, 13);
  GPT model(be, p, 1, 40);
  std::vector<int32_t> x, y;
  batch_with_documents(1, 40, cfg, x, y, 8);
  const int64_t last_eot = 2 * 40 / 3;
  // Another token id that is not the EOT.
  auto bump = [&](int32_t t, int32_t d) {
    int32_t u = (t + d) % int32_t(cfg.vocab);
    return u == cfg.eot ? (u + 1) % int32_t(cfg.vocab) : u;
  };
  auto la = model.logits_at(x.data(), 35, 64);
  for (int64_t t = 1; t < last_eot; ++t)
    if (x[size_t(t)] != cfg.eot) x[size_t(t)] = bump(x[size_t(t)], 5);
  auto lb = model.logits_at(x.data(), 35, 64);
  for (size_t v = 0; v < la.size(); ++v) EXPECT_NEAR(la[v], lb[v], 1e-12);
  // ...while the same change inside the last document does change them.
  x[size_t(last_eot + 2)] = bump(x[size_t(last_eot + 2)], 1);
  auto lc = model.logits_at(x.data(), 35, 64);
  double diff = 0;
  for (size_t v = 0; v < la.size(); ++v) diff = std::max(diff, std::fabs(la[v] - lc[v]));
  EXPECT_GT(diff, 1e-6);
}

TEST(Model, TheHeadsChunkSizeChangesNoResult) {
  // The head runs in chunks of rows (a GPU takes larger ones than the CPU): one row at a
  // time, chunks that leave a remainder, and the whole batch at once give the same loss and
  // gradients, up to the order in which lm_head's gradient sums the chunks.
  CpuBackend be;
  const GPTConfig cfg = micro_gpt();
  const int64_t B = 2, T = 40, N = B * T, V = cfg.vocab;
  Parameters p(be, cfg, DType::F64);
  randomize(p, 17);
  std::vector<int32_t> x, y;
  batch_with_documents(B, T, cfg, x, y, 5);
  auto run = [&](int64_t head_logits, int64_t rows) {
    GPT model(be, p, B, T, head_logits);
    EXPECT_EQ(model.head_rows(), rows);
    p.zero_grad();
    const double loss = model.forward_backward(x.data(), y.data(), 24);
    std::vector<std::vector<double>> grads;
    for (int i = 0; i < p.count(); ++i) grads.push_back(be.to_host_f64(p.grad(i)));
    return std::make_pair(loss, grads);
  };
  const auto whole = run(N * V, N);
  EXPECT_EQ(GPT(be, p, B, T).head_rows(), N);  // the CPU's default covers this batch
  for (const auto& [logits, rows] : {std::pair<int64_t, int64_t>{V, 1}, {7 * V + V / 2, 7},
                                     {1, 1}, {100 * N * V, N}}) {
    const auto chunked = run(logits, rows);
    EXPECT_NEAR(chunked.first, whole.first, 1e-13) << rows;
    for (int i = 0; i < p.count(); ++i)
      for (size_t k = 0; k < whole.second[size_t(i)].size(); ++k)
        ASSERT_NEAR(chunked.second[size_t(i)][k], whole.second[size_t(i)][k], 1e-12)
            << p.name(i) << "[" << k << "] with " << rows << "-row chunks";
  }
  EXPECT_THROW(GPT(be, p, B, T, -1), Error);
}
