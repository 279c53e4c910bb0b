// CPU kernels of the elementwise, norm, loss, embedding and optimizer families: the double
// instantiation against naive double loops, the float one against the double reference,
// backwards by central finite differences in double (L = sum(out * R), R random).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/adam.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/embedding.h"
#include "backend/cpu/head_norm_rotary.h"
#include "backend/cpu/muon.h"
#include "backend/cpu/relu_squared.h"
#include "backend/cpu/rms_norm.h"
#include "backend/cpu/scaled_sum.h"
#include "backend/cpu/vec_math.h"
#include "core/bf16.h"
#include "core/error.h"
#include "core/rng.h"
#include "tolerances.h"

namespace speedrun {
namespace {

using Vec = std::vector<double>;
using FVec = std::vector<float>;

// Values are float-representable, so the float kernels and the double reference see the
// same inputs and only the arithmetic differs.
Vec randn(int64_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = double(float(d(rng)));
  return v;
}

FVec to_f(const Vec& v) { return FVec(v.begin(), v.end()); }

using tol::rel_err;  // tests/tolerances.h's measure

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences (h = 1e-6) of loss() w.r.t. param at up to `samples` indices
// (all of them for small tensors, the first, the last and a stride between otherwise),
// compared with the analytic gradient.
double fd_err(Vec& param, const Vec& analytic, const std::function<double()>& loss,
              int64_t samples = 200) {
  const double h = 1e-6;
  const int64_t n = int64_t(param.size());
  std::vector<int64_t> idx;
  if (n <= samples) {
    for (int64_t i = 0; i < n; ++i) idx.push_back(i);
  } else {
    for (int64_t k = 0; k < samples; ++k) idx.push_back(k * (n - 1) / (samples - 1));
  }
  Vec fd, an;
  for (int64_t i : idx) {
    const double p0 = param[size_t(i)];
    param[size_t(i)] = p0 + h;
    const double lp = loss();
    param[size_t(i)] = p0 - h;
    const double lm = loss();
    param[size_t(i)] = p0;
    fd.push_back((lp - lm) / (2 * h));
    an.push_back(analytic[size_t(i)]);
  }
  return rel_err(an, fd);
}

struct Shape {
  int64_t rows, cols;
};
std::string name(const Shape& s) {
  std::ostringstream os;
  os << "[" << s.rows << "," << s.cols << "]";
  return os.str();
}
const Shape kShapes[] = {{1, 31}, {1, 32}, {1, 33}, {1025, 31}, {1025, 32}, {1025, 33}, {7, 768}};

// ---- rms_norm -----------------------------------------------------------------------------

Vec rms_ref(const Vec& x, int64_t rows, int64_t dim, double eps, Vec* rstd = nullptr) {
  Vec y(x.size());
  if (rstd) rstd->assign(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double s = 1.0 / std::sqrt(ss / double(dim) + eps);
    if (rstd) (*rstd)[size_t(r)] = s;
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * s;
  }
  return y;
}

TEST(RmsNorm, ForwardMatchesNaiveDoubleAndFloat) {
  const double eps = 1.1920928955078125e-07;  // fp32 machine epsilon, as in the record
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const Vec x = randn(s.rows * s.cols, 1, 3.0);
    Vec rs_ref;
    const Vec ref = rms_ref(x, s.rows, s.cols, eps, &rs_ref);
    Vec y(x.size()), rs(size_t(s.rows));
    cpu::rms_norm_forward(y.data(), rs.data(), x.data(), s.rows, s.cols, eps);
    EXPECT_LT(rel_err(y, ref), tol::kDouble);
    EXPECT_LT(rel_err(rs, rs_ref), tol::kDouble);
    FVec xf = to_f(x), yf(x.size()), rsf(size_t(s.rows));
    cpu::rms_norm_forward(yf.data(), rsf.data(), xf.data(), s.rows, s.cols, float(eps));
    EXPECT_LT(rel_err(yf, ref), tol::kFloat);
    EXPECT_LT(rel_err(rsf, rs_ref), tol::kFloat);
    // In place (y aliases x) gives the same bits.
    cpu::rms_norm_forward(xf.data(), rsf.data(), xf.data(), s.rows, s.cols, float(eps));
    EXPECT_EQ(xf, yf);
  }
}

TEST(RmsNorm, EpsDominatesTinyRows) {
  // A zero row gives rstd = 1/sqrt(eps), y = 0; a tiny row is scaled by eps, not blown up.
  Vec x = {0, 0, 0, 1e-6, -1e-6, 1e-6};
  Vec y(6), rs(2);
  cpu::rms_norm_forward(y.data(), rs.data(), x.data(), 2, 3, 1e-2);
  EXPECT_DOUBLE_EQ(rs[0], 10.0);
  EXPECT_NEAR(rs[1], 1.0 / std::sqrt(1e-12 + 1e-2), 1e-9);
  EXPECT_EQ(y[0], 0.0);
}

TEST(RmsNorm, BackwardFiniteDifferencesAssignAndAccumulate) {
  const double eps = 1e-5;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    Vec x = randn(s.rows * s.cols, 2);
    const Vec R = randn(s.rows * s.cols, 3);
    Vec y(x.size()), rs(size_t(s.rows));
    cpu::rms_norm_forward(y.data(), rs.data(), x.data(), s.rows, s.cols, eps);
    Vec dx(x.size());
    cpu::rms_norm_backward(dx.data(), R.data(), x.data(), rs.data(), s.rows, s.cols, false);
    auto loss = [&] { return dot(rms_ref(x, s.rows, s.cols, eps), R); };
    EXPECT_LT(fd_err(x, dx, loss), tol::kFiniteDiff);
    // Accumulate adds exactly the same gradient onto what is there.
    const Vec prior = randn(s.rows * s.cols, 4);
    Vec acc = prior;
    cpu::rms_norm_backward(acc.data(), R.data(), x.data(), rs.data(), s.rows, s.cols, true);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] -= prior[i];
    EXPECT_LT(rel_err(acc, dx), tol::kDouble);
    // float against the double gradient; and dx aliasing dy.
    FVec xf = to_f(x), Rf = to_f(R), yf(x.size()), rsf(size_t(s.rows));
    cpu::rms_norm_forward(yf.data(), rsf.data(), xf.data(), s.rows, s.cols, float(eps));
    cpu::rms_norm_backward(Rf.data(), Rf.data(), xf.data(), rsf.data(), s.rows, s.cols, false);
    EXPECT_LT(rel_err(Rf, dx), tol::kFloat);
  }
}

