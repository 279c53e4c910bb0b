// The whole model: its hand-written backward against central finite differences in double
// on a micro config, SPEC.md's step-0 facts, and the gradient flow of zero-initialised
// projections.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <cstdio>
#include <iterator>
#include <fstream>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/head_norm_rotary.h"
#include "core/arena.h"
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

TEST(Model, MasksTakeTheBackendsTileUnlessTheConfigNamesOne) {
  // attn_tile 0 builds each window's masks with the backend's tile (the CPU's: 32 up to
  // window 64, 64 up to 256, else 128), a positive attn_tile forces it; the tile decides which masked pairs
  // are computed, never which pairs are visible, so every tile gives the same loss and
  // gradients up to the order of sums.
  CpuBackend be;
  GPTConfig cfg = micro_gpt();
  const int64_t B = 2, T = 150;
  std::vector<int32_t> x, y;
  batch_with_documents(B, T, cfg, x, y, 9);
  auto run = [&](int64_t tile, int64_t window, int64_t expect_tile) {
    cfg.attn_tile = tile;
    Parameters p(be, cfg, DType::F64);
    randomize(p, 23);
    GPT model(be, p, B, T);
    const double loss = model.forward_backward(x.data(), y.data(), window);
    for (const BlockMask& m : model.masks()) EXPECT_EQ(m.tile, expect_tile) << window;
    std::vector<double> g;
    for (int i = 0; i < p.count(); ++i) {
      const auto gi = be.to_host_f64(p.grad(i));
      g.insert(g.end(), gi.begin(), gi.end());
    }
    return std::make_pair(loss, g);
  };
  for (int64_t window : {int64_t(20), int64_t(64), int64_t(65), int64_t(140), int64_t(300)}) {
    const auto chosen = run(0, window, be.attention_tile(window));
    for (int64_t tile : {int64_t(1), int64_t(16), int64_t(128)}) {
      const auto forced = run(tile, window, tile);
      EXPECT_NEAR(forced.first, chosen.first, 1e-13) << "window " << window << " tile " << tile;
      ASSERT_EQ(forced.second.size(), chosen.second.size());
      for (size_t k = 0; k < chosen.second.size(); ++k)
        ASSERT_NEAR(forced.second[k], chosen.second[k], 1e-12)
            << "window " << window << " tile " << tile << " gradient element " << k;
    }
  }
  EXPECT_EQ(be.attention_tile(64), 32);
  EXPECT_EQ(be.attention_tile(65), 64);
  EXPECT_EQ(be.attention_tile(256), 64);
  EXPECT_EQ(be.attention_tile(257), 128);
  cfg.attn_tile = -1;
  EXPECT_THROW(cfg.validate(), Error);
}

namespace {

// A device tensor of `dtype` holding `values` (owned by the test's backend until released).
struct Buffers {
  explicit Buffers(Backend& be) : be(be) {}
  ~Buffers() {
    for (void* p : owned) be.release(p);
  }
  Tensor make(DType d, std::initializer_list<int64_t> shape, const std::vector<double>& values) {
    Tensor t(nullptr, d, shape, be.device());
    owned.push_back(be.allocate(t.bytes()));
    t.data = owned.back();
    be.from_host_f64(t, values);
    return t;
  }
  Tensor scalar(DType d, double v) {
    Tensor t = make(d, {1}, {v});
    return t.element(0);
  }
  Backend& be;
  std::vector<void*> owned;
};

std::vector<double> normals(size_t n, uint64_t seed, double scale = 1.0) {
  Rng r(seed);
  std::vector<double> v(n);
  for (double& x : v) x = scale * r.normal();
  return v;
}

// Columns [c0, c0 + w) of a row-major [rows, cols] host array.
std::vector<double> columns(const std::vector<double>& a, int64_t rows, int64_t cols, int64_t c0,
                            int64_t w) {
  std::vector<double> out;
  for (int64_t r = 0; r < rows; ++r)
    out.insert(out.end(), a.begin() + r * cols + c0, a.begin() + r * cols + c0 + w);
  return out;
}

// QK norm + rotary of separate [N, H*D] tensors on the CPU (the rule qkv_forward and
// qkv_backward apply to q_raw and k_raw in place), in x's dtype.
void heads_forward(Tensor y, Tensor rstd, const Tensor& x, const Tensor& cos, const Tensor& sin,
                   int64_t T, int64_t H, double eps) {
  const int64_t N = x.rows(), D = x.cols() / H;
  if (x.dtype == DType::F64)
    cpu::head_norm_rotary_forward<double>(y.ptr<double>(), rstd.ptr<double>(), x.ptr<double>(),
                                          cos.ptr<double>(), sin.ptr<double>(), N, T, H, D, eps);
  else
    cpu::head_norm_rotary_forward<float>(y.ptr<float>(), rstd.ptr<float>(), x.ptr<float>(),
                                         cos.ptr<float>(), sin.ptr<float>(), N, T, H, D,
                                         float(eps));
}

void heads_backward(Tensor dx, const Tensor& dy, const Tensor& x, const Tensor& rstd,
                    const Tensor& cos, const Tensor& sin, int64_t T, int64_t H) {
  const int64_t N = x.rows(), D = x.cols() / H;
  if (x.dtype == DType::F64)
    cpu::head_norm_rotary_backward<double>(dx.ptr<double>(), dy.ptr<double>(), x.ptr<double>(),
                                           rstd.ptr<double>(), cos.ptr<double>(),
                                           sin.ptr<double>(), N, T, H, D);
  else
    cpu::head_norm_rotary_backward<float>(dx.ptr<float>(), dy.ptr<float>(), x.ptr<float>(),
                                          rstd.ptr<float>(), cos.ptr<float>(), sin.ptr<float>(),
                                          N, T, H, D);
}

}  // namespace

