// The CUDA backend's arithmetic and planning, checked on the CPU without a GPU or the CUDA
// runtime: the __host__ __device__ functions of src/backend/cuda/math/ (compiled here by
// g++) against the CPU backend's kernels (src/backend/cpu/) or fp64 loops, and the
// host-side plans (GPU choice, launch shapes for the record's config, GEMM layouts,
// scratch layouts, messages). What only a GPU can show is in test_cuda_{backend,ops,optimizer,model}.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "backend/cpu/adam.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/head_norm_rotary.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/muon.h"
#include "backend/cpu/relu_squared.h"
#include "backend/cpu/rms_norm.h"
#include "backend/cuda/math/adam.h"
#include "backend/cuda/math/bf16.h"
#include "backend/cuda/math/cross_entropy.h"
#include "backend/cuda/math/elementwise.h"
#include "backend/cuda/math/exp2.h"
#include "backend/cuda/math/muon.h"
#include "backend/cuda/math/reduce.h"
#include "backend/cuda/math/rms_norm.h"
#include "backend/cuda/math/rotary.h"
#include "core/arena.h"
#include "core/bf16.h"
#include "core/error.h"
#include "fixtures.h"
#include "tolerances.h"

#ifdef SPEEDRUN_HAVE_NCCL
#include "dist/nccl/nccl_comm.h"
#endif
#ifdef SPEEDRUN_HAVE_CUDA
#include <cublasLt.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "backend/cuda/cublaslt_loader.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemm_plan.h"
#include "backend/cuda/gemm_record.h"
#include "backend/cuda/plan.h"
#ifdef SPEEDRUN_HAVE_NCCL
#include <nccl.h>

#include "dist/nccl/nccl_comm.h"
#endif
#endif

namespace speedrun {
namespace {

namespace m = cuda::math;
using Vec = std::vector<double>;
using FVec = std::vector<float>;

FVec randf(int64_t n, uint64_t seed, double scale = 1.0, double mean = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, scale);
  FVec v(static_cast<size_t>(n));
  for (auto& x : v) x = float(d(rng));
  return v;
}

Vec to_d(const FVec& v) { return Vec(v.begin(), v.end()); }

using tol::rel_err;  // tests/tolerances.h's measure

const int64_t kDims[] = {31, 32, 33, 768};

// ---- bf16 ------------------------------------------------------------------------------------

TEST(CudaMath, Bf16RoundingMatchesTheCpuBitForBit) {
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 3.14159f, 1e-40f, -1e-40f, 65504.0f,
                           std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::denorm_min()};
  // Exact ties between two bf16 values: both directions of round-to-even.
  for (uint32_t hi : {0x3f80u, 0x3f81u, 0xbf80u, 0xbf81u, 0x0001u})
    xs.push_back(m::bits_float((hi << 16) | 0x8000u));
  std::mt19937 rng(1);
  for (int i = 0; i < 200000; ++i) xs.push_back(m::bits_float(rng()));
  for (float x : xs) {
    ASSERT_EQ(m::f32_to_bf16(x), bf16_bits(x)) << x;
    const uint16_t b = m::f32_to_bf16(x);
    if (!std::isnan(x)) ASSERT_EQ(m::float_bits(m::bf16_to_f32(b)), m::float_bits(round_bf16(x)));
    else ASSERT_TRUE(std::isnan(m::bf16_to_f32(b)));
  }
  // F64 goes through F32 like the CPU's convert (double rounding included).
  for (double d : {1.0 + 1e-12, 1.00390625 + 1e-17, -2.5e-300, 1e300}) {
    EXPECT_EQ(m::f64_to_bf16(d), bf16_bits(float(d))) << d;
  }
  const uint32_t w = m::pack_bf16x2(1.5f, -2.25f);
  EXPECT_EQ(m::unpack_lo(w), 1.5f);
  EXPECT_EQ(m::unpack_hi(w), -2.25f);
}

// ---- the deterministic reduction order --------------------------------------------------------

TEST(CudaMath, ReductionPlanDependsOnTheSizeAloneAndIsCapped) {
  EXPECT_EQ(m::reduce_blocks(0), 1);
  EXPECT_EQ(m::reduce_blocks(1), 1);
  EXPECT_EQ(m::reduce_blocks(m::kReduceThreads * m::kItemsPerThread), 1);
  EXPECT_EQ(m::reduce_blocks(m::kReduceThreads * m::kItemsPerThread + 1), 2);
  EXPECT_EQ(m::reduce_blocks(int64_t(65536) * 768), m::kMaxPartials);  // the record's [T, C]
  for (int64_t n = 1; n < 5000000; n = n * 3 + 1) {
    EXPECT_GE(m::reduce_blocks(n), 1);
    EXPECT_LE(m::reduce_blocks(n), m::kMaxPartials);
    EXPECT_LE(m::reduce_blocks(n), m::reduce_blocks(n + 1));
  }
}

TEST(CudaMath, TwoStageSumVisitsEveryItemOnceAndIsAccurate) {
  for (int64_t n : {1, 31, 32, 33, 4095, 4097, 300001}) {
    std::vector<int> seen(static_cast<size_t>(n), 0);
    m::two_stage_sum(n, [&](double acc, int64_t i) {
      ++seen[size_t(i)];
      return acc;
    });
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; })) << n;
    const FVec x = randf(n, uint64_t(n), 1.0, 0.3);
    long double exact = 0;
    for (float v : x) exact += v;
    const double got = m::two_stage_sum(n, [&](double acc, int64_t i) { return acc + x[size_t(i)]; });
    EXPECT_NEAR(got, double(exact), 1e-12 * std::max(1.0, std::fabs(double(exact)))) << n;
  }
}

TEST(CudaMath, WarpTreeIsTheShuffleDownOrder) {
  // Lane 0 after v += shfl_down(v, o), o = 16..1: ((v0+v16)+(v8+v24)) + ... A value that
  // cancels only in that order shows the order is the one replayed.
  double u[32] = {};
  u[0] = 1e16;
  u[1] = 1.0;
  u[16] = -1e16;
  u[17] = 1.0;
  // Tree: (u0+u16) = 0, (u1+u17) = 2 -> 2; left to right: ((1e16 + 1) - 1e16) + 1 = 1.
  EXPECT_EQ(m::warp_tree(u), 2.0);
  double t[m::kReduceThreads];
  for (int i = 0; i < m::kReduceThreads; ++i) t[i] = i;
  EXPECT_EQ(m::block_tree(t), double(m::kReduceThreads) * (m::kReduceThreads - 1) / 2);
}

// ---- rms_norm --------------------------------------------------------------------------------

TEST(CudaMath, RmsNormRowMatchesTheCpuBackend) {
  const double eps = 1.1920928955078125e-07;
  for (int64_t dim : kDims) {
    const FVec x = randf(dim, uint64_t(dim), 2.0), dy = randf(dim, uint64_t(dim) + 7);
    FVec y(static_cast<size_t>(dim)), dx(static_cast<size_t>(dim));
    float rstd = 0;
    m::rms_norm_row_forward(y.data(), &rstd, x.data(), dim, float(eps));
    m::rms_norm_row_backward(dx.data(), dy.data(), x.data(), rstd, dim);
    Vec xd = to_d(x), dyd = to_d(dy), yr(static_cast<size_t>(dim)), dxr(static_cast<size_t>(dim)), rr(1);
    cpu::rms_norm_forward<double>(yr.data(), rr.data(), xd.data(), 1, dim, eps);
    cpu::rms_norm_backward<double>(dxr.data(), dyd.data(), xd.data(), rr.data(), 1, dim, false);
    EXPECT_LE(rel_err(y, yr), tol::kFloat) << dim;
    EXPECT_LE(rel_err(dx, dxr), tol::kFloat) << dim;
    EXPECT_LE(std::fabs(rstd - rr[0]) / rr[0], tol::kFloat) << dim;
  }
}