// ---- head_norm_rotary -----------------------------------------------------------------------

// Straight from SPEC: rms_norm over D, then rotate pairs (j, j + D/2) by t * base^(-2j/D).
Vec hnr_ref(const Vec& x, int64_t N, int64_t T, int64_t H, int64_t D, double eps) {
  const Vec xn = rms_ref(x, N * H, D, eps);
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < D / 2; ++j) {
        const double ang = double(n % T) * std::pow(10000.0, -2.0 * double(j) / double(D));
        const int64_t o = (n * H + h) * D;
        const double x1 = xn[o + j], x2 = xn[o + j + D / 2];
        y[o + j] = x1 * std::cos(ang) + x2 * std::sin(ang);
        y[o + j + D / 2] = -x1 * std::sin(ang) + x2 * std::cos(ang);
      }
  return y;
}

struct HeadShape {
  int64_t N, T, H, D;
};
std::string name(const HeadShape& s) {
  std::ostringstream os;
  os << "N=" << s.N << " T=" << s.T << " H=" << s.H << " D=" << s.D;
  return os.str();
}
const HeadShape kHeadShapes[] = {{10, 5, 3, 32}, {10, 5, 2, 30}, {4, 4, 1, 128}, {1, 1, 2, 8}};

TEST(HeadNormRotary, TablesMatchExactMathInDouble) {
  const int64_t T = 37, D = 32;
  Vec c(size_t(T * D / 2)), s(size_t(T * D / 2));
  cpu::rotary_tables(c.data(), s.data(), T, D, 10000.0);
  Vec cr(c.size()), sr(s.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < D / 2; ++j) {
      const double ang = double(t) / std::pow(10000.0, 2.0 * double(j) / double(D));
      cr[size_t(t * D / 2 + j)] = std::cos(ang);
      sr[size_t(t * D / 2 + j)] = std::sin(ang);
    }
  EXPECT_LT(rel_err(c, cr), tol::kDouble);
  EXPECT_LT(rel_err(s, sr), tol::kDouble);
}

TEST(HeadNormRotary, FloatTablesRoundLikePyTorch) {
  // PyTorch: inv_freq = (1/base) ** (arange(0, D, 2) / D) and t * inv_freq in fp32.
  const int64_t T = 4096, D = 128;
  FVec c(size_t(T * D / 2)), s(size_t(T * D / 2));
  cpu::rotary_tables(c.data(), s.data(), T, D, 10000.0);
  int64_t differs_from_exact = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < D / 2; ++j) {
      const float inv = std::pow(1.0f / 10000.0f, float(2 * j) / float(D));
      const float ang = float(t) * inv;
      ASSERT_EQ(c[size_t(t * D / 2 + j)], float(std::cos(double(ang)))) << t << " " << j;
      ASSERT_EQ(s[size_t(t * D / 2 + j)], float(std::sin(double(ang)))) << t << " " << j;
      const double exact = double(t) * std::pow(10000.0, -2.0 * double(j) / double(D));
      differs_from_exact += c[size_t(t * D / 2 + j)] != float(std::cos(exact));
    }
  // The fp32 angle really is what the tables hold (an exact-angle table would differ).
  EXPECT_GT(differs_from_exact, 1000);
}

TEST(HeadNormRotary, ForwardMatchesNaiveDoubleAndFloat) {
  const double eps = 1e-6;
  for (const HeadShape& hs : kHeadShapes) {
    SCOPED_TRACE(name(hs));
    const int64_t n = hs.N * hs.H * hs.D, half = hs.D / 2;
    const Vec x = randn(n, 5, 2.0);
    const Vec ref = hnr_ref(x, hs.N, hs.T, hs.H, hs.D, eps);
    Vec c(size_t(hs.T * half)), s(c.size()), y(static_cast<size_t>(n)), rs(size_t(hs.N * hs.H));
    cpu::rotary_tables(c.data(), s.data(), hs.T, hs.D, 10000.0);
    cpu::head_norm_rotary_forward(y.data(), rs.data(), x.data(), c.data(), s.data(), hs.N, hs.T,
                                  hs.H, hs.D, eps);
    EXPECT_LT(rel_err(y, ref), tol::kDouble);
    Vec rs_ref;
    rms_ref(x, hs.N * hs.H, hs.D, eps, &rs_ref);
    EXPECT_LT(rel_err(rs, rs_ref), tol::kDouble);

    FVec cf(c.size()), sf(c.size()), xf = to_f(x), yf(static_cast<size_t>(n)), rsf(rs.size());
    cpu::rotary_tables(cf.data(), sf.data(), hs.T, hs.D, 10000.0);
    cpu::head_norm_rotary_forward(yf.data(), rsf.data(), xf.data(), cf.data(), sf.data(), hs.N,
                                  hs.T, hs.H, hs.D, float(eps));
    EXPECT_LT(rel_err(yf, ref), tol::kFloat);
    cpu::head_norm_rotary_forward(xf.data(), rsf.data(), xf.data(), cf.data(), sf.data(), hs.N,
                                  hs.T, hs.H, hs.D, float(eps));
    EXPECT_EQ(xf, yf);  // in place
  }
}

