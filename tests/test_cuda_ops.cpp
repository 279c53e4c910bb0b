// The CUDA backend's model ops against the CPU backend in fp64, op by op, on random inputs:
// the GPU runs the bf16 policy and the CPU the same function in double on the same
// (bf16-rounded) values. Embedding, rms_norm, QK norm + rotary + value residual, the
// mixes and norms, ReLU², the scaled sums, the head's softcap + cross entropy, and the
// decode attention. Outputs are poisoned with NaN first, so an unwritten element fails;
// sizes like 31/32/33 on purpose; fused ops give the bits of the ops they replace.
#include "cuda_backend_fixture.h"

namespace speedrun {
namespace {

using namespace cuda_test;

// ---- embedding -------------------------------------------------------------------------------

TEST_F(CudaBackendTest, EmbeddingForwardCopiesRowsAndBackwardIsDeterministic) {
  for (int64_t C : {31, 32, 64}) {
    const int64_t V = 37, N = 1000;  // many repeats of each token
    auto [wte, wtec] = both(randn(V * C, uint64_t(C)), DType::BF16, {V, C});
    const std::vector<int32_t> tok = rand_tokens(N, int32_t(V), uint64_t(C));
    Tensor tg = g_->make(DType::I32, {N}), tc = c_->make(DType::I32, {N});
    gpu().upload(tg, tok.data());
    cpu_.upload(tc, tok.data());
    Tensor out = g_->poisoned(DType::BF16, {N, C}), outc = c_->make(DType::F64, {N, C});
    gpu().embedding_forward(out, tg, wte);
    cpu_.embedding_forward(outc, tc, wtec);
    EXPECT_EQ(rel_err(host(out), host(outc)), 0.0) << C;

    auto [dout, doutc] = both(randn(N * C, 9), DType::BF16, {N, C});
    const Vec start = randn(V * C, 10);
    auto [dw, dwc] = both(start, DType::F32, {V, C});
    gpu().embedding_backward(dw, tg, dout);
    cpu_.embedding_backward(dwc, tc, doutc);
    EXPECT_LE(rel_err(host(dw), host(dwc)), tol::kFloat * 30) << C;  // up to ~60 fp32 adds a row
    const auto first = raw(gpu(), dw);
    gpu().from_host_f64(dw, start);
    gpu().embedding_backward(dw, tg, dout);
    EXPECT_EQ(raw(gpu(), dw), first) << "embedding backward is not deterministic, C " << C;
  }
}

// A token of web text can fill ~4% of a batch (" the"); its run is one block's, whose rows
// are loaded many at a time. The sums must still be the CPU's: the starting gradient plus
// each occurrence's row in position order, one fp32 addition each, replayed here bit for
// bit. Runs of 1, 15-17 and 300 rows (the loads' batch is 16), 16-byte columns (C 768, 40)
// and single ones (C 31).
TEST_F(CudaBackendTest, EmbeddingBackwardAddsATokensRowsInPositionOrder) {
  for (int64_t C : {768, 40, 31}) {
    const int64_t V = 50, N = 1200;
    std::vector<int32_t> tok = rand_tokens(N, int32_t(V), uint64_t(C) + 1);
    std::mt19937_64 pick{uint64_t(C)};
    for (int i = 0; i < 300; ++i) tok[size_t(pick() % uint64_t(N))] = 3;  // ~300 of token 3
    // Tokens 7, 9 and 11 exactly 15, 16 and 17 times; 49 once, last in the sorted keys.
    for (int32_t& t : tok)
      if (t == 7 || t == 9 || t == 11 || t == 49) t = 12;
    for (int k = 0; k < 15 + 16 + 17; ++k)
      tok[size_t(5 + 19 * k)] = k < 15 ? 7 : k < 31 ? 9 : 11;
    tok[N - 1] = 49;
    Tensor tg = g_->make(DType::I32, {N});
    gpu().upload(tg, tok.data());
    Tensor dout = g_->from(randn(N * C, 21), DType::BF16, {N, C});
    Tensor dw = g_->from(randn(V * C, 22), DType::F32, {V, C});
    std::vector<uint16_t> d(size_t(N * C));
    std::vector<float> ref(size_t(V * C));
    gpu().download(d.data(), dout);
    gpu().download(ref.data(), dw);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        uint32_t bits = uint32_t(d[size_t(n * C + c)]) << 16;
        float x;
        std::memcpy(&x, &bits, 4);
        ref[size_t(tok[size_t(n)] * C + c)] += x;
      }
    gpu().embedding_backward(dw, tg, dout);
    std::vector<float> got(ref.size());
    gpu().download(got.data(), dw);
    int64_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) differ += std::memcmp(&got[i], &ref[i], 4) != 0;
    EXPECT_EQ(differ, 0) << "values of dwte differ from the position-order sums, C " << C;
  }
}

// ---- rms_norm --------------------------------------------------------------------------------