// ---- rotary ----------------------------------------------------------------------------------

TEST(CudaMath, RotaryTablesMatchTheCpuBitForBit) {
  for (int64_t D : {64, 128}) {
    const int64_t T = 257, half = D / 2, start = 1000;
    FVec c(static_cast<size_t>(T * half)), s(static_cast<size_t>(T * half));
    cpu::rotary_tables<float>(c.data(), s.data(), T, D, 10000.0, start);
    for (int64_t j = 0; j < half; ++j) {
      const float inv = m::rotary_inv_freq(j, D, 10000.0);
      for (int64_t t = 0; t < T; ++t) {
        const m::CosSin cs = m::rotary_entry(start + t, inv);
        ASSERT_EQ(cs.c, c[size_t(t * half + j)]) << "D " << D << " t " << t << " j " << j;
        ASSERT_EQ(cs.s, s[size_t(t * half + j)]) << "D " << D << " t " << t << " j " << j;
      }
    }
  }
}

// The kernel's per-(row, head) work written with the shared functions, in order.
void head_forward(float* y, float* rstd, const float* x, const float* c, const float* s,
                  int64_t D, float eps) {
  const int64_t half = D / 2;
  float ss = 0;
  for (int64_t i = 0; i < D; ++i) ss += x[i] * x[i];
  *rstd = m::rms_rstd(ss, D, eps);
  for (int64_t j = 0; j < half; ++j)
    m::rotate(x[j] * *rstd, x[j + half] * *rstd, {c[j], s[j]}, y[j], y[j + half]);
}

void head_backward(float* dx, const float* dy, const float* x, float rstd, const float* c,
                   const float* s, int64_t D) {
  const int64_t half = D / 2;
  FVec g(static_cast<size_t>(D));
  float dot = 0;
  for (int64_t j = 0; j < half; ++j) {
    m::rotate_back(dy[j], dy[j + half], {c[j], s[j]}, g[size_t(j)], g[size_t(j + half)]);
    dot += g[size_t(j)] * x[j] + g[size_t(j + half)] * x[j + half];
  }
  const float k = m::rms_backward_coef(rstd, dot, D);
  for (int64_t i = 0; i < D; ++i) dx[i] = m::rms_backward_elem(rstd, k, g[size_t(i)], x[i]);
}

TEST(CudaMath, HeadNormRotaryMatchesTheCpuBackend) {
  const double eps = 1.1920928955078125e-07;
  for (int64_t D : {2, 64, 66, 128}) {
    const int64_t T = 5, H = 3, N = 7, half = D / 2;
    Vec cd(static_cast<size_t>(T * half)), sd(static_cast<size_t>(T * half));
    cpu::rotary_tables<double>(cd.data(), sd.data(), T, D, 10000.0);
    const FVec cf(cd.begin(), cd.end()), sf(sd.begin(), sd.end());
    const FVec x = randf(N * H * D, uint64_t(D), 3.0), dy = randf(N * H * D, uint64_t(D) + 1);
    FVec y(x.size()), dx(x.size()), rstd(static_cast<size_t>(N * H));
    for (int64_t r = 0; r < N * H; ++r) {
      const int64_t t = (r / H) % T;
      head_forward(&y[size_t(r * D)], &rstd[size_t(r)], &x[size_t(r * D)], &cf[size_t(t * half)],
                   &sf[size_t(t * half)], D, float(eps));
      head_backward(&dx[size_t(r * D)], &dy[size_t(r * D)], &x[size_t(r * D)], rstd[size_t(r)],
                    &cf[size_t(t * half)], &sf[size_t(t * half)], D);
    }
    Vec xd = to_d(x), dyd = to_d(dy), yr(x.size()), dxr(x.size()), rr(static_cast<size_t>(N * H));
    cpu::head_norm_rotary_forward<double>(yr.data(), rr.data(), xd.data(), cd.data(), sd.data(), N,
                                          T, H, D, eps);
    cpu::head_norm_rotary_backward<double>(dxr.data(), dyd.data(), xd.data(), rr.data(), cd.data(),
                                           sd.data(), N, T, H, D);
    EXPECT_LE(rel_err(y, yr), tol::kFloat) << D;
    EXPECT_LE(rel_err(dx, dxr), tol::kFloat) << D;
    EXPECT_LE(rel_err(rstd, rr), tol::kFloat) << D;
  }
}

// ---- softcap + cross entropy -----------------------------------------------------------------

TEST(CudaMath, SoftcapCrossEntropyRowMatchesTheCpuBackend) {
  for (int64_t V : {31, 32, 33, 1000, 50304}) {
    FVec l = randf(V, uint64_t(V), 20.0);  // reaches the softcap's bend
    const int32_t target = int32_t(V / 3);
    float loss = 0;
    FVec g = l;
    m::softcap_ce_row(g.data(), &loss, target, V, 30.0f, 0.25f, true);
    Vec ld = to_d(l), lr(1);
    const int32_t tg[1] = {target};
    cpu::softcap_cross_entropy<double>(ld.data(), lr.data(), tg, 1, V, 30.0, 0.25, true);
    EXPECT_LE(std::fabs(loss - lr[0]) / std::max(1.0, lr[0]), tol::kFloat) << V;
    EXPECT_LE(rel_err(g, ld), tol::kFloat) << V;
  }
}