TEST(HeadNormRotary, BackwardFiniteDifferences) {
  const double eps = 1e-6;
  for (const HeadShape& hs : kHeadShapes) {
    SCOPED_TRACE(name(hs));
    const int64_t n = hs.N * hs.H * hs.D, half = hs.D / 2;
    Vec x = randn(n, 6);
    const Vec R = randn(n, 7);
    Vec c(size_t(hs.T * half)), s(c.size()), y(static_cast<size_t>(n)), rs(size_t(hs.N * hs.H)), dx(static_cast<size_t>(n));
    cpu::rotary_tables(c.data(), s.data(), hs.T, hs.D, 10000.0);
    cpu::head_norm_rotary_forward(y.data(), rs.data(), x.data(), c.data(), s.data(), hs.N, hs.T,
                                  hs.H, hs.D, eps);
    std::fill(dx.begin(), dx.end(), 123.0);  // assigned, not accumulated
    cpu::head_norm_rotary_backward(dx.data(), R.data(), x.data(), rs.data(), c.data(), s.data(),
                                   hs.N, hs.T, hs.H, hs.D);
    auto loss = [&] { return dot(hnr_ref(x, hs.N, hs.T, hs.H, hs.D, eps), R); };
    EXPECT_LT(fd_err(x, dx, loss, 400), tol::kFiniteDiff);

    FVec cf(c.size()), sf(c.size()), xf = to_f(x), Rf = to_f(R), yf(static_cast<size_t>(n)), rsf(rs.size());
    cpu::rotary_tables(cf.data(), sf.data(), hs.T, hs.D, 10000.0);
    cpu::head_norm_rotary_forward(yf.data(), rsf.data(), xf.data(), cf.data(), sf.data(), hs.N,
                                  hs.T, hs.H, hs.D, float(eps));
    cpu::head_norm_rotary_backward(Rf.data(), Rf.data(), xf.data(), rsf.data(), cf.data(),
                                   sf.data(), hs.N, hs.T, hs.H, hs.D);  // dx aliases dy
    EXPECT_LT(rel_err(Rf, dx), tol::kFloat);
  }
}

TEST(HeadNormRotary, OddHeadDimThrows) {
  Vec c(10), s(10);
  EXPECT_THROW(cpu::rotary_tables(c.data(), s.data(), 2, 5, 10000.0), Error);
}

// ---- relu_squared -------------------------------------------------------------------------

TEST(ReluSquared, ForwardBackward) {
  for (int64_t n : {1, 31, 32, 33, 100003}) {
    SCOPED_TRACE(n);
    Vec x = randn(n, 8);
    x[0] = 0.0;
    const Vec R = randn(n, 9);
    Vec ref(static_cast<size_t>(n)), y(static_cast<size_t>(n)), dx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ref[i] = x[i] > 0 ? x[i] * x[i] : 0.0;
    cpu::relu_squared_forward(y.data(), x.data(), n);
    EXPECT_LT(rel_err(y, ref), tol::kDouble);
    FVec xf = to_f(x), yf(static_cast<size_t>(n));
    cpu::relu_squared_forward(yf.data(), xf.data(), n);
    EXPECT_LT(rel_err(yf, ref), tol::kFloat);

    cpu::relu_squared_backward(dx.data(), R.data(), y.data(), n);  // from the output
    auto loss = [&] {
      double l = 0;
      for (int64_t i = 0; i < n; ++i) l += (x[i] > 0 ? x[i] * x[i] : 0.0) * R[i];
      return l;
    };
    EXPECT_LT(fd_err(x, dx, loss), tol::kFiniteDiff);
    FVec Rf = to_f(R);
    cpu::relu_squared_backward(Rf.data(), Rf.data(), yf.data(), n);  // dx aliases dy
    EXPECT_LT(rel_err(Rf, dx), tol::kFloat);
    // The same bits as 2 relu(x) dy from the input, in both precisions.
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(dx[size_t(i)], (x[size_t(i)] + std::fabs(x[size_t(i)])) * R[size_t(i)]) << i;
      const float xi = xf[size_t(i)], ri = float(R[size_t(i)]);
      EXPECT_EQ(Rf[size_t(i)], (xi + std::fabs(xi)) * ri) << i;
    }
  }
}

// The backward takes relu(x) as sqrt(relu(x)^2): exact wherever the square is a normal
// number, since the correctly rounded root of a correctly rounded square is the number
// (radix 2). Every fp32 in [1, 2) (scaling by 2 scales the square by 4 exactly, so this is
// every normal exponent), and fp64 samples across the exponents the model sees.
TEST(ReluSquared, TheRootOfTheRoundedSquareIsTheNumber) {
  int64_t wrong = 0;
  for (uint32_t m = 0; m < (1u << 23); ++m) {
    const float x = std::bit_cast<float>(0x3f800000u | m);
    wrong += std::sqrt(x * x) != x;
  }
  EXPECT_EQ(wrong, 0);
  Rng rng(5);
  for (int i = 0; i < 1000000; ++i) {
    const double x = std::ldexp(1.0 + rng.uniform(), int(rng.uniform() * 120) - 60);
    ASSERT_EQ(std::sqrt(x * x), x) << x;
    const float f = float(x);
    ASSERT_EQ(std::sqrt(f * f), f) << f;
  }
}