TEST_F(CudaBackendTest, RmsNormForwardAndBackward) {
  const double eps = 1.1920928955078125e-07;
  for (int64_t rows : {1, 33, 1025})
    for (int64_t dim : {31, 32, 33, 768}) {
      auto [x, xc] = both(randn(rows * dim, uint64_t(rows + dim), 2.0), DType::BF16, {rows, dim});
      Tensor y = g_->poisoned(DType::BF16, {rows, dim}), r = g_->poisoned(DType::F32, {rows});
      Tensor yc = c_->make(DType::F64, {rows, dim}), rc = c_->make(DType::F64, {rows});
      gpu().rms_norm_forward(y, r, x, eps);
      cpu_.rms_norm_forward(yc, rc, xc, eps);
      EXPECT_LE(rel_err(host(y), host(yc)), tol::kBf16) << rows << "x" << dim;
      EXPECT_LE(rel_err(host(r), host(rc)), tol::kFloat * 10) << rows << "x" << dim;
      // Backward, with the CPU fed the GPU's rstd (F32) so only the pass differs.
      auto [dy, dyc] = both(randn(rows * dim, 77), DType::BF16, {rows, dim});
      Tensor rc2 = c_->from(host(r), DType::F64, {rows});
      for (bool acc : {false, true}) {
        auto [dx, dxc] = both(randn(rows * dim, 78), DType::BF16, {rows, dim});
        if (!acc) gpu().fill(dx, NAN);
        gpu().rms_norm_backward(dx, dy, x, r, acc);
        cpu_.rms_norm_backward(dxc, dyc, xc, rc2, acc);
        EXPECT_LE(rel_err(host(dx), host(dxc)), tol::kBf16) << rows << "x" << dim << " acc " << acc;
      }
      // y may alias x.
      Tensor xa = g_->from(host(x), DType::BF16, {rows, dim});
      gpu().rms_norm_forward(xa, r, xa, eps);
      EXPECT_EQ(host(xa), host(y));
    }
}

// ---- QK norm + rotary ------------------------------------------------------------------------

TEST_F(CudaBackendTest, RotaryTablesMatchTheCpu) {
  for (int64_t D : {64, 128}) {
    const int64_t T = 300, half = D / 2;
    // Against the CPU's fp32 tables, computed the same way (fp32 frequencies and angles):
    // only the device's double cos/sin may round a last bit differently.
    Tensor c = g_->poisoned(DType::F32, {T, half}), s = g_->poisoned(DType::F32, {T, half});
    Tensor cc = c_->make(DType::F32, {T, half}), sc = c_->make(DType::F32, {T, half});
    gpu().rotary_tables(c, s, 10000.0);
    cpu_.rotary_tables(cc, sc, 10000.0);
    EXPECT_LE(rel_err(host(c), host(cc)), tol::kFloat);
    EXPECT_LE(rel_err(host(s), host(sc)), tol::kFloat);
    // Rows from `start` are the same bits as those rows of the full table.
    Tensor c1 = g_->poisoned(DType::F32, {7, half}), s1 = g_->poisoned(DType::F32, {7, half});
    gpu().rotary_tables_at(c1, s1, 10000.0, 123);
    const Vec full = host(c), part = host(c1);
    for (int64_t k = 0; k < 7 * half; ++k) ASSERT_EQ(part[size_t(k)], full[size_t(123 * half + k)]);
  }
}