// The host's exp2 as the GPU's ex2.approx.ftz gives it: results below 2^-126 are +0 (so the
// CPU emulator of CUDA flushes what the GPU flushes), the rest within the instruction's 2 ulp.
TEST(CudaMath, Exp2FlushesWhatTheGpuFlushes) {
  EXPECT_EQ(m::exp2_ftz(-126.0f), std::ldexp(1.0f, -126));
  EXPECT_EQ(m::exp2_ftz(-126.5f), 0.0f);
  EXPECT_EQ(m::exp2_ftz(-149.0f), 0.0f);
  EXPECT_EQ(m::exp2_ftz(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_FALSE(std::signbit(m::exp2_ftz(-200.0f)));
  EXPECT_TRUE(std::isnan(m::exp2_ftz(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(m::exp2_ftz(0.0f), 1.0f);
  for (float x = -125.0f; x <= 0.0f; x += 0.37f) {
    const double want = std::exp2(double(x));
    EXPECT_LE(std::fabs(m::exp2_ftz(x) - want), 2 * 1.2e-7 * want) << x;
  }
}

// The row's math in base 2 gives the natural-log loss of the definition (the CPU backend
// computes it in natural units, in double here): at the cap's bend, and where the logits
// sit at -cap and +cap (the widest exponents a row can have).
TEST(CudaMath, SoftcapCrossEntropyInBase2IsTheNaturalLoss) {
  for (const float cap : {15.0f, 30.0f, 40.0f}) {
    FVec l(513);
    for (size_t i = 0; i < l.size(); ++i) l[i] = (i % 2 ? 1.0f : -1.0f) * 1e4f * float(i % 7);
    l[3] = 0.5f;
    for (const int32_t target : {0, 3, 7}) {
      float loss = 0;
      FVec g = l;
      m::softcap_ce_row(g.data(), &loss, target, int64_t(l.size()), cap, 1.0f, true);
      Vec ld = to_d(l), lr(1);
      const int32_t tg[1] = {target};
      cpu::softcap_cross_entropy<double>(ld.data(), lr.data(), tg, 1, int64_t(l.size()),
                                         double(cap), 1.0, true);
      EXPECT_LE(std::fabs(loss - lr[0]) / std::max(1.0, lr[0]), tol::kFloat) << cap << " " << target;
      EXPECT_LE(rel_err(g, ld), tol::kFloat) << cap << " " << target;
    }
  }
}

TEST(CudaMath, SoftmaxStatesMergeInAnyGrouping) {
  const FVec z = randf(1000, 5, 10.0);
  const m::Softcap c = m::softcap_of(30.0f);
  m::SoftmaxState seq = m::softmax_start(c), a = m::softmax_start(c), b = m::softmax_start(c);
  for (size_t i = 0; i < z.size(); ++i) {
    m::softmax_add(seq, z[i]);
    m::softmax_add(i % 3 ? a : b, z[i]);
  }
  const m::SoftmaxState ab = m::softmax_merge(a, b), ba = m::softmax_merge(b, a);
  EXPECT_EQ(ab.m, seq.m);
  EXPECT_NEAR(ab.s, seq.s, 1e-5 * seq.s);
  EXPECT_EQ(ab.m, ba.m);
  EXPECT_NEAR(ab.s, ba.s, 1e-6 * ab.s);
  // Two empty states (max = -cap) merge without NaN.
  const m::SoftmaxState e = m::softmax_merge(m::softmax_start(c), m::softmax_start(c));
  EXPECT_EQ(e.s, 0.0f);
  // A NaN logit makes the loss NaN.
  FVec l = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f};
  float loss = 0;
  m::softcap_ce_row(l.data(), &loss, 0, 3, 30.0f, 1.0f, false);
  EXPECT_TRUE(std::isnan(loss));
}

// ---- optimizers ------------------------------------------------------------------------------

TEST(CudaMath, AdamUpdateMatchesTheCpuBackendOverSteps) {
  const int64_t n = 1001;
  const FVec g0 = randf(n, 1, 0.01);
  FVec p = randf(n, 2), mm(static_cast<size_t>(n), 0), v(static_cast<size_t>(n), 0);
  Vec pd = to_d(p), md(static_cast<size_t>(n), 0), vd(static_cast<size_t>(n), 0);
  for (int64_t step = 1; step <= 5; ++step) {
    const FVec g = randf(n, uint64_t(step) + 10, 0.01);
    const m::AdamScalars s = m::adam_scalars(0.04, 0.8, 0.95, 1e-8, step);
    for (int64_t i = 0; i < n; ++i)
      m::adam_update(p[size_t(i)], g[size_t(i)], mm[size_t(i)], v[size_t(i)], s);
    const Vec gd = to_d(g);
    cpu::adam_step<double>(pd.data(), gd.data(), md.data(), vd.data(), n, 0.04, 0.8, 0.95, 1e-8, step);
  }
  EXPECT_LE(rel_err(p, pd), tol::kFloat);
  EXPECT_LE(rel_err(mm, md), tol::kFloat);
  EXPECT_LE(rel_err(v, vd), tol::kFloat);
}

TEST(CudaMath, MuonMomentumMatchesTheCpuBackend) {
  const int64_t n = 333;
  const FVec g = randf(n, 3);
  FVec buf = randf(n, 4), out(static_cast<size_t>(n));
  Vec gd = to_d(g), bufd = to_d(buf), outd(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = m::muon_momentum_update(g[size_t(i)], buf[size_t(i)], 0.95f);
  cpu::muon_momentum<double>(outd.data(), bufd.data(), gd.data(), n, 0.95);
  EXPECT_LE(rel_err(out, outd), tol::kFloat);
  EXPECT_LE(rel_err(buf, bufd), tol::kFloat);
}

// Newton-Schulz replayed through math::newton_schulz_iterations with naive host GEMMs:
// T = double without rounding (against the CPU's double), or float rounding every stored
// result to bf16 (the GPU's storage) against the CPU's bf16 emulation.
template <class T>
struct HostNs {
  int64_t m, k;
  bool bf16;
  std::vector<T> x, xn, A, B;
  T r(double v) const { return bf16 ? T(round_bf16(float(v))) : T(v); }
  void xxt() {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double s = 0;
        for (int64_t l = 0; l < k; ++l) s += double(x[size_t(i * k + l)]) * double(x[size_t(j * k + l)]);
        A[size_t(i * m + j)] = r(s);
      }
  }
  void aa(float alpha, float beta) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j) {
        double s = 0;
        for (int64_t l = 0; l < m; ++l) s += double(A[size_t(i * m + l)]) * double(A[size_t(l * m + j)]);
        B[size_t(i * m + j)] = r(double(alpha) * s + double(beta) * double(A[size_t(i * m + j)]));
      }
  }
  void bx(float alpha, float beta) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double s = 0;
        for (int64_t l = 0; l < m; ++l) s += double(B[size_t(i * m + l)]) * double(x[size_t(l * k + j)]);
        xn[size_t(i * k + j)] = r(double(alpha) * s + double(beta) * double(x[size_t(i * k + j)]));
      }
    std::swap(x, xn);
  }
};

template <class T>
std::vector<T> host_newton_schulz(const std::vector<T>& G, int64_t rows, int64_t cols, int steps,
                                  bool bf16) {
  const bool tr = rows > cols;
  HostNs<T> ns{tr ? cols : rows, tr ? rows : cols, bf16, {}, {}, {}, {}};
  const int64_t n = rows * cols;
  ns.x.resize(static_cast<size_t>(n));
  ns.xn.resize(static_cast<size_t>(n));
  ns.A.resize(static_cast<size_t>(ns.m * ns.m));
  ns.B.resize(static_cast<size_t>(ns.m * ns.m));
  double ss = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const T v = ns.r(double(G[size_t(i * cols + j)]));
      ns.x[size_t(tr ? j * rows + i : i * cols + j)] = v;
      ss += double(v) * double(v);
    }
  const double div = bf16 ? double(m::ns_divisor(ss)) : std::sqrt(ss) + 1e-7;
  for (auto& v : ns.x) v = ns.r(double(v) / div);
  m::newton_schulz_iterations(ns, steps);
  std::vector<T> X(static_cast<size_t>(n));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) X[size_t(i * cols + j)] = ns.x[size_t(tr ? j * rows + i : i * cols + j)];
  return X;
}

TEST(CudaMath, NewtonSchulzSequenceMatchesTheCpuBackend) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{31, 33}, {33, 31}, {32, 32}}) {
    const FVec gf = randf(rows * cols, uint64_t(rows * 100 + cols));
    // In double: the same function as the CPU's up to the coefficients' rounding to fp32
    // (math::kNs holds floats: relative 1e-8, amplified a little by five iterations).
    const Vec gd = to_d(gf);
    Vec ref(gd.size());
    cpu::newton_schulz5<double>(ref.data(), gd.data(), rows, cols, 5, false);
    EXPECT_LE(rel_err(host_newton_schulz<double>(gd, rows, cols, 5, false), ref), 1e-6)
        << rows << "x" << cols;
    // In bf16 storage: against the CPU's bf16 emulation, which rounds the same stored
    // results (here they agree to the bit; fp32 accumulation order may flip a bf16 bit).
    FVec reff(gf.size());
    cpu::newton_schulz5<float>(reff.data(), gf.data(), rows, cols, 5, true);
    EXPECT_LE(rel_err(host_newton_schulz<float>(gf, rows, cols, 5, true), to_d(reff)), tol::kBf16)
        << rows << "x" << cols;
  }
}