TEST(ReluSquared, NanPropagates) {
  float x[2] = {NAN, -1.0f}, y[2];
  cpu::relu_squared_forward(y, x, 2);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 0.0f);
}

// ---- scaled_sum ---------------------------------------------------------------------------

TEST(ScaledSum, ForwardMatchesNaive) {
  for (int64_t n : {1, 31, 33, 70001}) {
    SCOPED_TRACE(n);
    const Vec x = randn(n, 10), y = randn(n, 11);
    const double a = 0.75, b = -1.25;
    Vec ref(static_cast<size_t>(n)), out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ref[i] = a * x[i] + b * y[i];
    cpu::scaled_sum_forward(out.data(), x.data(), a, y.data(), b, n);
    EXPECT_LT(rel_err(out, ref), tol::kDouble);
    FVec xf = to_f(x), yf = to_f(y), of(static_cast<size_t>(n));
    cpu::scaled_sum_forward(of.data(), xf.data(), float(a), yf.data(), float(b), n);
    EXPECT_LT(rel_err(of, ref), tol::kFloat);
    // out aliasing x, then y.
    FVec x2 = xf, y2 = yf;
    cpu::scaled_sum_forward(x2.data(), x2.data(), float(a), yf.data(), float(b), n);
    cpu::scaled_sum_forward(y2.data(), xf.data(), float(a), y2.data(), float(b), n);
    EXPECT_EQ(x2, of);
    EXPECT_EQ(y2, of);
  }
}

TEST(ScaledSum, BackwardFiniteDifferencesIncludingScalars) {
  for (int64_t n : {1, 33, 70001}) {
    SCOPED_TRACE(n);
    Vec x = randn(n, 12), y = randn(n, 13), R = randn(n, 14);
    Vec ab = {0.6, -1.7};
    auto loss = [&] {
      double l = 0;
      for (int64_t i = 0; i < n; ++i) l += (ab[0] * x[i] + ab[1] * y[i]) * R[i];
      return l;
    };
    Vec dx(static_cast<size_t>(n), 9.0), dy(static_cast<size_t>(n), 9.0);
    auto [ga, gb] = cpu::scaled_sum_backward(dx.data(), false, dy.data(), false, R.data(), ab[0],
                                             x.data(), ab[1], y.data(), n);
    EXPECT_LT(fd_err(x, dx, loss), tol::kFiniteDiff);
    EXPECT_LT(fd_err(y, dy, loss), tol::kFiniteDiff);
    EXPECT_LT(fd_err(ab, Vec{ga, gb}, loss), tol::kFiniteDiff);
    EXPECT_LT(rel_err(Vec{ga, gb}, Vec{dot(R, x), dot(R, y)}), tol::kDouble);

    // float: the returned dots are double sums of float products.
    FVec xf = to_f(x), yf = to_f(y), Rf = to_f(R), dxf(static_cast<size_t>(n)), dyf(static_cast<size_t>(n));
    auto [gaf, gbf] = cpu::scaled_sum_backward(dxf.data(), false, dyf.data(), false, Rf.data(),
                                               float(ab[0]), xf.data(), float(ab[1]), yf.data(), n);
    EXPECT_LT(rel_err(dxf, dx), tol::kFloat);
    EXPECT_LT(rel_err(dyf, dy), tol::kFloat);
    EXPECT_LT(rel_err(Vec{gaf, gbf}, Vec{ga, gb}), tol::kDouble);
  }
}

TEST(ScaledSum, BackwardAccumulateNullAndAliasing) {
  const int64_t n = 40000;
  const Vec x = randn(n, 15), y = randn(n, 16), d = randn(n, 17), p = randn(n, 18);
  const double a = 0.3, b = 2.5;
  // Accumulate into separate buffers.
  Vec dx = p, dy = p;
  cpu::scaled_sum_backward(dx.data(), true, dy.data(), true, d.data(), a, x.data(), b, y.data(), n);
  Vec rx(static_cast<size_t>(n)), ry(static_cast<size_t>(n)), rboth(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    rx[i] = p[i] + a * d[i];
    ry[i] = p[i] + b * d[i];
    rboth[i] = (p[i] + a * d[i]) + b * d[i];
  }
  EXPECT_LT(rel_err(dx, rx), tol::kDouble);
  EXPECT_LT(rel_err(dy, ry), tol::kDouble);
  // dx and dy the same buffer (both accumulate): dx[i] += a*d, then dy[i] += b*d, bit-exact.
  Vec both = p;
  cpu::scaled_sum_backward(both.data(), true, both.data(), true, d.data(), a, x.data(), b,
                           y.data(), n);
  EXPECT_EQ(both, rboth);
  // The same buffer with an assigning side is refused.
  EXPECT_THROW(cpu::scaled_sum_backward(both.data(), false, both.data(), true, d.data(), a,
                                        x.data(), b, y.data(), n),
               Error);
  // dx aliasing dout (assign): the dots still see the incoming gradient.
  Vec dd = d, dy2(static_cast<size_t>(n));
  auto [ga, gb] = cpu::scaled_sum_backward(dd.data(), false, dy2.data(), false, dd.data(), a,
                                           x.data(), b, y.data(), n);
  EXPECT_LT(rel_err(Vec{ga, gb}, Vec{dot(d, x), dot(d, y)}), tol::kDouble);
  Vec ax(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ax[i] = a * d[i];
  EXPECT_LT(rel_err(dd, ax), tol::kDouble);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(dy2[i], b * d[i]);
  // Null outputs and inputs: skipped, and the missing dot is 0.
  Vec only_y = p;
  auto [g0, g1] = cpu::scaled_sum_backward<double>(nullptr, false, only_y.data(), true, d.data(),
                                                   a, nullptr, b, y.data(), n);
  EXPECT_EQ(g0, 0.0);
  EXPECT_LT(std::fabs(g1 - dot(d, y)) / std::max(1.0, std::fabs(g1)), tol::kDouble);
  EXPECT_LT(rel_err(only_y, ry), tol::kDouble);
}

TEST(ScaledSum, BackwardBitIdenticalAcrossThreadCounts) {
  const int64_t n = 1000003;  // many chunks, a ragged last one
  const FVec x = to_f(randn(n, 19)), y = to_f(randn(n, 20)), d = to_f(randn(n, 21));
  const int saved = omp_get_max_threads();
  std::vector<std::pair<double, double>> res;
  std::vector<FVec> grads;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    FVec dx(static_cast<size_t>(n), 1.0f), dy(static_cast<size_t>(n), 2.0f);
    res.push_back(cpu::scaled_sum_backward(dx.data(), true, dy.data(), false, d.data(), 0.5f,
                                           x.data(), -0.25f, y.data(), n));
    grads.push_back(dx);
    grads.push_back(dy);
  }
  omp_set_num_threads(saved);
  for (size_t k = 1; k < res.size(); ++k) {
    EXPECT_EQ(res[k].first, res[0].first);  // bit-identical, not merely close
    EXPECT_EQ(res[k].second, res[0].second);
    EXPECT_EQ(grads[2 * k], grads[0]);
    EXPECT_EQ(grads[2 * k + 1], grads[1]);
  }
}

