// The optimizer groups of SPEC.md on a real parameter table: which LR each parameter
// gets, Adam's first steps, Muon's update = -lr * scale * NS(Nesterov(g)).
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/muon.h"
#include "core/rng.h"
#include "model/params.h"
#include "optim/optimizer.h"
#include "fixtures.h"

using namespace speedrun;
using namespace speedrun::test;



TEST(Optimizer, AdamGroupsGetTheirLearningRates) {
  CpuBackend be;
  Parameters p(be, micro_gpt(), DType::F64);
  p.init(3);
  OptimConfig oc;
  Optimizer opt(be, p, oc);
  std::vector<std::vector<double>> before(p.count());
  for (int i = 0; i < p.count(); ++i) {
    before[i] = p.to_host_f64(i);
    be.fill(p.grad(i), 1e-3);
  }
  const double mult = 0.5;
  opt.step(mult, 0.9);
  for (int i = 0; i < p.count(); ++i) {
    if (p.group(i) == ParamGroup::Matrix) continue;
    const double lr = p.group(i) == ParamGroup::Embed  ? oc.lr_embed
                      : p.group(i) == ParamGroup::Head ? oc.lr_head
                                                       : oc.lr_scalar;
    // Adam's first step: m/bc1 = g, sqrt(v/bc2) = |g|, so p -= lr * g / (|g| + eps).
    const double expect = lr * mult * 1e-3 / (1e-3 + oc.eps);
    auto after = p.to_host_f64(i);
    for (size_t k = 0; k < after.size(); ++k)
      ASSERT_NEAR(before[i][k] - after[k], expect, 1e-12) << p.name(i);
  }
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(Optimizer, AdamCountsStepsWithZeroGradient) {
  // SPEC.md: Adam's step counter advances on every step, zero gradients included.
  CpuBackend be;
  Parameters p(be, micro_gpt(), DType::F64);
  p.init(3);
  OptimConfig oc;
  Optimizer opt(be, p, oc);
  const int i = p.index("lm_head.weight");
  p.zero_grad();
  opt.step(1.0, 0.9);  // t = 1, g = 0: no change
  EXPECT_EQ(p.to_host_f64(i), std::vector<double>(p.value(i).numel(), 0.0));
  be.fill(p.grad(i), 2e-3);
  opt.step(1.0, 0.9);  // t = 2
  const double b1 = oc.beta1, b2 = oc.beta2, g = 2e-3;
  const double m = (1 - b1) * g, v = (1 - b2) * g * g;
  const double upd = oc.lr_head / (1 - b1 * b1) * m / (std::sqrt(v) / std::sqrt(1 - b2 * b2) + oc.eps);
  for (double x : p.to_host_f64(i)) ASSERT_NEAR(x, -upd, 1e-15);
}

TEST(Optimizer, MuonUpdateIsScaledNewtonSchulzOfNesterovMomentum) {
  CpuBackend be;
  Parameters p(be, micro_gpt(), DType::F64);
  p.init(3);
  OptimConfig oc;
  Optimizer opt(be, p, oc);
  Rng rng(5);
  const int i_fc = p.index("transformer.h.1.mlp.c_fc.weight");   // [128, 32]: scale 2
  const int i_q = p.index("transformer.h.0.attn.c_q.weight");    // [32, 32]: scale 1
  std::vector<std::vector<double>> g(p.count());
  for (int i = 0; i < p.count(); ++i) {
    g[i].resize(size_t(p.value(i).numel()));
    for (auto& v : g[i]) v = rng.normal();
    be.upload(p.grad(i), g[i].data());
  }
  auto w_fc = p.to_host_f64(i_fc), w_q = p.to_host_f64(i_q);
  const double mu = 0.9, mult = 0.25;
  opt.step(mult, mu);
  for (auto [i, w0, rows, cols] : {std::tuple{i_fc, w_fc, 128, 32}, std::tuple{i_q, w_q, 32, 32}}) {
    // First step: buf = g, Nesterov update = g + mu * g.
    std::vector<double> upd(g[i].size()), X(g[i].size());
    for (size_t k = 0; k < upd.size(); ++k) upd[k] = g[i][k] * (1 + mu);
    cpu::newton_schulz5<double>(X.data(), upd.data(), rows, cols, 5, false);
    ASSERT_EQ(p.value(i).dim(0), rows);
    ASSERT_EQ(p.value(i).dim(1), cols);
    const double scale = std::sqrt(std::max(1.0, double(rows) / cols));
    EXPECT_EQ(scale, rows == 128 ? 2.0 : 1.0);
    auto after = p.to_host_f64(i);
    for (size_t k = 0; k < after.size(); ++k)
      ASSERT_NEAR(after[k], w0[k] - oc.muon_lr * mult * scale * X[k], 1e-12) << p.name(i);
  }
}

// The many-tensor and fused ops refuse operands that do not fit, naming what is wrong.
TEST(Optimizer, FusedOpsRefuseBadOperandsByName) {
  CpuBackend be;
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  std::vector<double> m(3 * 4 * 5, 0.1), X(m.size()), in(m.size()), b0(20, 0.0), b1(20, 0.0);
  const Tensor out(X.data(), DType::F64, {3, 4, 5});
  const Tensor input(in.data(), DType::F64, {3, 4, 5});
  const Tensor g0(m.data(), DType::F64, {4, 5}), buf0(b0.data(), DType::F64, {4, 5});
  const Tensor buf1(b1.data(), DType::F64, {4, 5});
  EXPECT_NE(message([&] { be.muon_stack(out, input, {buf0, buf1}, {g0}, 0.95, 5, false); })
                .find("2 momentum buffers for 1 gradients"),
            std::string::npos);
  EXPECT_NE(message([&] { be.muon_stack(out, Tensor{}, {buf0}, {g0}, 0.95, 5, false); })
                .find("needs the input stack"),
            std::string::npos);
  EXPECT_NE(message([&] { be.muon_stack(out, input, {buf0}, {g0}, 0.95, 5, false); })
                .find("is not a stack of 1 matrices"),
            std::string::npos);

  // dskip over the skip itself would be overwritten (by xin) before it is read.
  std::vector<double> r(4 * 8, 0.5), rs(4, 1.0), d(4 * 8, 0.2), e(4 * 8, 0.3), s1(1, 0.9),
      s2(1, 0.1), s3(1, 0.7), gs(3, 0.0);
  const Tensor A(r.data(), DType::F64, {4, 8}), Rs(rs.data(), DType::F64, {4});
  const Tensor D(d.data(), DType::F64, {4, 8}), E(e.data(), DType::F64, {4, 8});
  const Coef a = Coef::param(Tensor(s1.data(), DType::F64, {}), Tensor(gs.data(), DType::F64, {}));
  const Coef b = Coef::param(Tensor(s2.data(), DType::F64, {}), Tensor(gs.data() + 1, DType::F64, {}));
  const Coef c = Coef::param(Tensor(s3.data(), DType::F64, {}), Tensor(gs.data() + 2, DType::F64, {}));
  EXPECT_NE(message([&] { be.skip_mix_norm_backward(D, A, E, D, E, A, Rs, A, A, c, a, A, b); })
                .find("dskip must not alias"),
            std::string::npos);
  EXPECT_NE(message([&] { be.muon_momenta({buf0}, {}, 0.95); })
                .find("1 momentum buffers for 0 gradients"),
            std::string::npos);

  // No dskip only where skip is h; an added tensor must not be an output.
  std::vector<double> f(4 * 8, 0.1);
  const Tensor F(f.data(), DType::F64, {4, 8});
  EXPECT_NE(message([&] { be.skip_mix_norm_backward(D, Tensor{}, E, D, E, A, Rs, A, F, c, a, A, b); })
                .find("only where skip is h"),
            std::string::npos);
  EXPECT_NE(message([&] { be.mix_norm_backward(D, E, D, E, A, Rs, A, a, A, b, E); })
                .find("dadd must not alias dx or dy"),
            std::string::npos);
  EXPECT_NE(message([&] { be.mix_norm_backward(Tensor{}, E, D, E, A, Rs, A, a, F, b, Tensor{}); })
                .find("only where x is y"),
            std::string::npos);
}

// A stack's Newton-Schulz runs its matrices on threads of their own: every matrix gets
// the bits it gets alone on one thread, on any thread count (each thread's workspace its
// own), in fp32 with and without the bf16 emulation, wide and tall, and in fp64. Alone
// with several threads its products are shared, and whether OpenBLAS's kernels give the
// same bits for another split of the rows depends on the kernels it picks for the CPU:
// its SkylakeX kernels do, its Haswell and Zen ones (0.3.21 runs Haswell's on AMD Zen 5)
// do not, as for any product; so "alone" is one thread.
TEST(Optimizer, NewtonSchulzStackGivesEachMatrixItsOwnBitsOnAnyThreadCount) {
  CpuBackend be;
  const int saved = omp_get_max_threads();
  Rng rng(11);
  for (auto [rows, cols] : {std::pair{96, 160}, std::pair{160, 96}}) {
    const int n = 5;
    const size_t one = size_t(rows) * size_t(cols);
    std::vector<double> gd(one * n);
    for (double& v : gd) v = rng.normal();
    std::vector<float> gf(gd.begin(), gd.end());
    for (bool bf16 : {false, true}) {
      std::vector<float> alone(one * n);
      be.set_threads(1);
      for (int i = 0; i < n; ++i)  // each matrix alone, as a stack of one
        be.newton_schulz(Tensor(alone.data() + i * one, DType::F32, {rows, cols}),
                         Tensor(gf.data() + i * one, DType::F32, {rows, cols}), 5, bf16);
      for (int threads : {1, 2, 3}) {
        be.set_threads(threads);
        std::vector<float> stack(one * n);
        be.newton_schulz(Tensor(stack.data(), DType::F32, {n, rows, cols}),
                         Tensor(gf.data(), DType::F32, {n, rows, cols}), 5, bf16);
        EXPECT_EQ(stack, alone) << rows << "x" << cols << " bf16 " << bf16 << " threads " << threads;
      }
      be.set_threads(saved);
    }
    std::vector<double> alone(one * n), stack(one * n);
    be.set_threads(1);
    for (int i = 0; i < n; ++i)
      be.newton_schulz(Tensor(alone.data() + i * one, DType::F64, {rows, cols}),
                       Tensor(gd.data() + i * one, DType::F64, {rows, cols}), 5, false);
    be.set_threads(2);
    be.newton_schulz(Tensor(stack.data(), DType::F64, {n, rows, cols}),
                     Tensor(gd.data(), DType::F64, {n, rows, cols}), 5, false);
    be.set_threads(saved);
    EXPECT_EQ(stack, alone) << rows << "x" << cols << " fp64";
  }
}