TEST(CudaMath, NewtonSchulzDivisorIsTheRecordsBf16Norm) {
  for (double ss : {1.0, 2.0, 12345.678, 1e-20}) {
    float d = round_bf16(float(std::sqrt(ss)));
    d = round_bf16(float(d + 1e-7));
    EXPECT_EQ(m::ns_divisor(ss), d) << ss;
  }
}

// ---- elementwise -----------------------------------------------------------------------------

TEST(CudaMath, ReluSquaredAndCoefficientsMatchTheCpu) {
  FVec x = randf(1000, 9, 2.0);
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  x.push_back(-0.0f);
  const FVec dy = randf(int64_t(x.size()), 10);
  FVec y(x.size()), dx(x.size());
  cpu::relu_squared_forward<float>(y.data(), x.data(), int64_t(x.size()));
  cpu::relu_squared_backward<float>(dx.data(), dy.data(), y.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(m::float_bits(m::relu_squared(x[i])), m::float_bits(y[i])) << x[i];
    EXPECT_EQ(m::float_bits(m::relu_squared_grad(y[i], dy[i])), m::float_bits(dx[i])) << x[i];
  }
  // On bf16 outputs (the GPU's y) too: sqrt there is not exact, and must be the CPU's.
  for (size_t i = 0; i < x.size(); ++i) {
    const float yb = m::round_bf16(y[i]);
    float dxc = 0;
    cpu::relu_squared_backward<float>(&dxc, &dy[i], &yb, 1);
    EXPECT_EQ(m::float_bits(m::relu_squared_grad(yb, dy[i])), m::float_bits(dxc)) << yb;
  }
  const float lamb = 0.3f;
  EXPECT_EQ(m::coef_value(m::CoefArg{&lamb, nullptr, -1.0, 1.0}), float(1.0f - 0.3f));
  EXPECT_EQ(m::coef_value(m::CoefArg{&lamb, nullptr, 1.0, 0.0}), 0.3f);
  EXPECT_EQ(m::coef_value(m::CoefArg{nullptr, nullptr, 1.0, 1.0}), 1.0f);
}

#ifdef SPEEDRUN_HAVE_CUDA
// ---- host-side planning ----------------------------------------------------------------------

TEST(CudaPlan, GpuChoiceFollowsTheLocalRank) {
  EXPECT_EQ(cuda::choose_gpu(-1, 1, nullptr, nullptr), 0);
  EXPECT_EQ(cuda::choose_gpu(-1, 8, "3", nullptr), 3);
  EXPECT_EQ(cuda::choose_gpu(-1, 8, nullptr, "5"), 5);
  EXPECT_EQ(cuda::choose_gpu(-1, 8, "2", "5"), 2);  // OpenMPI's first
  EXPECT_EQ(cuda::choose_gpu(-1, 4, "6", nullptr), 2);  // modulo the visible GPUs
  EXPECT_EQ(cuda::choose_gpu(-1, 1, nullptr, "3"), 0);  // srun --gpus-per-task=1: its own GPU
  EXPECT_EQ(cuda::choose_gpu(-1, 8, nullptr, nullptr, "4"), 4);  // MPICH (PMI)
  EXPECT_EQ(cuda::choose_gpu(-1, 8, nullptr, "1", "4"), 1);
  EXPECT_EQ(cuda::choose_gpu(1, 2, "0", nullptr), 1);   // an explicit GPU wins
  EXPECT_THROW(cuda::choose_gpu(2, 2, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::choose_gpu(-1, 2, "x", nullptr), Error);
  EXPECT_THROW(cuda::choose_gpu(-1, 2, "-1", nullptr), Error);
  EXPECT_THROW(cuda::choose_gpu(-1, 0, nullptr, nullptr), Error);
  try {
    cuda::choose_gpu(-1, 2, nullptr, "abc");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SLURM_LOCALID"), std::string::npos) << e.what();
  }
}

// The record's config: T = 65536 tokens per micro-batch, C = 768, H = 6, D = 128,
// V = 50304, F = 4C; the head's logits in chunks of kHeadChunkLogits / V rows.
TEST(CudaPlan, LaunchShapesOfTheRecordFitTheHardware) {
  const int64_t T = 65536, C = 768, H = 6, V = 50304, F = 4 * C;
  const int64_t head_rows = cuda::kHeadChunkLogits / V;
  EXPECT_EQ(head_rows, 5336);
  EXPECT_EQ((T + head_rows - 1) / head_rows, 13);  // chunks per sequence
  for (int64_t items : {T * C / 8, T * F / 8, T * C, V * C, int64_t(1)}) {
    const cuda::Launch l = cuda::elementwise_launch(items);
    EXPECT_GE(l.blocks, 1);
    EXPECT_LE(l.blocks, cuda::kMaxElementwiseBlocks);
    EXPECT_EQ(l.threads, 256);
  }
  // Grid-stride coverage: every item exactly once.
  for (int64_t items : {1, 255, 256, 257, 1000003}) {
    const cuda::Launch l = cuda::elementwise_launch(items);
    std::vector<uint8_t> seen(static_cast<size_t>(items), 0);
    for (int64_t g = 0; g < l.blocks * l.threads; ++g)
      for (int64_t i = g; i < items; i += l.blocks * l.threads) ++seen[size_t(i)];
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](uint8_t c) { return c == 1; })) << items;
  }
  EXPECT_EQ(cuda::warp_rows_launch(T).blocks, T / 8);            // rms_norm rows
  EXPECT_EQ(cuda::warp_rows_launch(T * H).blocks, T * H / 8);    // QK heads
  EXPECT_EQ(cuda::warp_rows_launch(33).blocks, 5);
  EXPECT_EQ(cuda::block_rows_launch(head_rows, cuda::kHeadRowThreads).blocks, 5336);  // CE rows
  EXPECT_EQ(cuda::block_rows_launch(head_rows, cuda::kHeadRowThreads).threads, 1024);
  EXPECT_LT(cuda::warp_rows_launch(T * H).blocks, int64_t(1) << 31);
  EXPECT_EQ(m::reduce_blocks(T * C), m::kMaxPartials);
}

TEST(CudaPlan, VectorAccessNeedsSizeAndAlignment) {
  alignas(16) static uint16_t buf[64];
  EXPECT_TRUE(cuda::vec8_ok(64, buf, buf + 8));
  EXPECT_FALSE(cuda::vec8_ok(63, buf));
  EXPECT_FALSE(cuda::vec8_ok(64, buf + 1));
  EXPECT_FALSE(cuda::vec8_ok(64, buf, buf + 4));
  EXPECT_TRUE(cuda::vec8_ok(64, buf, nullptr, buf + 16));
}

TEST(CudaPlan, EmbeddingBackwardPlan) {
  EXPECT_EQ(cuda::radix_bits(1), 1);
  EXPECT_EQ(cuda::radix_bits(2), 1);
  EXPECT_EQ(cuda::radix_bits(3), 2);
  EXPECT_EQ(cuda::radix_bits(128), 7);
  EXPECT_EQ(cuda::radix_bits(129), 8);
  EXPECT_EQ(cuda::radix_bits(50304), 16);  // the record's padded GPT-2 vocabulary
  const auto p = cuda::embedding_backward_plan(65536, 50304, 123457);
  EXPECT_EQ(p.end_bit, 16);
  for (size_t off : {p.keys_out, p.values_in, p.values_out, p.temp}) EXPECT_EQ(off % 256, 0u);
  EXPECT_GE(p.values_in - p.keys_out, 65536u * 4);
  EXPECT_GE(p.values_out - p.values_in, 65536u * 4);
  EXPECT_GE(p.temp - p.values_out, 65536u * 4);
  EXPECT_GE(p.total - p.temp, 123457u);
  const auto q = cuda::embedding_backward_plan(33, 37, 0);
  EXPECT_EQ(q.values_in, 256u);
  EXPECT_THROW(cuda::embedding_backward_plan(0, 10, 0), Error);
}