// ---- row tanh / exp (the loss's vectorised math) ----------------------------------------

TEST(VecMath, FloatRowsMatchExactMath) {
  // 8 ulp of fp32 (libmvec promises <= 4): a wrong vector ABI or lane order fails by far more.
  const double ulp8 = 8 * 5.96e-8;
  for (int64_t n : {1, 7, 8, 9, 1000, 1003}) {
    SCOPED_TRACE(n);
    const Vec x = randn(n, 40, 40.0);
    FVec xf = to_f(x), th(static_cast<size_t>(n)), e(static_cast<size_t>(n));
    const float m = cpu::tanh_div_max(th.data(), xf.data(), 30.0f, n);
    double mref = -1;
    for (int64_t i = 0; i < n; ++i) {
      const double t = std::tanh(double(xf[i] / 30.0f));
      ASSERT_LE(std::fabs(th[i] - t), ulp8 * std::max(std::fabs(t), 1e-30)) << i;
      mref = std::max(mref, double(th[i]));
    }
    EXPECT_EQ(double(m), mref);
    const double sum = cpu::exp_affine_sum(e.data(), th.data(), 30.0f, m * 30.0f, n);  // b = 30*m
    double sref = 0;
    for (int64_t i = 0; i < n; ++i) {
      // The fp32 argument 30*th - b (b = 30*m rounded) carries an ulp of its terms, fused
      // or not: an absolute error of up to 2^-24 * (|30 th| + |b|) in the exponent.
      const float b = m * 30.0f;
      const double arg = 30.0 * th[i] - double(b);
      const double ex = std::exp(arg);
      const double arg_err = 5.96e-8 * (30.0 * std::fabs(th[i]) + std::fabs(b));
      ASSERT_LE(std::fabs(e[i] - ex), (ulp8 + arg_err) * ex) << i;
      sref += double(e[i]);
    }
    EXPECT_NEAR(sum, sref, 1e-12 * sref);
  }
}

// ---- softcap cross entropy ----------------------------------------------------------------

// losses[r] = logsumexp(z_r) - z_r[t_r], z = cap*tanh(l/cap), in plain double.
Vec ce_ref(const Vec& l, const std::vector<int32_t>& tg, int64_t R, int64_t V, double cap) {
  Vec loss(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    double m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, cap * std::tanh(l[r * V + v] / cap));
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(cap * std::tanh(l[r * V + v] / cap) - m);
    loss[r] = m + std::log(s) - cap * std::tanh(l[r * V + tg[r]] / cap);
  }
  return loss;
}

TEST(CrossEntropy, ForwardMatchesNaiveAndTargetIsArgmax) {
  const double cap = 30.0;
  for (int64_t V : {31, 32, 33, 50304}) {
    SCOPED_TRACE(V);
    const int64_t R = V > 1000 ? 3 : 9;
    const Vec l = randn(R * V, 22, 8.0);
    std::vector<int32_t> tg(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) tg[r] = int32_t((r * 7919) % V);
    // Row 0: the target has the largest logit.
    tg[0] = int32_t(std::max_element(l.begin(), l.begin() + V) - l.begin());
    const Vec ref = ce_ref(l, tg, R, V, cap);
    Vec ld = l, loss(static_cast<size_t>(R));
    cpu::softcap_cross_entropy(ld.data(), loss.data(), tg.data(), R, V, cap, 1.0, false);
    EXPECT_LT(rel_err(loss, ref), tol::kDouble);
    EXPECT_EQ(ld, l);  // forward only: logits untouched
    EXPECT_GT(loss[0], 0.0);
    EXPECT_LT(loss[0], std::log(double(V)));  // the argmax target beats the uniform guess
    FVec lf = to_f(l), lossf(static_cast<size_t>(R));
    cpu::softcap_cross_entropy(lf.data(), lossf.data(), tg.data(), R, V, float(cap), 1.0f, false);
    EXPECT_LT(rel_err(lossf, ref), tol::kFloat);
  }
}