TEST(Model, StackedQkvOpsAreTheSeparateOps) {
  // qkv_forward / qkv_backward on the [N, 3C] projection give what QK norm + rotary and
  // scaled_sum give on q_raw, k_raw, v_raw as separate tensors (the model's former path):
  // the same bits, but the coefficient gradients, whose dots are summed in another order.
  CpuBackend be;
  const int64_t T = 11, B = 2, N = B * T, H = 3, D = 8, C = H * D;
  for (DType d : {DType::F64, DType::F32}) {
    for (bool layer0 : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(d)) + (layer0 ? ", layer 0" : ", layer 1"));
      Buffers buf(be);
      const std::vector<double> qkv_h = normals(size_t(N * 3 * C), 1, 2.0);
      const std::vector<double> v1_h = layer0 ? qkv_h : normals(size_t(N * 3 * C), 2);
      Tensor cos = buf.make(d, {T, D / 2}, std::vector<double>(size_t(T * D / 2), 0));
      Tensor sin = buf.make(d, {T, D / 2}, std::vector<double>(size_t(T * D / 2), 0));
      be.rotary_tables(cos, sin, 10000.0);
      Tensor qkv = buf.make(d, {N, 3 * C}, qkv_h);
      Tensor v1src = layer0 ? qkv : buf.make(d, {N, 3 * C}, v1_h);
      // Two gradient scalars (the model shares one), so each dot is seen on its own.
      Tensor lamb = buf.scalar(d, 0.3), ga = buf.scalar(d, 0.25), gb = buf.scalar(d, -0.5);
      const Coef a = Coef::one_minus(lamb, ga), b = Coef::param(lamb, gb);
      auto nc = [&](const std::vector<double>& v) { return buf.make(d, {N, C}, v); };
      const std::vector<double> zeros(size_t(N * C), 0.0);
      // The separate tensors.
      Tensor q_raw = nc(columns(qkv_h, N, 3 * C, 0, C)), k_raw = nc(columns(qkv_h, N, 3 * C, C, C));
      Tensor v_raw = nc(columns(qkv_h, N, 3 * C, 2 * C, C));
      Tensor v1 = layer0 ? v_raw : nc(columns(v1_h, N, 3 * C, 2 * C, C));

      // Forward.
      Tensor q = nc(zeros), k = nc(zeros), v = nc(zeros);
      Tensor rstd = buf.make(d, {2, N * H}, std::vector<double>(size_t(2 * N * H), 0));
      be.qkv_forward(q, k, v, rstd, qkv, v1src, a, b, cos, sin, T, H, 1e-6);
      Tensor q2 = nc(zeros), k2 = nc(zeros), v2 = nc(zeros);
      Tensor rq = buf.make(d, {N * H}, std::vector<double>(size_t(N * H), 0));
      Tensor rk = buf.make(d, {N * H}, std::vector<double>(size_t(N * H), 0));
      heads_forward(q2, rq, q_raw, cos, sin, T, H, 1e-6);
      heads_forward(k2, rk, k_raw, cos, sin, T, H, 1e-6);
      be.scaled_sum_forward(v2, v_raw, a, v1, b);
      EXPECT_EQ(be.to_host_f64(q), be.to_host_f64(q2));
      EXPECT_EQ(be.to_host_f64(k), be.to_host_f64(k2));
      EXPECT_EQ(be.to_host_f64(v), be.to_host_f64(v2));
      std::vector<double> rs = be.to_host_f64(rq), rks = be.to_host_f64(rk);
      rs.insert(rs.end(), rks.begin(), rks.end());
      EXPECT_EQ(be.to_host_f64(rstd), rs);

      // Backward, from dv1 already holding later layers' shares.
      const std::vector<double> dq_h = normals(size_t(N * C), 3), dk_h = normals(size_t(N * C), 4);
      const std::vector<double> dv_h = normals(size_t(N * C), 5), dv1_h = normals(size_t(N * C), 6);
      Tensor dq = nc(dq_h), dk = nc(dk_h), dv = nc(dv_h), dv1 = nc(dv1_h);
      Tensor dqkv = buf.make(d, {N, 3 * C}, std::vector<double>(size_t(N * 3 * C), NAN));
      be.qkv_backward(dqkv, dv1, dq, dk, dv, qkv, rstd, v1src, a, b, cos, sin, T, H);
      const double ga_fused = be.to_host_f64(ga)[0], gb_fused = be.to_host_f64(gb)[0];
      be.from_host_f64(ga.view({1}), {0.25});
      be.from_host_f64(gb.view({1}), {-0.5});
      Tensor dq_raw = nc(zeros), dk_raw = nc(zeros), dv_raw = nc(zeros), dv1b = nc(dv1_h);
      heads_backward(dq_raw, dq, q_raw, rq, cos, sin, T, H);
      heads_backward(dk_raw, dk, k_raw, rk, cos, sin, T, H);
      if (layer0) {
        be.scaled_sum_backward(dv1b, true, dv1b, true, dv, v_raw, a, v1, b);
        be.copy(dv_raw, dv1b);
      } else {
        be.scaled_sum_backward(dv_raw, false, dv1b, true, dv, v_raw, a, v1, b);
      }
      const std::vector<double> got = be.to_host_f64(dqkv);
      EXPECT_EQ(columns(got, N, 3 * C, 0, C), be.to_host_f64(dq_raw));
      EXPECT_EQ(columns(got, N, 3 * C, C, C), be.to_host_f64(dk_raw));
      EXPECT_EQ(columns(got, N, 3 * C, 2 * C, C), be.to_host_f64(dv_raw));
      EXPECT_EQ(be.to_host_f64(dv1), be.to_host_f64(dv1b));
      EXPECT_NE(ga_fused, 0.25);  // the gradients moved
      EXPECT_NE(gb_fused, -0.5);
      const double tol = d == DType::F64 ? 1e-12 : 1e-5;
      EXPECT_NEAR(ga_fused, be.to_host_f64(ga)[0], tol);
      EXPECT_NEAR(gb_fused, be.to_host_f64(gb)[0], tol);
    }
  }
}

