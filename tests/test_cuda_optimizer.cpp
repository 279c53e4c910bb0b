// The CUDA backend's optimizer ops: Adam, Muon's momentum and update, axpy against fp64; the
// multi-tensor launches against the single ops bit for bit; the batched bf16 Newton-Schulz
// against the CPU's bf16 emulation, and its layouts (elements, 16-byte vectors, tiles)
// against each other bit for bit.
#include "cuda_backend_fixture.h"

namespace speedrun {
namespace {

using namespace cuda_test;

// ---- optimizers ------------------------------------------------------------------------------

TEST_F(CudaBackendTest, AdamMomentumAxpyMatchFp64) {
  for (int64_t n : {31, 32, 33, 100001}) {
    auto [p, pc] = both(randn(n, 1), DType::F32, {n});
    auto [m, mc] = both(randn(n, 2, 0.01), DType::F32, {n});
    auto [v, vc] = both(randn(n, 3, 0.001, 0.002), DType::F32, {n});
    gpu().fill(v, 1e-4);
    cpu_.fill(vc, double(float(1e-4)));
    for (int64_t step = 1; step <= 3; ++step) {
      auto [g, gc] = both(randn(n, uint64_t(step) + 10, 0.01), DType::F32, {n});
      AdamArgs a;
      a.lr = 0.04;
      a.step = step;
      gpu().adam_step(p, g, m, v, a);
      cpu_.adam_step(pc, gc, mc, vc, a);
    }
    EXPECT_LE(rel_err(host(p), host(pc)), tol::kFloat) << n;
    // The moments are ~1e-2 and ~1e-4: measured against their own size, not against 1.
    EXPECT_LE(rel_to_max(host(m), host(mc)), tol::kFloat) << n;
    EXPECT_LE(rel_to_max(host(v), host(vc)), tol::kFloat) << n;

    auto [g, gc] = both(randn(n, 20), DType::F32, {n});
    auto [buf, bufc] = both(randn(n, 21), DType::F32, {n});
    gpu().muon_momentum(g, buf, g, 0.9);  // out aliases g, as the optimizer calls it
    cpu_.muon_momentum(gc, bufc, gc, 0.9);
    EXPECT_LE(rel_err(host(g), host(gc)), tol::kFloat) << n;
    EXPECT_LE(rel_err(host(buf), host(bufc)), tol::kFloat) << n;
    gpu().axpy(p, g, -0.05);
    cpu_.axpy(pc, gc, -0.05);
    EXPECT_LE(rel_err(host(p), host(pc)), tol::kFloat) << n;
    // The model's use: activation gradients in bf16.
    auto [h, hc] = both(randn(n, 30), DType::BF16, {n});
    auto [d, dc] = both(randn(n, 31), DType::BF16, {n});
    gpu().axpy(h, d, 1.0);
    cpu_.axpy(hc, dc, 1.0);
    EXPECT_LE(rel_err(host(h), host(hc)), tol::kBf16) << n;
  }
}

// The many-tensor ops give the bits of the single-tensor ops they stand for (backend.h):
// the same arithmetic per element, the same partial sums for the Newton-Schulz norms, over
// more tensors than one launch takes (cuda::kMaxLaunchTensors).
TEST_F(CudaBackendTest, MultiTensorOptimizerOpsGiveTheSingleOpsBits) {
  std::vector<int64_t> sizes;
  // Tensors of 8k elements at aligned addresses go 8 elements at a time (TensorTable::vec),
  // the others one by one; of each kind, tensors longer than a launch's grid
  // (kMaxElementwiseBlocks x 256 items), so that their blocks loop.
  for (int k = 0; k < 52; ++k)
    sizes.push_back(k % 25 == 10 ? (1 << 20) + (k < 25 ? 3 : 0)
                    : k % 9 == 4 ? (k % 2 ? 100003 : 100000)
                                 : 1 + (k * 53) % 700);
  ASSERT_GT(int(sizes.size()), cuda::kMaxLaunchTensors);
  // One tensor of 8k elements whose parameter starts 4 bytes past an alignment: the
  // element path, beside its aligned neighbours in the same launch.
  const size_t unaligned = 22;
  ASSERT_EQ(sizes[unaligned] % 8, 0);
  std::vector<AdamTensor> fused, single;
  std::vector<MuonApply> afused, asingle;
  uint64_t seed = 100;
  for (int64_t n : sizes) {
    AdamTensor t[2];
    MuonApply u[2];
    const Vec p = randn(n, ++seed), g = randn(n, ++seed, 0.01), m = randn(n, ++seed, 0.01),
              up = randn(n, ++seed);
    Vec v = randn(n, ++seed, 0.001);
    for (double& x : v) x = x * x;  // second moments are >= 0
    for (int r = 0; r < 2; ++r) {
      if (fused.size() == unaligned) {
        Vec wider = p;
        wider.insert(wider.begin(), 7.0);
        t[r].p = g_->from(wider, DType::F32, {n + 1}).slice(1, n + 1);
        u[r].p = g_->from(wider, DType::F32, {n + 1}).slice(1, n + 1);
      } else {
        t[r].p = g_->from(p, DType::F32, {n});
        u[r].p = g_->from(p, DType::F32, {n});
      }
      t[r].g = g_->from(g, DType::F32, {n});
      t[r].m = g_->from(m, DType::F32, {n});
      t[r].v = g_->from(v, DType::F32, {n});
      if (fused.size() % 2 == 0) t[r].copy = g_->poisoned(DType::BF16, {n});
      t[r].lr = 0.001 * double(fused.size() + 1);
      u[r].update = g_->from(up, DType::F32, {n});
      if (afused.size() % 3) u[r].copy = g_->poisoned(DType::BF16, {n});
      u[r].alpha = -0.01 * double(afused.size() + 1);
    }
    // Every fourth update is a bf16 copy (another rank's, from the exchange): the single
    // ops get its exact F32 widening.
    if (afused.size() % 4 == 1) {
      u[0].update = g_->from(up, DType::BF16, {n});
      gpu().convert(u[1].update, u[0].update);
    }
    fused.push_back(t[0]);
    single.push_back(t[1]);
    afused.push_back(u[0]);
    asingle.push_back(u[1]);
  }
  for (int64_t step = 1; step <= 2; ++step) {
    AdamArgs a;
    a.step = step;
    gpu().adam_steps(fused, a);
    for (const AdamTensor& t : single) {
      a.lr = t.lr;
      gpu().adam_step(t.p, t.g, t.m, t.v, a);
      if (!t.copy.empty()) gpu().convert(t.copy, t.p);
    }
  }
  gpu().muon_apply(afused);
  for (const MuonApply& u : asingle) {
    gpu().axpy(u.p, u.update, u.alpha);
    if (!u.copy.empty()) gpu().convert(u.copy, u.p);
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    EXPECT_EQ(raw(gpu(), fused[k].p), raw(gpu(), single[k].p)) << "adam p " << k;
    EXPECT_EQ(raw(gpu(), fused[k].m), raw(gpu(), single[k].m)) << "adam m " << k;
    EXPECT_EQ(raw(gpu(), fused[k].v), raw(gpu(), single[k].v)) << "adam v " << k;
    if (!fused[k].copy.empty()) {
      EXPECT_EQ(raw(gpu(), fused[k].copy), raw(gpu(), single[k].copy)) << "adam copy " << k;
    }
    EXPECT_EQ(raw(gpu(), afused[k].p), raw(gpu(), asingle[k].p)) << "apply p " << k;
    if (!afused[k].copy.empty()) {
      EXPECT_EQ(raw(gpu(), afused[k].copy), raw(gpu(), asingle[k].copy)) << "apply copy " << k;
    }
  }

  // muon_stack against muon_momentum into a stack, then newton_schulz; a stack of 50 spans
  // two launches of the fused load.
  ASSERT_FALSE(gpu().muon_stack_needs_input());
  // Layouts (plan.h NsLayout): vectors, elements (transposed, not whole tiles), vectors,
  // tiles.
  for (const Shape& sh :
       {Shape{50, 24, 40}, Shape{3, 96, 32}, Shape{1, 64, 64}, Shape{2, 192, 128}}) {
    const int64_t n = sh[0], size = sh[1] * sh[2];
    std::vector<Tensor> bufs[2], grads[2];
    std::vector<Vec> mbuf0, mgrad0;
    for (int64_t k = 0; k < n; ++k) {
      const Vec b = randn(size, ++seed, 0.02), g = randn(size, ++seed, 0.02);
      mbuf0.push_back(b);
      mgrad0.push_back(g);
      for (int r = 0; r < 2; ++r) {
        bufs[r].push_back(g_->from(b, DType::F32, {sh[1], sh[2]}));
        grads[r].push_back(g_->from(g, DType::F32, {sh[1], sh[2]}));
      }
    }
    Tensor X = g_->poisoned(DType::F32, sh), Xs = g_->poisoned(DType::F32, sh);
    Tensor input = g_->poisoned(DType::F32, sh);
    gpu().muon_stack(X, Tensor{}, bufs[0], grads[0], 0.95, 5, true);
    for (int64_t k = 0; k < n; ++k)
      gpu().muon_momentum(input.slice(k, k + 1).view({sh[1], sh[2]}), bufs[1][size_t(k)],
                          grads[1][size_t(k)], 0.95);
    gpu().newton_schulz(Xs, input, 5, true);
    EXPECT_EQ(raw(gpu(), X), raw(gpu(), Xs)) << X.shape_str();
    // Into a BF16 stack (the optimizer's update buffer on a GPU): the same values, from
    // buffers as they were (the momentum is applied again to copies of them).
    {
      std::vector<Tensor> b16, g16;
      for (int64_t k = 0; k < n; ++k) {
        b16.push_back(g_->from(mbuf0[size_t(k)], DType::F32, {sh[1], sh[2]}));
        g16.push_back(g_->from(mgrad0[size_t(k)], DType::F32, {sh[1], sh[2]}));
      }
      Tensor Y = g_->poisoned(DType::BF16, sh);
      gpu().muon_stack(Y, Tensor{}, b16, g16, 0.95, 5, true);
      EXPECT_TRUE(host(Y) == host(X)) << X.shape_str() << " into BF16";
    }
    for (int64_t k = 0; k < n; ++k) {
      EXPECT_EQ(raw(gpu(), bufs[0][size_t(k)]), raw(gpu(), bufs[1][size_t(k)])) << k;
      EXPECT_EQ(raw(gpu(), grads[0][size_t(k)]), raw(gpu(), grads[1][size_t(k)])) << k;
    }
  }

  // muon_momenta (another rank's matrices) against muon_momentum's buffer update, over the
  // 52 sizes above (two launches, two tensors whose blocks loop).
  std::vector<Tensor> mbufs[2], mgrads;
  for (int64_t n : sizes) {
    const Vec b = randn(n, ++seed, 0.02), g = randn(n, ++seed, 0.02);
    for (int r = 0; r < 2; ++r) mbufs[r].push_back(g_->from(b, DType::F32, {n}));
    mgrads.push_back(g_->from(g, DType::F32, {n}));
  }
  gpu().muon_momenta(mbufs[0], mgrads, 0.95);
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor out = g_->poisoned(DType::F32, {sizes[k]});
    gpu().muon_momentum(out, mbufs[1][k], mgrads[k], 0.95);
    EXPECT_EQ(raw(gpu(), mbufs[0][k]), raw(gpu(), mbufs[1][k])) << "momenta buf " << k;
  }
}

TEST_F(CudaBackendTest, NewtonSchulzInBf16MatchesTheCpusBf16Emulation) {
  const Shape shapes[] = {{31, 33}, {33, 31}, {64, 64}, {4, 64, 64}, {3, 96, 32}, {2, 32, 96}};
  for (const Shape& s : shapes) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    auto [G, Gc] = both(randn(n, uint64_t(n)), DType::F32, s);
    Tensor X = g_->poisoned(DType::F32, s), Xc = c_->make(DType::F64, s);
    gpu().newton_schulz(X, G, 5, true);
    cpu_.newton_schulz(Xc, Gc, 5, true);
    // Both store every intermediate in bf16; their fp32/fp64 accumulations round a few
    // elements the other way, and five iterations carry that along.
    EXPECT_LE(rel_err(host(X), host(Xc)), tol::kBf16Iterated) << G.shape_str();
    // Deterministic.
    const auto first = raw(gpu(), X);
    gpu().newton_schulz(X, G, 5, true);
    EXPECT_EQ(raw(gpu(), X), first);
    // bf16 values in the F32 output, as newton_schulz_is_bf16() promises: distributed Muon
    // exchanges a bf16 copy of them and counts on it being exact.
    ASSERT_TRUE(gpu().newton_schulz_is_bf16());
    int wide = 0;
    for (double v : host(X)) wide += double(round_bf16(float(v))) != v;
    EXPECT_EQ(wide, 0) << G.shape_str() << ": values a bf16 copy would change";
  }
}