TEST(CrossEntropy, BackwardFiniteDifferences) {
  const double cap = 30.0, gs = 0.37;
  for (int64_t V : {31, 32, 33}) {
    SCOPED_TRACE(V);
    const int64_t R = 4;
    Vec l = randn(R * V, 23, 20.0);  // reaches into tanh's curved part
    std::vector<int32_t> tg = {0, int32_t(V - 1), 5, 17};
    Vec g = l, loss(static_cast<size_t>(R));
    cpu::softcap_cross_entropy(g.data(), loss.data(), tg.data(), R, V, cap, gs, true);
    auto L = [&] {
      const Vec lr = ce_ref(l, tg, R, V, cap);
      double s = 0;
      for (double x : lr) s += x;
      return gs * s;
    };
    EXPECT_LT(fd_err(l, g, L), tol::kFiniteDiff);
    // Each row's gradient w.r.t. z sums to zero, so the softcapped one is small but not zero.
    FVec lf = to_f(l), lossf(static_cast<size_t>(R));
    cpu::softcap_cross_entropy(lf.data(), lossf.data(), tg.data(), R, V, float(cap), float(gs),
                               true);
    EXPECT_LT(rel_err(lf, g), tol::kFloat);
  }
}

TEST(CrossEntropy, SaturatedLogitsStayFinite) {
  const double cap = 30.0;
  const int64_t R = 2, V = 33;
  Vec l(size_t(R * V));
  for (int64_t i = 0; i < R * V; ++i) l[i] = (i % 3 == 0 ? 1e30 : -1e30) * (1 + i % 5);
  std::vector<int32_t> tg = {0, 1};  // row 0: a saturated top logit; row 1: a bottom one
  const Vec ref = ce_ref(l, tg, R, V, cap);
  FVec lf = to_f(l), loss(static_cast<size_t>(R));
  cpu::softcap_cross_entropy(lf.data(), loss.data(), tg.data(), R, V, float(cap), 1.0f, true);
  for (float x : loss) EXPECT_TRUE(std::isfinite(x));
  for (float x : lf) EXPECT_TRUE(std::isfinite(x));
  EXPECT_LT(rel_err(loss, ref), tol::kFloat);
  // 11 of 33 logits tie at z = +30: row 0's loss is log(11), row 1's adds the 60 gap.
  EXPECT_NEAR(loss[0], std::log(11.0), 1e-5);
  EXPECT_NEAR(loss[1], std::log(11.0) + 60.0, 1e-4);
}

TEST(CrossEntropy, TargetOutsideVocabularyThrows) {
  Vec l(2 * 5, 0.0), loss = {-1, -1};
  std::vector<int32_t> bad_hi = {0, 5}, bad_lo = {-1, 0};
  EXPECT_THROW(cpu::softcap_cross_entropy(l.data(), loss.data(), bad_hi.data(), 2, 5, 30.0, 1.0,
                                          true),
               Error);
  EXPECT_THROW(cpu::softcap_cross_entropy(l.data(), loss.data(), bad_lo.data(), 2, 5, 30.0, 1.0,
                                          false),
               Error);
  EXPECT_EQ(loss, (Vec{-1, -1}));  // nothing written
  EXPECT_EQ(l, Vec(10, 0.0));
}

// ---- embedding ----------------------------------------------------------------------------

TEST(Embedding, ForwardGathersAndBackwardScatterAdds) {
  for (int64_t C : {31, 32, 33, 768}) {
    SCOPED_TRACE(C);
    const int64_t V = 11, N = 1025;
    std::vector<int32_t> tok(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) tok[n] = int32_t((n * n + 3) % V);  // many repeats
    Vec wte = randn(V * C, 24);
    Vec out(size_t(N * C));
    cpu::embedding_forward(out.data(), tok.data(), wte.data(), N, C);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) ASSERT_EQ(out[n * C + c], wte[tok[n] * C + c]);

    const Vec R = randn(N * C, 25);
    const Vec prior = randn(V * C, 26);
    Vec dwte = prior;
    cpu::embedding_backward(dwte.data(), tok.data(), R.data(), N, C);
    for (size_t i = 0; i < dwte.size(); ++i) dwte[i] -= prior[i];
    auto loss = [&] {
      double l = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) l += wte[tok[n] * C + c] * R[n * C + c];
      return l;
    };
    EXPECT_LT(fd_err(wte, dwte, loss, 64), tol::kFiniteDiff);

    FVec dwf(size_t(V * C), 0.0f), Rf = to_f(R);
    cpu::embedding_backward(dwf.data(), tok.data(), Rf.data(), N, C);
    EXPECT_LT(rel_err(dwf, dwte), tol::kFloat);
  }
}

TEST(Embedding, BackwardBitIdenticalAcrossThreadCounts) {
  const int64_t V = 50, N = 4099, C = 768;
  std::vector<int32_t> tok(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) tok[n] = int32_t((n * 31) % V);
  const FVec d = to_f(randn(N * C, 27));
  const int saved = omp_get_max_threads();
  std::vector<FVec> res;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    FVec dw(size_t(V * C), 0.5f);
    cpu::embedding_backward(dw.data(), tok.data(), d.data(), N, C);
    res.push_back(dw);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(res[1], res[0]);
  EXPECT_EQ(res[2], res[0]);
}

// ---- Adam ---------------------------------------------------------------------------------