TEST_F(CudaBackendTest, QkvForwardAndBackward) {
  // The stacked projection's heads against the fp64 CPU, with v1 another layer's and (layer
  // 0) qkv's own; (1 - lamb) and lamb get separate gradient scalars so that each dot shows.
  // Head dims for 1 to 4 pairs per lane (the kernels' template), halves not a multiple of 32.
  const double eps = 1.1920928955078125e-07;
  for (int64_t D : {2, 64, 96, 128, 192, 256})
    for (bool layer0 : {false, true}) {
      const int64_t T = 200, B = 2, N = B * T, H = 3, C = H * D, half = D / 2;  // T % 128 != 0
      Tensor cs = g_->make(DType::F32, {T, half}), sn = g_->make(DType::F32, {T, half});
      gpu().rotary_tables(cs, sn, 10000.0);
      Tensor csc = c_->from(host(cs), DType::F64, {T, half});
      Tensor snc = c_->from(host(sn), DType::F64, {T, half});
      auto [qkv, qkvc] = both(randn(N * 3 * C, uint64_t(D), 3.0), DType::BF16, {N, 3 * C});
      auto [other, otherc] = both(randn(N * 3 * C, uint64_t(D) + 1), DType::BF16, {N, 3 * C});
      const Tensor v1 = layer0 ? qkv : other, v1c = layer0 ? qkvc : otherc;
      auto [lv, lvc] = both(Vec{0.3}, DType::F32, {1});
      auto [ga, gac] = both(Vec{0.125}, DType::F32, {1});
      auto [gb, gbc] = both(Vec{-2.0}, DType::F32, {1});
      const Coef a = Coef::one_minus(lv.element(0), ga.element(0));
      const Coef b = Coef::param(lv.element(0), gb.element(0));
      const Coef ac = Coef::one_minus(lvc.element(0), gac.element(0));
      const Coef bc = Coef::param(lvc.element(0), gbc.element(0));
      Tensor q = g_->poisoned(DType::BF16, {N, C}), k = g_->poisoned(DType::BF16, {N, C});
      Tensor v = g_->poisoned(DType::BF16, {N, C}), r = g_->poisoned(DType::F32, {2, N * H});
      Tensor qc = c_->make(DType::F64, {N, C}), kc = c_->make(DType::F64, {N, C});
      Tensor vc = c_->make(DType::F64, {N, C}), rc = c_->make(DType::F64, {2, N * H});
      gpu().qkv_forward(q, k, v, r, qkv, v1, a, b, cs, sn, T, H, eps);
      cpu_.qkv_forward(qc, kc, vc, rc, qkvc, v1c, ac, bc, csc, snc, T, H, eps);
      const std::string at = "D " + std::to_string(D) + (layer0 ? ", layer 0" : ", layer 1");
      EXPECT_LE(rel_err(host(q), host(qc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(k), host(kc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(v), host(vc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(r), host(rc)), tol::kFloat * 10) << at;

      auto [dq, dqc] = both(randn(N * C, 5), DType::BF16, {N, C});
      auto [dk, dkc] = both(randn(N * C, 6), DType::BF16, {N, C});
      auto [dv, dvc] = both(randn(N * C, 7), DType::BF16, {N, C});
      const Vec dv1_start = randn(N * C, 8);
      auto [dv1, dv1c] = both(dv1_start, DType::BF16, {N, C});
      Tensor rc2 = c_->from(host(r), DType::F64, {2, N * H});
      Tensor dqkv = g_->poisoned(DType::BF16, {N, 3 * C}), dqkvc = c_->make(DType::F64, {N, 3 * C});
      gpu().qkv_backward(dqkv, dv1, dq, dk, dv, qkv, r, v1, a, b, cs, sn, T, H);
      cpu_.qkv_backward(dqkvc, dv1c, dqc, dkc, dvc, qkvc, rc2, v1c, ac, bc, csc, snc, T, H);
      EXPECT_LE(rel_err(host(dqkv), host(dqkvc)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(dv1), host(dv1c)), tol::kBf16) << at;
      EXPECT_LE(rel_err(host(ga), host(gac)), tol::kFloat * 10) << at;
      EXPECT_LE(rel_err(host(gb), host(gbc)), tol::kFloat * 10) << at;
      // Deterministic: the same bits from the same start.
      const auto bits = raw(gpu(), dqkv), bits_a = raw(gpu(), ga), bits_b = raw(gpu(), gb);
      gpu().from_host_f64(dv1, dv1_start);
      gpu().from_host_f64(ga, {0.125});
      gpu().from_host_f64(gb, {-2.0});
      gpu().qkv_backward(dqkv, dv1, dq, dk, dv, qkv, r, v1, a, b, cs, sn, T, H);
      EXPECT_EQ(raw(gpu(), dqkv), bits) << at;
      EXPECT_EQ(raw(gpu(), ga), bits_a) << at;
      EXPECT_EQ(raw(gpu(), gb), bits_b) << at;

      // The value residual is scaled_sum's, bit for bit (backend.h): v as scaled_sum_forward
      // forms it; dv_raw and dv1 as scaled_sum_backward adds into them (layer 0: a's term,
      // rounded, then b's, into dv1, which is also dv_raw).
      auto v_part = [&](const Tensor& t) {  // columns [2C, 3C) of a [N, 3C] tensor
        const Vec all = host(t);
        Vec part(size_t(N * C));
        for (int64_t n = 0; n < N; ++n)
          std::copy_n(all.begin() + n * 3 * C + 2 * C, C, part.begin() + n * C);
        return g_->from(part, DType::BF16, {N, C});
      };
      const Tensor vr = v_part(qkv), w1 = v_part(v1);
      Tensor vs = g_->poisoned(DType::BF16, {N, C});
      gpu().scaled_sum_forward(vs, vr, a, w1, b);
      EXPECT_EQ(raw(gpu(), vs), raw(gpu(), v)) << at;
      Tensor dv1s = g_->from(dv1_start, DType::BF16, {N, C});
      Tensor dvr = layer0 ? dv1s : g_->poisoned(DType::BF16, {N, C});
      gpu().scaled_sum_backward(dvr, layer0, dv1s, true, dv, vr, a, w1, b);
      EXPECT_EQ(raw(gpu(), dv1s), raw(gpu(), dv1)) << at;
      EXPECT_EQ(raw(gpu(), dvr), raw(gpu(), v_part(dqkv))) << at;
    }
}

TEST_F(CudaBackendTest, MixNormForwardAndBackward) {
  // Against the fp64 CPU, rows read 8 at a time (C 768) and one by one (C 33), dx over dres
  // as the model calls it, and the same bits from a second run.
  const double eps = 1.1920928955078125e-07;
  for (int64_t C : {768, 33}) {
    const int64_t R = 300;
    auto [x, xc] = both(randn(R * C, 1, 2.0), DType::BF16, {R, C});
    auto [y, yc] = both(randn(R * C, 2), DType::BF16, {R, C});
    auto [l0, l0c] = both(Vec{0.9}, DType::F32, {1});
    auto [l1, l1c] = both(Vec{0.2}, DType::F32, {1});
    auto [ga, gac] = both(Vec{0.125}, DType::F32, {1});
    auto [gb, gbc] = both(Vec{-2.0}, DType::F32, {1});
    const Coef a = Coef::param(l0.element(0), ga.element(0)), b = Coef::param(l1.element(0), gb.element(0));
    const Coef ac = Coef::param(l0c.element(0), gac.element(0));
    const Coef bc = Coef::param(l1c.element(0), gbc.element(0));
    Tensor m = g_->poisoned(DType::BF16, {R, C}), n = g_->poisoned(DType::BF16, {R, C});
    Tensor r = g_->poisoned(DType::F32, {R});
    Tensor mc = c_->make(DType::F64, {R, C}), nc = c_->make(DType::F64, {R, C});
    Tensor rc = c_->make(DType::F64, {R});
    gpu().mix_norm_forward(m, n, r, x, a, y, b, eps);
    cpu_.mix_norm_forward(mc, nc, rc, xc, ac, yc, bc, eps);
    EXPECT_LE(rel_err(host(m), host(mc)), tol::kBf16) << C;
    EXPECT_LE(rel_err(host(n), host(nc)), tol::kBf16) << C;
    EXPECT_LE(rel_err(host(r), host(rc)), tol::kBf16) << C;  // of the rounded xmix

    // The backward from the GPU's own xmix and rstd, on both sides.
    Tensor mc2 = c_->from(host(m), DType::F64, {R, C}), rc2 = c_->from(host(r), DType::F64, {R});
    auto [dn, dnc] = both(randn(R * C, 3), DType::BF16, {R, C});
    const Vec dres_start = randn(R * C, 4), dy_start = randn(R * C, 5);
    auto [dh, dhc] = both(dres_start, DType::BF16, {R, C});
    auto [dy, dyc] = both(dy_start, DType::BF16, {R, C});
    gpu().mix_norm_backward(dh, dy, dh, dn, m, r, x, a, y, b, Tensor{});
    cpu_.mix_norm_backward(dhc, dyc, dhc, dnc, mc2, rc2, xc, ac, yc, bc, Tensor{});
    EXPECT_LE(rel_err(host(dh), host(dhc)), tol::kBf16 * 4) << C;
    EXPECT_LE(rel_err(host(dy), host(dyc)), tol::kBf16 * 4) << C;
    EXPECT_LE(rel_err(host(ga), host(gac)), tol::kBf16 * 4) << C;
    EXPECT_LE(rel_err(host(gb), host(gbc)), tol::kBf16 * 4) << C;
    const auto bits = raw(gpu(), dh), bits_y = raw(gpu(), dy), bits_a = raw(gpu(), ga);
    gpu().from_host_f64(dh, dres_start);
    gpu().from_host_f64(dy, dy_start);
    gpu().from_host_f64(ga, {0.125});
    gpu().from_host_f64(gb, {-2.0});
    gpu().mix_norm_backward(dh, dy, dh, dn, m, r, x, a, y, b, Tensor{});
    EXPECT_EQ(raw(gpu(), dh), bits) << C;
    EXPECT_EQ(raw(gpu(), dy), bits_y) << C;
    EXPECT_EQ(raw(gpu(), ga), bits_a) << C;
  }
}

// The U-net skip folded in gives the values of the ops it replaces, run on the GPU:
// scaled_sum_forward into xin, then mix_norm_forward; backward mix_norm_backward from that
// xin, then scaled_sum_backward for the skip. The same bits but for the coefficients'
// gradients (other summation orders); rows 8 at a time and one by one; deterministic.
TEST_F(CudaBackendTest, SkipMixNormIsTheSeparateOps) {
  const double eps = 1.1920928955078125e-07;
  for (int64_t C : {768, 33}) {
    const int64_t R = 300;
    Tensor h = g_->from(randn(R * C, 1, 2.0), DType::BF16, {R, C});
    Tensor skip = g_->from(randn(R * C, 2), DType::BF16, {R, C});
    Tensor y = g_->from(randn(R * C, 3), DType::BF16, {R, C});
    Tensor lam = g_->from(Vec{0.9, 0.2, 0.7}, DType::F32, {3});
    const Vec g0 = {0.125, -2.0, 0.5};
    Tensor gf = g_->from(g0, DType::F32, {3}), gs = g_->from(g0, DType::F32, {3});
    auto coefs = [&](const Tensor& g) {
      return std::array<Coef, 3>{Coef::param(lam.element(0), g.element(0)),
                                 Coef::param(lam.element(1), g.element(1)),
                                 Coef::param(lam.element(2), g.element(2))};
    };
    const auto cf = coefs(gf), cs = coefs(gs);  // a, b, c: fused, separate
    Tensor m = g_->poisoned(DType::BF16, {R, C}), n = g_->poisoned(DType::BF16, {R, C});
    Tensor r = g_->poisoned(DType::F32, {R});
    Tensor xin = g_->poisoned(DType::BF16, {R, C}), ms = g_->poisoned(DType::BF16, {R, C});
    Tensor ns = g_->poisoned(DType::BF16, {R, C}), rs = g_->poisoned(DType::F32, {R});
    gpu().skip_mix_norm_forward(m, n, r, h, skip, cf[2], cf[0], y, cf[1], eps);
    gpu().scaled_sum_forward(xin, h, Coef::constant(1.0), skip, cs[2]);
    gpu().mix_norm_forward(ms, ns, rs, xin, cs[0], y, cs[1], eps);
    EXPECT_EQ(raw(gpu(), m), raw(gpu(), ms)) << C;
    EXPECT_EQ(raw(gpu(), n), raw(gpu(), ns)) << C;
    EXPECT_EQ(raw(gpu(), r), raw(gpu(), rs)) << C;

    const Vec dn_v = randn(R * C, 4), dres_v = randn(R * C, 5), dy_v = randn(R * C, 6);
    Tensor dn = g_->from(dn_v, DType::BF16, {R, C});
    Tensor dh = g_->from(dres_v, DType::BF16, {R, C}), dhs = g_->from(dres_v, DType::BF16, {R, C});
    Tensor dy = g_->from(dy_v, DType::BF16, {R, C}), dys = g_->from(dy_v, DType::BF16, {R, C});
    Tensor dskip = g_->poisoned(DType::BF16, {R, C}), dskips = g_->poisoned(DType::BF16, {R, C});
    gpu().skip_mix_norm_backward(dh, dskip, dy, dh, dn, m, r, h, skip, cf[2], cf[0], y, cf[1]);
    gpu().mix_norm_backward(dhs, dys, dhs, dn, ms, rs, xin, cs[0], y, cs[1], Tensor{});
    gpu().scaled_sum_backward(Tensor{}, false, dskips, false, dhs, Tensor{}, Coef::constant(1.0),
                              skip, cs[2]);
    EXPECT_EQ(raw(gpu(), dh), raw(gpu(), dhs)) << C;
    EXPECT_EQ(raw(gpu(), dskip), raw(gpu(), dskips)) << C;
    EXPECT_EQ(raw(gpu(), dy), raw(gpu(), dys)) << C;
    // The three dots, in another order: within fp32 summation (<g, xin> the same but for
    // the order; <dx, skip> over the same rounded dx).
    EXPECT_LE(rel_err(host(gf), host(gs)), tol::kFloat) << C;
    // Deterministic.
    const auto bits = raw(gpu(), gf);
    gpu().from_host_f64(gf, g0);
    gpu().from_host_f64(dh, dres_v);
    gpu().from_host_f64(dy, dy_v);
    gpu().skip_mix_norm_backward(dh, dskip, dy, dh, dn, m, r, h, skip, cf[2], cf[0], y, cf[1]);
    EXPECT_EQ(raw(gpu(), gf), bits) << C;
    EXPECT_EQ(raw(gpu(), dskip), raw(gpu(), dskips)) << C;
  }
}

// What the backward adds where it writes dx gives the separate ops' bits: mix_norm_backward
// with dadd is mix_norm_backward then axpy(dx, dadd, 1) (an encoder output's skip share);
// skip_mix_norm_backward with skip = h and no dskip is the op writing dskip then
// axpy(dx, dskip, 1) (the first decoder block); mix_norm_backward with x = y and no dx is
// the op writing dx then axpy(dy, dx, 1) (the first block). The coefficients' gradients
// too: the same dots in the same order. Rows 8 at a time and one by one.
TEST_F(CudaBackendTest, MixNormBackwardAddsWhereItWrites) {
  for (int64_t C : {768, 33}) {
    const int64_t R = 300;
    Tensor x = g_->from(randn(R * C, 11, 2.0), DType::BF16, {R, C});
    Tensor y = g_->from(randn(R * C, 12), DType::BF16, {R, C});
    Tensor m = g_->from(randn(R * C, 13, 3.0), DType::BF16, {R, C});
    Tensor r = g_->from(Vec(size_t(R), 0.4), DType::F32, {R});
    Tensor dn = g_->from(randn(R * C, 14), DType::BF16, {R, C});
    Tensor dadd = g_->from(randn(R * C, 15), DType::BF16, {R, C});
    Tensor lam = g_->from(Vec{0.9, 0.2, 0.7}, DType::F32, {3});
    const Vec g0 = {0.125, -2.0, 0.5}, dres_v = randn(R * C, 16), dy_v = randn(R * C, 17);
    struct Side {
      Tensor g, dh, dy;
      std::array<Coef, 3> c;  // a, b, c
    };
    auto side = [&] {
      Side s{g_->from(g0, DType::F32, {3}), g_->from(dres_v, DType::BF16, {R, C}),
             g_->from(dy_v, DType::BF16, {R, C}), {}};
      for (int k = 0; k < 3; ++k) s.c[size_t(k)] = Coef::param(lam.element(k), s.g.element(k));
      return s;
    };
    auto same = [&](const Side& f, const Side& s) {
      EXPECT_EQ(raw(gpu(), f.dh), raw(gpu(), s.dh)) << C;
      EXPECT_EQ(raw(gpu(), f.dy), raw(gpu(), s.dy)) << C;
      EXPECT_EQ(raw(gpu(), f.g), raw(gpu(), s.g)) << C;
    };
    Side f = side(), s = side();
    gpu().mix_norm_backward(f.dh, f.dy, f.dh, dn, m, r, x, f.c[0], y, f.c[1], dadd);
    gpu().mix_norm_backward(s.dh, s.dy, s.dh, dn, m, r, x, s.c[0], y, s.c[1], Tensor{});
    gpu().axpy(s.dh, dadd, 1.0);
    same(f, s);
    EXPECT_NE(raw(gpu(), f.dh), raw(gpu(), side().dh)) << C;  // it wrote

    // The skip is h itself.
    f = side(), s = side();
    Tensor dskip = g_->poisoned(DType::BF16, {R, C});
    gpu().skip_mix_norm_backward(f.dh, Tensor{}, f.dy, f.dh, dn, m, r, x, x, f.c[2], f.c[0], y,
                                 f.c[1]);
    gpu().skip_mix_norm_backward(s.dh, dskip, s.dy, s.dh, dn, m, r, x, x, s.c[2], s.c[0], y,
                                 s.c[1]);
    gpu().axpy(s.dh, dskip, 1.0);
    same(f, s);

    // x is y (the first block): no dx, its share into dy, as mix_norm_backward writing dx
    // then axpy(dy, dx, 1). dres (dh) is only read.
    f = side(), s = side();
    gpu().mix_norm_backward(Tensor{}, f.dy, f.dh, dn, m, r, y, f.c[0], y, f.c[1], Tensor{});
    gpu().mix_norm_backward(s.dh, s.dy, s.dh, dn, m, r, y, s.c[0], y, s.c[1], Tensor{});
    gpu().axpy(s.dy, s.dh, 1.0);
    EXPECT_EQ(raw(gpu(), f.dy), raw(gpu(), s.dy)) << C;
    EXPECT_EQ(raw(gpu(), f.g), raw(gpu(), s.g)) << C;
    EXPECT_EQ(raw(gpu(), f.dh), raw(gpu(), side().dh)) << C;  // not written
  }
  // Refusals: dadd over an output (dy); no dskip where skip is not h; no dx where x is not y.
  const int64_t R = 4, C = 8;
  Tensor a = g_->from(randn(R * C, 1), DType::BF16, {R, C});
  Tensor b = g_->from(randn(R * C, 2), DType::BF16, {R, C});
  Tensor d = g_->from(randn(R * C, 3), DType::BF16, {R, C});
  Tensor r = g_->from(Vec(size_t(R), 1.0), DType::F32, {R});
  const Coef one = Coef::constant(1.0);
  EXPECT_THROW(gpu().mix_norm_backward(d, b, d, a, a, r, a, one, a, one, b), Error);
  EXPECT_THROW(gpu().skip_mix_norm_backward(d, Tensor{}, b, d, a, a, r, a, b, one, one, a, one),
               Error);
  EXPECT_THROW(gpu().mix_norm_backward(Tensor{}, b, d, a, a, r, a, one, d, one, Tensor{}), Error);
}

// ---- elementwise -----------------------------------------------------------------------------

TEST_F(CudaBackendTest, ReluSquaredForwardAndBackward) {
  for (int64_t n : {31, 32, 33, 8000, 8001}) {
    auto [x, xc] = both(randn(n, uint64_t(n)), DType::BF16, {n});
    auto [dy, dyc] = both(randn(n, uint64_t(n) + 1), DType::BF16, {n});
    Tensor y = g_->poisoned(DType::BF16, {n}), dx = g_->poisoned(DType::BF16, {n});
    Tensor yc = c_->make(DType::F64, {n}), dxc = c_->make(DType::F64, {n});
    gpu().relu_squared_forward(y, x);
    gpu().relu_squared_backward(dx, dy, y);  // from the bf16 output: its rounding included
    cpu_.relu_squared_forward(yc, xc);
    cpu_.relu_squared_backward(dxc, dyc, yc);
    EXPECT_LE(rel_err(host(y), host(yc)), tol::kBf16) << n;
    EXPECT_LE(rel_err(host(dx), host(dxc)), tol::kBf16) << n;
    gpu().relu_squared_forward(x, x);  // in place, as the model forms it
    EXPECT_EQ(host(x), host(y)) << n;
  }
}

TEST_F(CudaBackendTest, ScaledSumForwardBackwardAndCoefficientGradients) {
  for (int64_t n : {31, 32, 33, 40000, 40001}) {
    auto [x, xc] = both(randn(n, 1), DType::BF16, {n});
    auto [y, yc] = both(randn(n, 2), DType::BF16, {n});
    auto [dout, doutc] = both(randn(n, 3), DType::BF16, {n});
    auto [lv, lvc] = both(Vec{0.3}, DType::F32, {1});
    auto [lg, lgc] = both(Vec{0.125}, DType::F32, {1});
    auto [sv, svc] = both(Vec{1.7}, DType::F32, {1});
    auto [sg, sgc] = both(Vec{-2.0}, DType::F32, {1});
    const Coef a = Coef::one_minus(lv.element(0), lg.element(0)), b = Coef::param(sv.element(0), sg.element(0));
    const Coef ac = Coef::one_minus(lvc.element(0), lgc.element(0)), bc = Coef::param(svc.element(0), sgc.element(0));
    Tensor out = g_->poisoned(DType::BF16, {n}), outc = c_->make(DType::F64, {n});
    gpu().scaled_sum_forward(out, x, a, y, b);
    cpu_.scaled_sum_forward(outc, xc, ac, yc, bc);
    EXPECT_LE(rel_err(host(out), host(outc)), tol::kBf16) << n;
    // dx assigned, dy accumulated, both coefficient gradients.
    auto [dy, dyc] = both(randn(n, 4), DType::BF16, {n});
    Tensor dx = g_->poisoned(DType::BF16, {n}), dxc = c_->make(DType::F64, {n});
    gpu().scaled_sum_backward(dx, false, dy, true, dout, x, a, y, b);
    cpu_.scaled_sum_backward(dxc, false, dyc, true, doutc, xc, ac, yc, bc);
    EXPECT_LE(rel_err(host(dx), host(dxc)), tol::kBf16) << n;
    EXPECT_LE(rel_err(host(dy), host(dyc)), tol::kBf16) << n;
    EXPECT_LE(rel_err(host(lg), host(lgc)), tol::kFloat * 10) << n;
    EXPECT_LE(rel_err(host(sg), host(sgc)), tol::kFloat * 10) << n;
    // Deterministic: the same gradient bits from the same start.
    const auto g1 = raw(gpu(), lg);
    gpu().from_host_f64(lg, {0.125});
    gpu().scaled_sum_backward(dx, false, dy, true, dout, x, a, y, b);
    EXPECT_EQ(raw(gpu(), lg), g1) << n;
    // Aliases backend.h allows: dx == dout (assign); dx == dy (both accumulate).
    Tensor d2 = g_->from(host(dout), DType::BF16, {n});
    gpu().scaled_sum_backward(d2, false, Tensor{}, false, d2, Tensor{}, a, Tensor{}, b);
    Tensor d2c = c_->from(host(doutc), DType::F64, {n});
    cpu_.scaled_sum_backward(d2c, false, Tensor{}, false, d2c, Tensor{}, ac, Tensor{}, bc);
    EXPECT_LE(rel_err(host(d2), host(d2c)), tol::kBf16) << n;
    // The value residual: (1 - lamb) and lamb share one gradient scalar.
    const Coef va = Coef::one_minus(lv.element(0), lg.element(0)), vb = Coef::param(lv.element(0), lg.element(0));
    const Coef vac = Coef::one_minus(lvc.element(0), lgc.element(0)), vbc = Coef::param(lvc.element(0), lgc.element(0));
    gpu().from_host_f64(lg, {0.125});
    cpu_.from_host_f64(lgc, {0.125});
    gpu().scaled_sum_backward(dx, false, dy, true, dout, x, va, y, vb);
    cpu_.scaled_sum_backward(dxc, false, dyc, true, doutc, xc, vac, yc, vbc);
    EXPECT_LE(rel_err(host(lg), host(lgc)), tol::kFloat * 10) << n;
    auto [acc, accc] = both(randn(n, 6), DType::BF16, {n});
    gpu().scaled_sum_backward(acc, true, acc, true, dout, x, a, x, b);
    cpu_.scaled_sum_backward(accc, true, accc, true, doutc, xc, ac, xc, bc);
    EXPECT_LE(rel_err(host(acc), host(accc)), tol::kBf16) << n;
  }
}

// ---- head: softcap + cross entropy ----------------------------------------------------------

TEST_F(CudaBackendTest, SoftcapCrossEntropyLossesAndGradients) {
  for (int64_t V : {31, 32, 33, 50304}) {
    const int64_t R = 5;
    auto [l, lc] = both(randn(R * V, uint64_t(V), 15.0), DType::BF16, {R, V});
    const std::vector<int32_t> tgt = rand_tokens(R, int32_t(V), uint64_t(V) + 1);
    Tensor tg = g_->make(DType::I32, {R}), tc = c_->make(DType::I32, {R});
    gpu().upload(tg, tgt.data());
    cpu_.upload(tc, tgt.data());
    Tensor loss = g_->poisoned(DType::F32, {R}), lossc = c_->make(DType::F64, {R});
    gpu().softcap_cross_entropy(l, loss, tg, 30.0, 0.5, true);
    cpu_.softcap_cross_entropy(lc, lossc, tc, 30.0, 0.5, true);
    EXPECT_LE(rel_err(host(loss), host(lossc)), tol::kFloat * 10) << V;
    EXPECT_LE(rel_err(host(l), host(lc)), tol::kBf16) << V;
  }
}

// Where a block can hold a row's V floats (Hopper), the backward keeps each logit's tanh in
// shared memory for the gradient's pass; elsewhere (an RTX 4090's 99 KB) it reads and
// softcaps the logits again. Both give the same bits: th is kept as computed, and t = th k
// is how the softcap forms t. Vector (V % 8 == 0) and single loads.
// The emulator only (its GPU profiles give a GPU with less shared memory): a GPU run skips
// no test.
#ifdef SPEEDRUN_CUDA_EMULATED
TEST_F(CudaBackendTest, SoftcapCrossEntropyKeepingTheRowGivesTheStreamingBits) {
  for (int64_t V : {25600, 25601}) {  // 102 KB of floats: more than an RTX 4090's block holds
    const int64_t R = 3;
    const Vec logits = randn(R * V, uint64_t(V), 15.0);
    const std::vector<int32_t> tgt = rand_tokens(R, int32_t(V), uint64_t(V) + 1);
    auto run = [&](Backend& be) {
      Pool pool(be);
      Tensor l = pool.from(logits, DType::BF16, {R, V});
      Tensor t = pool.make(DType::I32, {R});
      be.upload(t, tgt.data());
      Tensor loss = pool.poisoned(DType::F32, {R});
      be.softcap_cross_entropy(l, loss, t, 30.0, 0.5, true);
      return std::make_pair(raw(be, l), raw(be, loss));
    };
    // A backend of each GPU, made in turn: a kernel's shared-memory allowance is the
    // process's (the emulator has one GPU at a time), set by each backend as it starts.
    BackendOptions o;
    o.device = DeviceChoice::CUDA;
    const auto kept = run(*make_backend(o));
    const cuda::emu::ScopedGpuProfile as_rtx4090("rtx4090");
    ASSERT_TRUE(as_rtx4090.ok());
    const auto streamed = run(*make_backend(o));
    EXPECT_EQ(kept.first, streamed.first) << "gradients, V " << V;
    EXPECT_EQ(kept.second, streamed.second) << "losses, V " << V;
  }
}
#endif

// A vocabulary that is not a multiple of 8 runs, on the head's 2-byte paths, and says so
// once, with the padding that would give it the 16-byte ones.
TEST_F(CudaBackendTest, AVocabularyNotAMultipleOf8IsNotedOnce) {
  auto head = [&](int64_t V) {
    const int64_t R = 2;
    Tensor l = g_->from(randn(R * V, uint64_t(V), 5.0), DType::BF16, {R, V});
    Tensor t = g_->make(DType::I32, {R});
    const std::vector<int32_t> tgt = {0, int32_t(V - 1)};
    gpu().upload(t, tgt.data());
    Tensor loss = g_->poisoned(DType::F32, {R});
    gpu().softcap_cross_entropy(l, loss, t, 30.0, 1.0, true);
    for (double x : host(loss)) EXPECT_TRUE(std::isfinite(x)) << V;
  };
  testing::internal::CaptureStderr();
  head(32);
  head(33);
  head(33);
  head(57);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("a vocabulary of 33 ids is not a multiple of 8"), std::string::npos) << err;
  EXPECT_NE(err.find("--vocab 40 pads it"), std::string::npos) << err;
  size_t notes = 0;
  for (size_t at = err.find("note: a vocabulary"); at != std::string::npos;
       at = err.find("note: a vocabulary", at + 1))
    ++notes;
  EXPECT_EQ(notes, 1u) << err;
}

// ---- decoding ----------------------------------------------------------------------------------

TEST_F(CudaBackendTest, AttentionDecodeOverCacheRowsInOrder) {
  for (int64_t D : {64, 128}) {
    const int64_t H = 2, C = H * D, S = 300;
    auto [q, qc] = both(randn(C, 1), DType::BF16, {1, C});
    auto [k, kc] = both(randn(S * C, 2), DType::BF16, {S, C});
    auto [v, vc] = both(randn(S * C, 3), DType::BF16, {S, C});
    for (int64_t n : {1, 31, 257}) {
      std::vector<int32_t> rows;
      for (int64_t j = 0; j < n; ++j) rows.push_back(int32_t((j * 7 + 11) % S));  // a ring's order
      Tensor out = g_->poisoned(DType::BF16, {1, C}), outc = c_->make(DType::F64, {1, C});
      const double scale = 1.0 / std::sqrt(double(D));
      gpu().attention_decode(out, q, k, v, rows, H, scale);
      cpu_.attention_decode(outc, qc, kc, vc, rows, H, scale);
      EXPECT_LE(rel_err(host(out), host(outc)), tol::kBf16) << "D " << D << " rows " << n;
    }
  }
}

}  // namespace
}  // namespace speedrun