// The three ways into and out of the bf16 work matrix (plan.h NsLayout) give the same
// values: a stack whose work matrices are transposed through shared-memory tiles, the same
// stack read from an unaligned copy (element by element, the transpose a scatter), and the
// stack of its transposes (not transposed, 16-byte vectors) transposed back. Their norms add
// the same squares in other orders (in double, rounded to bf16 after the square root), so
// the divisors agree. After no iteration X is bf16(bf16(G) / divisor), checked on the host.
TEST_F(CudaBackendTest, NewtonSchulzLayoutsGiveTheSameBits) {
  const int64_t n = 2, rows = 192, cols = 128, size = rows * cols;
  const Vec g = randn(n * size, 71, 0.02);
  Vec gt(g.size()), wider(g.size() + 1, 0.5);
  for (int64_t m = 0; m < n; ++m)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        gt[size_t(m * size + c * rows + r)] = g[size_t(m * size + r * cols + c)];
  std::copy(g.begin(), g.end(), wider.begin() + 1);
  ASSERT_EQ(cuda::newton_schulz_plan(n, rows, cols, true).layout, cuda::NsLayout::kTiles);
  ASSERT_EQ(cuda::newton_schulz_plan(n, cols, rows, true).layout, cuda::NsLayout::kVectors);
  ASSERT_EQ(cuda::newton_schulz_plan(n, rows, cols, false).layout, cuda::NsLayout::kElements);
  const Tensor G = g_->from(g, DType::F32, {n, rows, cols});
  const Tensor GT = g_->from(gt, DType::F32, {n, cols, rows});
  const Tensor Gu =
      g_->from(wider, DType::F32, {n * size + 1}).slice(1, n * size + 1).view({n, rows, cols});
  for (int steps : {0, 1, 5}) {
    Tensor X = g_->poisoned(DType::F32, {n, rows, cols});
    Tensor Xu = g_->poisoned(DType::F32, {n, rows, cols});
    Tensor XT = g_->poisoned(DType::F32, {n, cols, rows});
    gpu().newton_schulz(X, G, steps, true);
    gpu().newton_schulz(Xu, Gu, steps, true);
    gpu().newton_schulz(XT, GT, steps, true);
    const Vec x = host(X), xu = host(Xu), xt = host(XT);
    int64_t differ_u = 0, differ_t = 0;
    for (int64_t m = 0; m < n; ++m)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = size_t(m * size + r * cols + c);
          differ_u += xu[i] != x[i];
          differ_t += xt[size_t(m * size + c * rows + r)] != x[i];
        }
    EXPECT_EQ(differ_u, 0) << "tiles against elements, " << steps << " steps";
    EXPECT_EQ(differ_t, 0) << "tiles against the transposes' vectors, " << steps << " steps";
    // Into BF16 stacks (newton_schulz_is_bf16): the same values, stored by each layout, or
    // (not transposed, after an iteration) written by the last GEMM itself.
    ASSERT_TRUE(gpu().newton_schulz_is_bf16());
    for (const auto& [Gin, want] : {std::pair<const Tensor*, const Vec*>{&G, &x}, {&Gu, &xu}, {&GT, &xt}}) {
      Tensor Y = g_->poisoned(DType::BF16, Gin->shape == G.shape ? Shape{n, rows, cols}
                                                                 : Shape{n, cols, rows});
      gpu().newton_schulz(Y, *Gin, steps, true);
      EXPECT_TRUE(host(Y) == *want) << Y.shape_str() << " in BF16, " << steps << " steps";
    }
    if (steps != 0) continue;
    for (int64_t m = 0; m < n; ++m) {
      double sumsq = 0;
      for (int64_t i = 0; i < size; ++i) {
        const double b = cuda::math::round_bf16(float(g[size_t(m * size + i)]));
        sumsq += b * b;
      }
      const float d = cuda::math::ns_divisor(sumsq);
      int64_t wrong = 0;
      for (int64_t i = 0; i < size; ++i) {
        const float b = cuda::math::round_bf16(float(g[size_t(m * size + i)]));
        wrong += x[size_t(m * size + i)] != double(cuda::math::round_bf16(b / d));
      }
      EXPECT_EQ(wrong, 0) << "matrix " << m << ": bf16(bf16(G) / " << d << ")";
    }
  }
}

}  // namespace
}  // namespace speedrun