TEST(CudaPlan, NewtonSchulzPlanForTheRecordsMatrices) {
  using cuda::NsLayout;
  const auto sq = cuda::newton_schulz_plan(4, 768, 768, true);  // c_q, c_k, c_v, c_proj of a layer
  EXPECT_FALSE(sq.transposed);
  EXPECT_EQ(sq.m, 768);
  EXPECT_EQ(sq.k, 768);
  EXPECT_EQ(sq.layout, NsLayout::kVectors);
  const auto fc = cuda::newton_schulz_plan(12, 3072, 768, true);  // c_fc: rows > cols, transposed
  EXPECT_TRUE(fc.transposed);
  EXPECT_EQ(fc.m, 768);
  EXPECT_EQ(fc.k, 3072);
  EXPECT_EQ(fc.layout, NsLayout::kTiles);
  const auto pr = cuda::newton_schulz_plan(12, 768, 3072, true);  // mlp c_proj
  EXPECT_FALSE(pr.transposed);
  EXPECT_EQ(pr.m, 768);
  EXPECT_EQ(pr.k, 3072);
  EXPECT_EQ(pr.layout, NsLayout::kVectors);
  for (const auto& p : {sq, fc, pr}) {
    for (size_t off : {p.x0, p.x1, p.a, p.b, p.partial, p.divisor}) EXPECT_EQ(off % 256, 0u);
    EXPECT_LT(p.x0, p.x1);
    EXPECT_LT(p.x1, p.a);
    EXPECT_LT(p.a, p.b);
    EXPECT_LT(p.b, p.partial);
    EXPECT_LT(p.partial, p.divisor);
    EXPECT_LT(p.divisor, p.total);
  }
  EXPECT_EQ(fc.x1 - fc.x0, size_t(12) * 768 * 3072 * 2);
  // 8-element items: a partial per 256 x 16 x 8 elements.
  EXPECT_EQ(fc.items, 3072 * 768 / 8);
  EXPECT_EQ(fc.partials, m::reduce_blocks(3072 * 768 / 8));
  EXPECT_EQ(sq.partials, 18);
  EXPECT_THROW(cuda::newton_schulz_plan(70000, 2, 2, true), Error);
}

// Which matrices take the 16-byte paths: vectors need 8 | size and aligned F32 matrices;
// a transposed work matrix needs whole tiles as well, or goes element by element.
TEST(CudaPlan, NewtonSchulzLayoutFollowsSizeAlignmentAndTiles) {
  using cuda::NsLayout;
  auto layout = [](int64_t rows, int64_t cols, bool aligned) {
    return cuda::newton_schulz_plan(3, rows, cols, aligned).layout;
  };
  EXPECT_EQ(layout(768, 768, false), NsLayout::kElements);  // an unaligned view
  EXPECT_EQ(layout(3072, 768, false), NsLayout::kElements);
  EXPECT_EQ(layout(24, 40, true), NsLayout::kVectors);      // 960 = 8 x 120
  EXPECT_EQ(layout(31, 33, true), NsLayout::kElements);     // 1,023 elements
  EXPECT_EQ(layout(128, 64, true), NsLayout::kTiles);
  EXPECT_EQ(layout(96, 32, true), NsLayout::kElements);     // transposed, not whole tiles
  EXPECT_EQ(layout(33, 31, true), NsLayout::kElements);
  EXPECT_EQ(layout(64, 64, true), NsLayout::kVectors);      // square: not transposed
  const auto e = cuda::newton_schulz_plan(2, 31, 33, true);
  EXPECT_EQ(e.items, 31 * 33);
  EXPECT_EQ(e.partials, m::reduce_blocks(31 * 33));
}

// A multi-tensor launch gives each tensor the blocks its own launch would have, back to
// back (the kernels' walk of them runs in CudaBackendTest under the emulator).
TEST(CudaPlan, TensorBlockStartsGiveEachTensorItsOwnGrid) {
  // The record's Adam parameters: wte and lm_head (50,304 x 768) and 25 scalars.
  std::vector<int64_t> n = {50304 * 768, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1,
                            2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 6, 50304 * 768};
  n.push_back(0);  // an empty tensor still takes one block, which does nothing
  std::vector<int> start(n.size() + 1);
  cuda::tensor_block_starts(n.data(), int(n.size()), start.data());
  EXPECT_EQ(start[0], 0);
  for (size_t k = 0; k < n.size(); ++k)
    EXPECT_EQ(start[k + 1] - start[k], cuda::elementwise_launch(n[k]).blocks) << k;
  EXPECT_EQ(start[n.size()], 2 * cuda::kMaxElementwiseBlocks + 26);
  EXPECT_THROW(cuda::tensor_block_starts(n.data(), 0, start.data()), Error);
  std::vector<int64_t> many(size_t(cuda::kMaxLaunchTensors) + 1, 1);
  std::vector<int> s2(many.size() + 1);
  EXPECT_THROW(cuda::tensor_block_starts(many.data(), int(many.size()), s2.data()), Error);
  const int64_t bad[] = {5, -1};
  EXPECT_THROW(cuda::tensor_block_starts(bad, 2, s2.data()), Error);
}

// cuBLASLt's column-major problem, run by a naive column-major GEMM, must equal the
// row-major product the CPU backend computes.
void lt_reference(const cuda::LtGemm& g, const double* A, const double* B, double* D, double alpha,
                  double beta) {
  auto at = [](const double* p, const cuda::LtMatrix& mm, bool t, uint64_t i, uint64_t j) {
    // Element (i, j) of op(M): M is column-major rows x cols with leading dimension ld.
    return t ? p[j + i * uint64_t(mm.ld)] : p[i + j * uint64_t(mm.ld)];
  };
  for (uint64_t i = 0; i < g.m; ++i)
    for (uint64_t j = 0; j < g.n; ++j) {
      double s = 0;
      for (uint64_t l = 0; l < g.k; ++l) s += at(A, g.a, g.transa, i, l) * at(B, g.b, g.transb, l, j);
      double& d = D[i + j * uint64_t(g.c.ld)];
      d = alpha * s + beta * d;
    }
}

TEST(CudaPlan, RowMajorGemmMapsOntoColumnMajorLayouts) {
  for (int64_t M : {31, 33})
    for (int64_t N : {32, 1})
      for (int64_t K : {33, 8})
        for (bool ta : {false, true})
          for (bool tb : {false, true}) {
            cuda::GemmKey key;
            key.M = M, key.N = N, key.K = K, key.transA = ta, key.transB = tb;
            key.accumulate = true;
            const cuda::LtGemm g = cuda::lt_gemm(key);
            ASSERT_EQ(g.transa ? g.a.cols : g.a.rows, g.m);
            ASSERT_EQ(g.transb ? g.b.rows : g.b.cols, g.n);
            // Leading dimensions are at least the stored rows (cuBLASLt's rule).
            EXPECT_GE(uint64_t(g.a.ld), g.a.rows);
            EXPECT_GE(uint64_t(g.b.ld), g.b.rows);
            EXPECT_GE(uint64_t(g.c.ld), g.c.rows);
            const Vec A = to_d(randf(M * K, 1)), B = to_d(randf(K * N, 2)), C0 = to_d(randf(M * N, 3));
            Vec ref = C0, got = C0;
            cpu::gemm<double>(ta, tb, M, N, K, 1.5, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0,
                              ref.data(), N);
            lt_reference(g, B.data(), A.data(), got.data(), 1.5, 1.0);  // its A is our B
            EXPECT_LE(rel_err(got, ref), tol::kDouble)
                << cuda::gemm_key_str(key);
          }
}