TEST(Adam, ThreeStepsMatchTheFormula) {
  const int64_t n = 1027;
  const double lr = 0.04, b1 = 0.8, b2 = 0.95, eps = 1e-8;
  Vec p = randn(n, 28), m(static_cast<size_t>(n), 0.0), v(static_cast<size_t>(n), 0.0);
  Vec rp = p, rm = m, rv = v;
  FVec pf = to_f(p), mf(static_cast<size_t>(n), 0.0f), vf(static_cast<size_t>(n), 0.0f);
  for (int64_t step = 1; step <= 3; ++step) {
    const Vec g = randn(n, 100 + uint64_t(step));
    for (int64_t i = 0; i < n; ++i) {
      rm[i] = b1 * rm[i] + (1 - b1) * g[i];
      rv[i] = b2 * rv[i] + (1 - b2) * g[i] * g[i];
      const double bc1 = 1 - std::pow(b1, double(step)), bc2 = 1 - std::pow(b2, double(step));
      rp[i] -= (lr / bc1) * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + eps);
    }
    if (step == 1) {
      // Bias correction at t=1: the first update is lr * g/(|g| + eps), whatever |g|.
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(rp[i], p[i] - lr * (g[i] > 0 ? 1 : -1), lr * (2 * eps / std::fabs(g[i]) + 1e-12));
    }
    cpu::adam_step(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, step);
    const FVec gf = to_f(g);
    cpu::adam_step(pf.data(), gf.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, step);
    EXPECT_LT(rel_err(p, rp), tol::kDouble);
    EXPECT_LT(rel_err(m, rm), tol::kDouble);
    EXPECT_LT(rel_err(v, rv), tol::kDouble);
    EXPECT_LT(rel_err(pf, rp), tol::kFloat);
  }
}

TEST(Adam, ZeroGradientKeepsParameters) {
  const int64_t n = 33;
  const FVec p0 = to_f(randn(n, 29));
  FVec p = p0, g(static_cast<size_t>(n), 0.0f), m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  for (int64_t step = 1; step <= 3; ++step)
    cpu::adam_step(p.data(), g.data(), m.data(), v.data(), n, 0.6, 0.8, 0.95, 1e-8, step);
  EXPECT_EQ(p, p0);
  EXPECT_THROW(cpu::adam_step(p.data(), g.data(), m.data(), v.data(), n, 0.6, 0.8, 0.95, 1e-8, 0),
               Error);
}

// ---- Muon -----------------------------------------------------------------------------------

TEST(Muon, NesterovMomentumOverThreeSteps) {
  const int64_t n = 70001;
  const double mu = 0.9;
  Vec buf(static_cast<size_t>(n), 0.0), rbuf = buf;
  FVec buff(static_cast<size_t>(n), 0.0f);
  for (int step = 0; step < 3; ++step) {
    const Vec g = randn(n, 200 + uint64_t(step));
    Vec out(static_cast<size_t>(n)), rout(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      rbuf[i] = mu * rbuf[i] + g[i];
      rout[i] = g[i] + mu * rbuf[i];
    }
    cpu::muon_momentum(out.data(), buf.data(), g.data(), n, mu);
    EXPECT_LT(rel_err(out, rout), tol::kDouble);
    EXPECT_LT(rel_err(buf, rbuf), tol::kDouble);
    FVec gf = to_f(g);
    cpu::muon_momentum(gf.data(), buff.data(), gf.data(), n, float(mu));  // out aliases g
    EXPECT_LT(rel_err(gf, rout), tol::kFloat);
    EXPECT_LT(rel_err(buff, rbuf), tol::kFloat);
  }
}

TEST(Muon, Axpy) {
  const int64_t n = 40001;
  const Vec x = randn(n, 30), y0 = randn(n, 31);
  Vec y = y0, ref(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ref[i] = y0[i] - 0.05 * x[i];
  cpu::axpy(y.data(), x.data(), -0.05, n);
  EXPECT_LT(rel_err(y, ref), tol::kDouble);
}

// The record's zeropower_via_newtonschulz5 as plain triple loops in double.
Vec ns5_ref(const Vec& G, int64_t rows, int64_t cols, int steps) {
  const bool tr = rows > cols;
  const int64_t m = tr ? cols : rows, k = tr ? rows : cols;
  Vec X(G.size());
  double nrm = 0;
  for (double g : G) nrm += g * g;
  nrm = std::sqrt(nrm) + 1e-7;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      (tr ? X[j * rows + i] : X[i * cols + j]) = G[i * cols + j] / nrm;
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  for (int s = 0; s < steps; ++s) {
    Vec A(size_t(m * m), 0.0), AA(size_t(m * m), 0.0), B(size_t(m * m)), Xn(X.size());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t l = 0; l < k; ++l) A[i * m + j] += X[i * k + l] * X[j * k + l];
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t l = 0; l < m; ++l) AA[i * m + j] += A[i * m + l] * A[l * m + j];
    for (size_t i = 0; i < B.size(); ++i) B[i] = b * A[i] + c * AA[i];
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double s2 = 0;
        for (int64_t l = 0; l < m; ++l) s2 += B[i * m + l] * X[l * k + j];
        Xn[i * k + j] = a * X[i * k + j] + s2;
      }
    X = Xn;
  }
  Vec out(G.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * cols + j] = tr ? X[j * rows + i] : X[i * cols + j];
  return out;
}

const Shape kNsShapes[] = {{8, 24}, {24, 8}, {16, 16}};

TEST(NewtonSchulz5, DoubleMatchesNaiveTripleLoops) {
  for (const Shape& s : kNsShapes) {
    SCOPED_TRACE(name(s));
    const Vec G = randn(s.rows * s.cols, 32, 0.02);
    const Vec ref = ns5_ref(G, s.rows, s.cols, 5);
    Vec X(G.size());
    cpu::newton_schulz5(X.data(), G.data(), s.rows, s.cols, 5, false);
    EXPECT_LT(rel_err(X, ref), 1e-10);  // only summation order differs, over 5 iterations
    // X may alias G.
    Vec Y = G;
    cpu::newton_schulz5(Y.data(), Y.data(), s.rows, s.cols, 5, false);
    EXPECT_EQ(Y, X);
  }
}