TEST(Model, QkvIsOneViewOfTheThreeProjections) {
  // c_k and c_v follow c_q with no padding in every arena (masters, gradients, compute
  // copies), even where a matrix's bytes are not a multiple of the arenas' 64-byte
  // alignment, so LayerWeights::qkv is [3C, C] over all three.
  CpuBackend be;
  GPTConfig cfg = micro_gpt();
  cfg.heads = 1;
  cfg.head_dim = 6;  // C = 6: 36 doubles, 288 bytes, not a multiple of 64
  Parameters p(be, cfg, DType::F64);
  const int64_t C = cfg.width();
  for (const Weights* w : {&p.w, &p.g, &p.c})
    for (const LayerWeights& h : w->h) {
      EXPECT_EQ(h.qkv.data, h.c_q.data);
      EXPECT_EQ(h.qkv.shape_str(), "[" + std::to_string(3 * C) + ", " + std::to_string(C) + "]");
      EXPECT_EQ(static_cast<char*>(h.c_k.data), static_cast<char*>(h.c_q.data) + h.c_q.bytes());
      EXPECT_EQ(static_cast<char*>(h.c_v.data), static_cast<char*>(h.c_k.data) + h.c_k.bytes());
    }
  // The view is the three matrices: written through c_k, read through qkv's rows C..2C.
  std::vector<double> ck(size_t(C * C));
  for (size_t i = 0; i < ck.size(); ++i) ck[i] = double(i) + 0.5;
  p.from_host_f64(p.index("transformer.h.1.attn.c_k.weight"), ck);
  const std::vector<double> all = be.to_host_f64(p.w.h[1].qkv);
  EXPECT_EQ(std::vector<double>(all.begin() + C * C, all.begin() + 2 * C * C), ck);
  // Tensors apart in memory are refused, naming why.
  EXPECT_THROW(stack_rows({p.w.h[0].c_q, p.w.h[0].c_v}), Error);
  EXPECT_THROW(stack_rows({p.w.h[0].c_v, p.w.h[0].c_proj}), Error);  // padding between
}