TEST(CudaPlan, GemmKeysHashAndPrint) {
  cuda::GemmKey a;
  a.M = 65536, a.N = 768, a.K = 3072, a.transA = true, a.c = DType::F32, a.accumulate = true;
  cuda::GemmKey b = a;
  EXPECT_EQ(cuda::GemmKeyHash{}(a), cuda::GemmKeyHash{}(b));
  EXPECT_TRUE(a == b);
  b.alignC = 64;
  EXPECT_FALSE(a == b);
  EXPECT_NE(cuda::GemmKeyHash{}(a), cuda::GemmKeyHash{}(b));
  EXPECT_EQ(cuda::gemm_key_str(a), "M=65536 N=768 K=3072 A^T BF16 x B BF16 -> F32 (+=)");
  alignas(256) static char buf[512];
  EXPECT_EQ(cuda::pointer_alignment(buf), 256u);
  EXPECT_EQ(cuda::pointer_alignment(buf + 64), 64u);
  EXPECT_EQ(cuda::pointer_alignment(buf + 2), 2u);
}

// The GEMM algorithm record: every field of a problem and its algorithm survives the file,
// and a damaged file is refused naming the file, the line and the fix, never half-read.
TEST(CudaPlan, GemmRecordRoundTripsAndRefusesDamage) {
  cuda::GemmRecord r;
  r.origin = {"NVIDIA H200", 90, 130100, 132};
  r.tune = 8;
  cuda::GemmRecordEntry e;
  e.key.M = 65536, e.key.N = 768, e.key.K = 3072, e.key.transA = true, e.key.c = DType::F32;
  e.key.accumulate = true, e.key.alignB = 64;
  e.algo = {0x1234, 0, ~uint64_t(0), 7, 1ull << 63, 42, 0xdeadbeef, 3};
  e.ms = 0.1234, e.candidates = 8, e.chosen = 3, e.first_ms = 0.2;
  cuda::GemmRecordEntry f;
  f.key.M = 768, f.key.N = 768, f.key.K = 768, f.key.transB = true, f.key.batch = 24;
  f.key.strideA = f.key.strideB = f.key.strideC = 768 * 768, f.key.alignC = 2;
  f.algo = {5, 4, 3, 2, 1, 0, 9, 8};
  f.ms = 2.5, f.candidates = 3, f.chosen = 0, f.first_ms = 2.5;
  r.entries = {e, f};
  const std::string text = cuda::format_gemm_record(r);
  const cuda::GemmRecord back = cuda::parse_gemm_record(text, "x.tsv");
  EXPECT_EQ(back.origin, r.origin);
  EXPECT_EQ(back.tune, 8);
  ASSERT_EQ(back.entries.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(back.entries[i].key == r.entries[i].key) << i;
    EXPECT_EQ(back.entries[i].algo, r.entries[i].algo) << i;
    EXPECT_NEAR(back.entries[i].ms, r.entries[i].ms, 1e-4) << i;
    EXPECT_EQ(back.entries[i].candidates, r.entries[i].candidates) << i;
    EXPECT_EQ(back.entries[i].chosen, r.entries[i].chosen) << i;
    EXPECT_NEAR(back.entries[i].first_ms, r.entries[i].first_ms, 1e-4) << i;
  }
  ASSERT_NE(back.find(f.key), nullptr);
  EXPECT_EQ(back.find(f.key)->algo, f.algo);
  cuda::GemmKey other = f.key;
  other.alignA = 128;  // another alignment is another problem
  EXPECT_EQ(back.find(other), nullptr);

  // Through a file, written atomically into a folder it makes.
  const std::string dir = test::process_temp("gemm_record").string();
  std::filesystem::remove_all(dir);
  const std::string path = dir + "/sub/algos.tsv";
  cuda::GemmRecord read;
  EXPECT_FALSE(cuda::read_gemm_record(path, read));
  cuda::write_gemm_record(path, r);
  ASSERT_TRUE(cuda::read_gemm_record(path, read));
  EXPECT_EQ(read.entries.size(), 2u);

  // Each damage names the line; the rest of the file was good.
  const std::string gemm_line = text.substr(text.find("gemm\t"));
  const std::string head = text.substr(0, text.find("gemm\t"));
  auto line_of = [&](const std::string& start) {  // 1-based line of text's `start`
    const std::string before = text.substr(0, text.find(start));
    return int(std::count(before.begin(), before.end(), '\n')) + 1;
  };
  const int gemm_at = line_of("gemm\t"), format_at = line_of("format\t");
  const int gpu_at = line_of("gpu\t"), tune_at = line_of("tune\t");
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    const size_t at = t.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return t.replace(at, from.size(), to);
  };
  struct Case {
    std::string text, why;
    int line;
  };
  const std::vector<Case> bad = {
      {"", "empty", 0},
      {"gpu\tX\tsm_90\tcublaslt 1\tsms 132\n", "format 2", 1},
      {replaced("format\t2", "format\t1"), "format 1 is not 2", format_at},
      {replaced("\tsm_90\t", "\tsm_9x\t"), "compute capability", gpu_at},
      {replaced("\tsms 132\n", "\tsms 0\n"), "the number of SMs '0'", gpu_at},
      {replaced("\tsms 132\n", "\n"), "sms <SMs>", gpu_at},
      {replaced("tune\t8", "tune\t0"), "tune", tune_at},
      {replaced("\t65536\t", "\t65536x\t"), "M '65536x'", gemm_at},
      {replaced("\tT\tN\t", "\tY\tN\t"), "transA 'Y'", gemm_at},
      {replaced("\tBF16\t", "\tF16\t"), "dtypeA 'F16'", gemm_at},
      {replaced("\t+=\t", "\t-=\t"), "'-='", gemm_at},
      {replaced("\t64\t256\t", "\t48\t256\t"), "power of two", gemm_at},
      {replaced("0000000000001234:", "000000000000123g:"), "word 0", gemm_at},
      {replaced("0000000000001234:", "0000000000001234-"), "':'", gemm_at},
      {replaced("\t0.1234\t", "\tfast\t"), "ms 'fast'", gemm_at},
      {replaced("\t0.1234\t8\t3\t0.2000\n", "\t0.1234\t8\t3\n"), "21 fields, not 20", gemm_at},
      {replaced("\t0.1234\t8\t3\t", "\t0.1234\t8\t8\t"), "chosen '8'", gemm_at},
      {replaced("\t3\t0.2000\n", "\t3\t-1\n"), "first_ms '-1'", gemm_at},
      {text + gemm_line.substr(0, gemm_line.find('\n') + 1), "second entry", gemm_at + 2},
      {text + "gemmm\t1\n", "unknown line 'gemmm'", gemm_at + 2},
      {head.substr(0, head.find("gpu\t")) + "tune\t8\n", "no 'gpu' line", gpu_at},
      // A line given twice would leave the record to whichever came last.
      {replaced("tune\t8\n", "tune\t8\nformat\t2\n"), "a second format line", tune_at + 1},
      {replaced("tune\t8\n", "tune\t8\ngpu\tY\tsm_80\tcublaslt 1\tsms 108\n"),
       "a second gpu line", tune_at + 1},
      {replaced("tune\t8\n", "tune\t8\ntune\t2\n"), "a second tune line", tune_at + 1},
  };
  for (const Case& c : bad) {
    try {
      cuda::parse_gemm_record(c.text, "damaged.tsv");
      ADD_FAILURE() << "accepted a record that should fail with '" << c.why << "':\n" << c.text;
    } catch (const Error& err) {
      const std::string m = err.what();
      for (const std::string& piece : {std::string("damaged.tsv line ") + std::to_string(c.line),
                                       c.why, std::string("remove the file")})
        EXPECT_NE(m.find(piece), std::string::npos) << "'" << piece << "' not in: " << m;
    }
  }

  // Algorithms belong to a GPU and a cuBLASLt: a record from elsewhere is refused.
  EXPECT_EQ(cuda::gemm_record_mismatch("a.tsv", r.origin, r.origin), "");
  cuda::GemmRecordOrigin there = r.origin;
  there.cublaslt = 130200;
  const std::string why = cuda::gemm_record_mismatch("a.tsv", r.origin, there);
  for (const char* piece : {"a.tsv", "NVIDIA H200 (sm_90, 132 SMs) with cuBLASLt 130100", "130200",
                            "remove the file", "SPEEDRUN_GEMM_ALGOS"})
    EXPECT_NE(why.find(piece), std::string::npos) << piece << " not in: " << why;
  there = r.origin;
  there.gpu = "NVIDIA H100 80GB HBM3";
  EXPECT_NE(cuda::gemm_record_mismatch("a.tsv", r.origin, there), "");
  there = r.origin;
  there.sms = 16;  // a MIG slice of the same GPU: its name and compute capability
  EXPECT_NE(cuda::gemm_record_mismatch("a.tsv", r.origin, there).find("16 SMs"), std::string::npos);
  std::filesystem::remove_all(dir);
}