TEST(NewtonSchulz5, FloatAndBf16AgainstDouble) {
  for (const Shape& s : kNsShapes) {
    SCOPED_TRACE(name(s));
    const Vec G = randn(s.rows * s.cols, 33, 0.02);
    Vec X(G.size());
    cpu::newton_schulz5(X.data(), G.data(), s.rows, s.cols, 5, false);
    FVec Gf = to_f(G), Xf(G.size()), Xb(G.size());
    cpu::newton_schulz5(Xf.data(), Gf.data(), s.rows, s.cols, 5, false);
    // fp32: each step's A, AA and BX carry ~1e-7 relative error that the quintic's slope
    // (up to a = 3.44 for small singular values) amplifies; measured <= 1.2e-6 over 40 seeds.
    EXPECT_LT(rel_err(Xf, X), tol::kFloat);
    cpu::newton_schulz5(Xb.data(), Gf.data(), s.rows, s.cols, 5, true);
    // bf16 emulation: ~16 roundings of whole matrices to 8 mantissa bits (2^-9 relative
    // each), amplified by the iteration like the fp32 case: measured <= 2.7e-2 of the
    // largest entry over 40 seeds, so kBf16 (one rounding's worth) is too tight; 5e-2 still
    // rejects a missed step or a wrong coefficient, which move entries by O(0.1-1).
    const double eb = rel_err(Xb, X);
    EXPECT_LT(eb, 5e-2);
    EXPECT_GT(eb, 1e-4);  // the rounding really happened
    for (float v : Xb) ASSERT_EQ(v, round_bf16(v));  // results are bf16 values
  }
}

// Eigenvalues of a symmetric [n, n] matrix by cyclic Jacobi rotations.
Vec sym_eigenvalues(Vec A, int64_t n) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) off += A[i * n + j] * A[i * n + j];
    if (off < 1e-26) break;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        if (std::fabs(A[p * n + q]) < 1e-300) continue;
        const double th = (A[q * n + q] - A[p * n + p]) / (2 * A[p * n + q]);
        const double t = (th >= 0 ? 1 : -1) / (std::fabs(th) + std::sqrt(th * th + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q
          const double akp = A[k * n + p], akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q
          const double apk = A[p * n + k], aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
      }
  }
  Vec ev(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ev[i] = A[i * n + i];
  return ev;
}

TEST(NewtonSchulz5, SingularValuesLandInTheQuinticBand) {
  // Iterating p(s) = a s + b s^3 + c s^5 from any s in (0, 1] settles in a band around 1:
  // [0.68, 1.14] for the record's (a, b, c). A wrong coefficient or sign lands elsewhere
  // (p(1) = a + b + c = 0.701, so a slip in any one moves the band or diverges).
  for (const Shape& s : kNsShapes) {
    SCOPED_TRACE(name(s));
    const Vec G = randn(s.rows * s.cols, 34);
    Vec X(G.size());
    cpu::newton_schulz5(X.data(), G.data(), s.rows, s.cols, 30, false);
    const int64_t m = std::min(s.rows, s.cols), k = std::max(s.rows, s.cols);
    const bool tr = s.rows > s.cols;
    // Gram of the short side: its eigenvalues are the squared singular values.
    auto at = [&](const Vec& M, int64_t i, int64_t l) {
      return tr ? M[l * s.cols + i] : M[i * s.cols + l];
    };
    Vec gram(size_t(m * m), 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t l = 0; l < k; ++l) gram[i * m + j] += at(X, i, l) * at(X, j, l);
    for (double ev : sym_eigenvalues(gram, m)) {
      EXPECT_GT(std::sqrt(ev), 0.68);
      EXPECT_LT(std::sqrt(ev), 1.14);
    }
    // Same singular vectors as G: X^T G (short side) = V S' S V^T is symmetric positive.
    Vec xg(size_t(m * m), 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < m; ++j)
        for (int64_t l = 0; l < k; ++l) xg[i * m + j] += at(X, i, l) * at(G, j, l);
    double asym = 0, scale = 0;
    for (int64_t i = 0; i < m; ++i) {
      EXPECT_GT(xg[i * m + i], 0.0);
      for (int64_t j = 0; j < m; ++j) {
        asym = std::max(asym, std::fabs(xg[i * m + j] - xg[j * m + i]));
        scale = std::max(scale, std::fabs(xg[i * m + j]));
      }
    }
    EXPECT_LT(asym, 1e-8 * scale);
  }
}

TEST(NewtonSchulz5, ZeroStepsNormalisesAndRepeatedCallsAgree) {
  const Vec G = randn(24 * 8, 35, 5.0);
  Vec X(G.size());
  cpu::newton_schulz5(X.data(), G.data(), 24, 8, 0, false);
  double f = 0;
  for (double v : X) f += v * v;
  EXPECT_NEAR(std::sqrt(f), 1.0, 1e-7);
  // Workspace reuse across sizes does not leak between calls.
  FVec Gf = to_f(G), a(G.size()), b(G.size()), big(size_t(48 * 40));
  cpu::newton_schulz5(a.data(), Gf.data(), 24, 8, 5, true);
  const FVec Gbig = to_f(randn(48 * 40, 36));
  cpu::newton_schulz5(big.data(), Gbig.data(), 48, 40, 5, true);
  cpu::newton_schulz5(b.data(), Gf.data(), 24, 8, 5, true);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace speedrun