TEST(Model, ArenaAdjacentTensorsHaveNoPadding) {
  Arena a([](size_t n) { return std::calloc(n, 1); }, [](void* p) { std::free(p); });
  Tensor x, y, z, w;
  a.add("x", DType::F32, {3}, &x);
  a.add_adjacent("y", DType::F32, {5}, &y);
  a.add_adjacent("z", DType::F32, {1}, &z);
  a.add("w", DType::F32, {2}, &w);
  EXPECT_THROW(a.add_adjacent("bf", DType::BF16, {2}), Error);  // another dtype cannot follow
  a.materialize(Device::CPU);
  auto at = [&](const Tensor& t) { return static_cast<char*>(t.data) - static_cast<char*>(a.base()); };
  EXPECT_EQ(at(x), 0);
  EXPECT_EQ(at(y), 12);
  EXPECT_EQ(at(z), 32);
  EXPECT_EQ(at(w), 64);  // the next plain tensor is aligned again
  EXPECT_EQ(a.bytes(), size_t(128));
}

// Sizes come from flags and files: an element count whose bytes pass 2^62 (or wrap past
// 2^64 into a small allocation the tensors would overrun) is refused where it is sized,
// naming the tensor; nothing is allocated.
TEST(Model, ArenaRefusesSizesBeyondAnyMemory) {
  int allocations = 0;
  Arena a([&](size_t n) { ++allocations; return std::calloc(n, 1); }, [](void* p) { std::free(p); });
  a.add("ok", DType::F32, {1 << 20, 0, int64_t(1) << 62});  // no elements: no bytes
  const auto refused = [&](const std::vector<int64_t>& shape, const std::string& words) {
    try {
      a.add("big", DType::F32, shape);
      ADD_FAILURE() << "accepted " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused({int64_t(1) << 40, int64_t(1) << 21}, "'big' [1099511627776, 2097152] F32 is more than 2^62 bytes");
  refused({int64_t(1) << 33, int64_t(1) << 33}, "is more than 2^62 bytes");  // 2^68: wraps to 0
  refused({-4, 8}, "negative dimension");
  a.add("half", DType::F32, {int64_t(1) << 30, int64_t(1) << 29});  // 2^61 bytes: sized, not yet allocated
  refused({int64_t(1) << 30, (int64_t(1) << 29) + 1}, "takes the arena beyond 2^62 bytes");
  EXPECT_EQ(allocations, 0);
}

// A weights file's metadata names the model's shape: one beyond the bounds of model/config.h
// is refused naming the file, as a truncated eot would have been read as another id.
TEST(Model, WeightsMetadataBeyondTheShapeBoundsIsRefused) {
  const std::map<std::string, std::string> good = GPTConfig{}.to_metadata();
  const auto refused = [&](const std::string& key, const std::string& value, const std::string& words) {
    auto m = good;
    m[key] = value;
    try {
      GPTConfig::from_metadata(m, "w.safetensors");
      ADD_FAILURE() << key << " = " << value << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("w.safetensors"), std::string::npos) << e.what();
    }
  };
  EXPECT_NO_THROW(GPTConfig::from_metadata(good, "w.safetensors"));
  refused("layers", "4294967296", "4294967296 layers: at most 65536");
  refused("heads", "2147483648", "heads: must be in [1, 65536]");
  refused("head_dim", "262144", "head dimension 262144: at most 65536");
  refused("heads", "65536", "width 65536 heads x 128 = 8388608: at most 1048576");
  refused("vocab", "4294967296", "must be in [2, 2147483647]");
  refused("eot", "4294967301", "eot = 4294967301 is not a token id");
}

// Weights whose data is not aligned for its dtype (a header not padded to 8 bytes, which the
// safetensors format allows) load the same values as the aligned file: each element is read
// through memcpy (an unaligned float load is undefined behaviour, reported under UBSan).
TEST(Model, UnalignedWeightsLoadTheSameValues) {
  CpuBackend be(1);
  GPTConfig cfg;
  cfg.layers = 2;
  cfg.heads = 1;
  cfg.head_dim = 4;
  cfg.vocab = 8;
  cfg.eot = 7;
  Parameters p(be, cfg, DType::F64);
  p.init(3);
  const std::string dir = ::testing::TempDir();
  for (DType d : {DType::F32, DType::F64, DType::BF16}) {
    const std::string aligned = dir + "/speedrun_aligned.safetensors",
                      shifted = dir + "/speedrun_unaligned.safetensors";
    p.save(aligned, {}, d);
    std::string bytes;
    {
      std::ifstream in(aligned, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const uint64_t m = n + 2;  // two more spaces after the header's JSON: data at 2 mod 4
    std::string out(reinterpret_cast<const char*>(&m), 8);
    out += bytes.substr(8, n) + "  " + bytes.substr(8 + n);
    std::ofstream(shifted, std::ios::binary) << out;
    Parameters a(be, cfg, DType::F64), b(be, cfg, DType::F64);
    a.load(aligned);
    b.load(shifted);
    for (int i = 0; i < p.count(); ++i) EXPECT_EQ(a.to_host_f64(i), b.to_host_f64(i)) << p.name(i);
    std::remove(aligned.c_str());
    std::remove(shifted.c_str());
  }
}

TEST(Model, MixNormOpsAreTheSeparateOps) {
  // mix_norm_forward / mix_norm_backward give what scaled_sum then rms_norm give (the
  // model's former path) bit for bit, but the coefficient gradients, whose dots are summed
  // in another order; dx may be dres itself, as the model calls it.
  CpuBackend be;
  const int64_t R = 37, C = 24;
  for (DType d : {DType::F64, DType::F32}) {
    SCOPED_TRACE(dtype_name(d));
    Buffers buf(be);
    auto rc = [&](uint64_t seed, double scale = 1.0) {
      return buf.make(d, {R, C}, normals(size_t(R * C), seed, scale));
    };
    Tensor x = rc(1, 2.0), y = rc(2);
    Tensor l0 = buf.scalar(d, 0.9), l1 = buf.scalar(d, 0.2);
    Tensor ga = buf.scalar(d, 0.25), gb = buf.scalar(d, -0.5);
    const Coef a = Coef::param(l0, ga), b = Coef::param(l1, gb);
    Tensor xmix = rc(9), n = rc(9), rstd = buf.make(d, {R}, std::vector<double>(size_t(R), 0));
    be.mix_norm_forward(xmix, n, rstd, x, a, y, b, 1e-6);
    Tensor xmix2 = rc(9), n2 = rc(9), rstd2 = buf.make(d, {R}, std::vector<double>(size_t(R), 0));
    be.scaled_sum_forward(xmix2, x, a, y, b);
    be.rms_norm_forward(n2, rstd2, xmix2, 1e-6);
    EXPECT_EQ(be.to_host_f64(xmix), be.to_host_f64(xmix2));
    EXPECT_EQ(be.to_host_f64(n), be.to_host_f64(n2));
    EXPECT_EQ(be.to_host_f64(rstd), be.to_host_f64(rstd2));

    const std::vector<double> dres_h = normals(size_t(R * C), 3), dy_h = normals(size_t(R * C), 4);
    Tensor dn = rc(5), dh = buf.make(d, {R, C}, dres_h), dy = buf.make(d, {R, C}, dy_h);
    be.mix_norm_backward(dh, dy, dh, dn, xmix, rstd, x, a, y, b, Tensor{});
    const double ga_fused = be.to_host_f64(ga)[0], gb_fused = be.to_host_f64(gb)[0];
    be.from_host_f64(ga.view({1}), {0.25});
    be.from_host_f64(gb.view({1}), {-0.5});
    Tensor dh2 = buf.make(d, {R, C}, dres_h), dy2 = buf.make(d, {R, C}, dy_h);
    be.rms_norm_backward(dh2, dn, xmix, rstd, true);
    be.scaled_sum_backward(dh2, false, dy2, true, dh2, x, a, y, b);
    EXPECT_EQ(be.to_host_f64(dh), be.to_host_f64(dh2));
    EXPECT_EQ(be.to_host_f64(dy), be.to_host_f64(dy2));
    EXPECT_NE(ga_fused, 0.25);
    EXPECT_NE(gb_fused, -0.5);
    const double tol = d == DType::F64 ? 1e-12 : 1e-5;
    EXPECT_NEAR(ga_fused, be.to_host_f64(ga)[0], tol);
    EXPECT_NEAR(gb_fused, be.to_host_f64(gb)[0], tol);
  }
}