// Where a training run keeps its record: in its folder when it times algorithms or the
// file is there already, one file per rank, SPEEDRUN_GEMM_ALGOS overriding ("" none).
TEST(CudaPlan, RunGemmRecordFollowsTheRunAndTheRank) {
  const std::string dir = test::process_temp("run_gemm_record").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  unsetenv("SPEEDRUN_GEMM_ALGOS");
  unsetenv("SPEEDRUN_GEMM_TUNE");
  EXPECT_EQ(cuda::run_gemm_record(dir, 0, 1), "");  // nothing timed, no file: no record
  setenv("SPEEDRUN_GEMM_TUNE", "4", 1);
  EXPECT_EQ(cuda::run_gemm_record(dir, 0, 1), dir + "/gemm_algos.tsv");
  EXPECT_EQ(cuda::run_gemm_record(dir, 3, 8), dir + "/gemm_algos.rank3.tsv");
  unsetenv("SPEEDRUN_GEMM_TUNE");
  std::ofstream(dir + "/gemm_algos.tsv") << "format\t2\n";  // a run that timed them
  EXPECT_EQ(cuda::run_gemm_record(dir, 0, 1), dir + "/gemm_algos.tsv");
  EXPECT_EQ(cuda::run_gemm_record(dir, 1, 2), "");  // rank 1 of 2 has no file of its own
  setenv("SPEEDRUN_GEMM_ALGOS", "/shared/algos.tsv", 1);
  EXPECT_EQ(cuda::run_gemm_record(dir, 0, 1), "/shared/algos.tsv");
  EXPECT_EQ(cuda::run_gemm_record(dir, 5, 8), "/shared/algos.rank5.tsv");
  setenv("SPEEDRUN_GEMM_ALGOS", "", 1);
  EXPECT_EQ(cuda::run_gemm_record(dir, 0, 1), "");
  unsetenv("SPEEDRUN_GEMM_ALGOS");
  std::filesystem::remove_all(dir);
}

TEST(CudaPlan, OutOfMemoryMessageSaysWhatToReduce) {
  const std::string s = cuda::oom_message("tensors", size_t(1) << 50, size_t(3) << 30,
                                          size_t(141) << 30, size_t(1) << 30, 0);
  for (const char* piece : {"out of GPU memory", "tensors", "1.00 PiB", "1125899906842624 bytes",
                            "3.00 GiB free of 141.00 GiB", "GPU 0", "--seq-len", "--grad-accum",
                            "--batch", "--vocab", "--layers"})
    EXPECT_NE(s.find(piece), std::string::npos) << piece << " in: " << s;
  EXPECT_EQ(cuda::format_bytes(512), "512 B");
  // An arena adds the largest tensor of the block it could not get.
  Arena a([&](size_t n) -> void* { fail(cuda::oom_message("tensors", n, 0, 1, 0, 0)); },
          [](void*) {});
  a.add("tokens", DType::I32, {65536});
  a.add("h0.fc", DType::BF16, {65536, 3072});
  a.add("h0.act", DType::BF16, {65536, 3072});
  try {
    a.materialize(Device::CUDA);
    FAIL() << "materialized";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--grad-accum"), std::string::npos) << m;
    EXPECT_NE(m.find("the largest 'h0.fc' [65536, 3072] BF16, 402653184 bytes"), std::string::npos) << m;
  }
  EXPECT_EQ(cuda::format_bytes(1536), "1.50 KiB");
}

// Which GPUs a build's architectures run on, by CUDA's compatibility rules (the CUDA C++
// Programming Guide, "Binary Compatibility" and "PTX Compatibility"; nvcc's "a" targets),
// and the message that refuses a GPU, each naming the fix.
TEST(CudaPlan, BuildArchitecturesAndTheGpusTheyRunOn) {
  const auto archs = cuda::parse_cuda_architectures("80;90a");
  ASSERT_EQ(archs.size(), 2u);
  EXPECT_EQ(archs[0].cc, 80);
  EXPECT_FALSE(archs[0].specific);
  EXPECT_TRUE(archs[0].sass && archs[0].ptx);
  EXPECT_EQ(archs[1].cc, 90);
  EXPECT_TRUE(archs[1].specific);
  const auto real = cuda::parse_cuda_architectures("86-real,120-virtual");
  ASSERT_EQ(real.size(), 2u);
  EXPECT_TRUE(real[0].sass && !real[0].ptx);
  EXPECT_TRUE(!real[1].sass && real[1].ptx);
  EXPECT_EQ(real[1].cc, 120);
  EXPECT_THROW(cuda::parse_cuda_architectures("sm_90"), Error);
  // wgmma needs "90a": a plain "90" build's kernels read binaryVersion 90 all the same.
  EXPECT_TRUE(cuda::has_specific_arch(cuda::parse_cuda_architectures("80;90a"), 90));
  EXPECT_TRUE(cuda::has_specific_arch(cuda::parse_cuda_architectures("90a-virtual"), 90));
  EXPECT_FALSE(cuda::has_specific_arch(cuda::parse_cuda_architectures("80;90"), 90));
  EXPECT_FALSE(cuda::has_specific_arch(cuda::parse_cuda_architectures("90f"), 90));
  EXPECT_FALSE(cuda::has_specific_arch(cuda::parse_cuda_architectures("100a"), 90));
  EXPECT_THROW(cuda::parse_cuda_architectures("90b"), Error);
  EXPECT_THROW(cuda::parse_cuda_architectures("90-fake"), Error);

  struct Row {
    const char* archs;
    int cc;
    bool runs;
  };
  const Row rows[] = {
      {"90a", 90, true},     // Hopper's own code
      {"90a", 100, false},   // an "a" target runs on its chip alone, its PTX too
      {"90a", 89, false},    // machine code never runs on an older GPU
      {"80;90a", 86, true},  // sm_80 code runs on every 8.x
      {"80;90a", 89, true},
      {"80;90a", 90, true},
      {"80;90a", 120, true},  // compute_80 PTX, compiled by the driver
      {"80;90a", 75, false},
      {"80-real", 120, false},  // machine code alone: same major only
      {"86-real", 80, false},   // 8.6 code on 8.0: older
      {"86-real", 89, true},
      {"80-virtual", 90, true},
  };
  for (const Row& r : rows)
    EXPECT_EQ(cuda::build_runs_on(cuda::parse_cuda_architectures(r.archs), r.cc), r.runs)
        << r.archs << " on sm_" << r.cc;

  // Too old: refused before any kernel is looked up, naming the need and the way out.
  std::string m = cuda::gpu_support_problem(0, "Tesla V100", 70, "80,90a", "");
  for (const char* piece : {"GPU 0", "Tesla V100", "sm_70", "sm_80", "--device cpu"})
    EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
  // A supported GPU whose kernels load: no problem.
  EXPECT_EQ(cuda::gpu_support_problem(1, "NVIDIA H200", 90, "80,90a", ""), "");
  // The build has no code for it: rebuild for it.
  m = cuda::gpu_support_problem(2, "NVIDIA GeForce RTX 4090", 89, "90a",
                                "cudaFuncGetAttributes: no kernel image is available");
  for (const char* piece : {"GPU 2", "sm_89", "90a", "no kernel image", "SPEEDRUN_CUDA_ARCHITECTURES=89",
                            "-DCMAKE_CUDA_ARCHITECTURES=89"})
    EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
  // The build has code for it, and the driver could not load it: the driver.
  m = cuda::gpu_support_problem(0, "NVIDIA H100", 90, "80,90a",
                                "cudaFuncGetAttributes: the provided PTX was compiled with an "
                                "unsupported toolchain");
  EXPECT_NE(m.find("driver"), std::string::npos) << m;
  EXPECT_EQ(m.find("CMAKE_CUDA_ARCHITECTURES"), std::string::npos) << m;
#ifndef SPEEDRUN_CUDA_EMULATED
  // The build states what it was compiled for, and it runs on the GPU it is tuned for.
  const std::string built = cuda::build_cuda_architectures();
  EXPECT_FALSE(built.empty());
  EXPECT_TRUE(cuda::build_runs_on(cuda::parse_cuda_architectures(built), 90)) << built;
#endif
}

// No GPU found: CUDA says "driver version is insufficient" for an old driver and for none at
// all; the versions tell them apart, each with its own fix.
TEST(CudaMath, DeviceCountProblemTellsAMissingDriverFromAnOldOne) {
  const std::string insufficient = "CUDA driver version is insufficient for CUDA runtime version";
  std::string m = cuda::device_count_problem(insufficient, true, 0, 13000);
  for (const char* piece : {"no NVIDIA driver is loaded", "libcuda.so.1", "nvidia-smi", insufficient.c_str()})
    EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
  EXPECT_EQ(m.find("update the driver"), std::string::npos) << m;
  m = cuda::device_count_problem(insufficient, true, 12040, 13000);
  for (const char* piece : {"supports CUDA up to 12.4", "runtime is 13.0", "reaches 13.0",
                            "CUDA 12.4 toolkit", insufficient.c_str()})
    EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
  EXPECT_EQ(m.find("no NVIDIA driver"), std::string::npos) << m;
  // Any other failure: CUDA's own words, and where to look.
  EXPECT_EQ(cuda::device_count_problem("no CUDA-capable device is detected", false, 13000, 13000),
            "cudaGetDeviceCount: no CUDA-capable device is detected: check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(cuda::cuda_version_name(13010), "13.1");
  EXPECT_EQ(cuda::cuda_version_name(12080), "12.8");
}

// cuBLASLt opened on first use (cublaslt_loader.h): the forwarding functions reach the
// library, which needs no GPU for its status names; a library that cannot be opened is an
// error naming it and the fix. The emulated build has the emulator's cuBLASLt instead.
TEST(CudaPlan, CublasLtOpensOnItsFirstCall) {
#ifdef SPEEDRUN_CUDA_EMULATED
  GTEST_SKIP() << "the emulated build runs the emulator's cuBLASLt";
#else
  EXPECT_STREQ(cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
  EXPECT_TRUE(cuda::cublaslt_opened());
  std::ifstream maps("/proc/self/maps");
  const std::string mapped((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
  EXPECT_NE(mapped.find("libcublasLt.so"), std::string::npos);
  const std::vector<std::string> names = cuda::cublaslt_candidates();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR));
  try {
    cuda::open_first_library({"libspeedrun-none.so.1", "/nonexistent/libspeedrun-none.so.1"},
                             "cuBLASLt");
    FAIL() << "opened a library that does not exist";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* piece : {"cannot open cuBLASLt", "libspeedrun-none.so.1",
                              "/nonexistent/libspeedrun-none.so.1", "LD_LIBRARY_PATH"})
      EXPECT_NE(m.find(piece), std::string::npos) << piece << " in: " << m;
  }
#endif
}

// NCCL is opened as cuBLASLt is, on first use: nothing links it, so a machine without it
// runs everything but NcclComm; where the build found the toolkit's NCCL it opens, through
// the soname or the toolkit's folder, and its functions answer.
TEST(CudaPlan, NcclOpensOnItsFirstUse) {
#if !defined(SPEEDRUN_HAVE_NCCL)
  GTEST_SKIP() << "this build has no NCCL (the CUDA toolkit's nccl.h was not found)";
#elif defined(SPEEDRUN_CUDA_EMULATED)
  GTEST_SKIP() << "the emulated build runs the emulator's NCCL";
#else
  auto mapped = [] {
    std::ifstream maps("/proc/self/maps");
    return std::string((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(mapped().find("libnccl.so"), std::string::npos) << "NCCL was loaded before its use";
  if (const std::string why = nccl_library_problem(); !why.empty()) {
    // A machine without NCCL (a portable build carried where none is found): said so.
    for (const char* piece : {"cannot open NCCL", "libnccl.so.", "LD_LIBRARY_PATH"})
      EXPECT_NE(why.find(piece), std::string::npos) << piece << " in: " << why;
    GTEST_SKIP() << why;
  }
  EXPECT_NE(mapped().find("libnccl.so"), std::string::npos);
  const char* why = ncclGetErrorString(ncclInvalidArgument);  // the library's own text
  ASSERT_NE(why, nullptr);
  EXPECT_NE(std::string(why).find("invalid argument"), std::string::npos) << why;
#endif
}
#endif  // SPEEDRUN_HAVE_CUDA

#ifdef SPEEDRUN_HAVE_NCCL
// An NCCL older than 2.13 (a PyTorch wheel's, first on the loader's path) is refused when it
// is opened, naming its version and the fix, not at the first bf16 or average reduction with
// a bare "invalid argument"; ncclGetVersion's two codings (before and since 2.9) read right.
TEST(CudaPlan, NcclOlderThanItNeedsIsRefusedNamingItsVersion) {
  EXPECT_EQ(nccl_version_problem(21300), "");
  EXPECT_EQ(nccl_version_problem(22805), "");
  const std::string old = nccl_version_problem(21003);
  for (const char* piece : {"NCCL 2.10.3 was found", "2.13 or newer", "LD_LIBRARY_PATH"})
    EXPECT_NE(old.find(piece), std::string::npos) << piece << " not in: " << old;
  EXPECT_NE(nccl_version_problem(2708).find("NCCL 2.7.8 was found"), std::string::npos);
  EXPECT_NE(nccl_version_problem(21299).find("NCCL 2.12.99 was found"), std::string::npos);
}
#endif

}  // namespace
}  // namespace speedrun
