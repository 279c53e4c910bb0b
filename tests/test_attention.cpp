// Block mask and CPU block-sparse attention: the mask against a dense brute-force mask, the
// kernels in double against a naive dense O(T^2) double implementation, the backward by
// central finite differences, and the sparsity itself (skipped tiles are never read).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/block_mask.h"
#include "backend/cpu/attention/backward.h"
#include "backend/cpu/attention/forward.h"
#include "core/error.h"
#include "tolerances.h"

namespace speedrun {
namespace {

constexpr int32_t kEot = 50256;

// Tokens of T ids: ordinary ids, with EOT at the given positions.
std::vector<int32_t> tokens_with_eots(int64_t T, const std::vector<int64_t>& eots, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, 50000);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (auto& x : t) x = id(rng);
  for (int64_t p : eots) {
    if (p < T) t[size_t(p)] = kEot;
  }
  return t;
}

// Tokens with each position an EOT with probability p.
std::vector<int32_t> random_tokens(int64_t T, double p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::bernoulli_distribution is_eot(p);
  std::vector<int64_t> eots;
  for (int64_t i = 0; i < T; ++i) {
    if (is_eot(rng)) eots.push_back(i);
  }
  return tokens_with_eots(T, eots, seed + 1);
}

// The dense rule of SPEC.md "Mask", straight from the tokens.
struct DenseMask {
  std::vector<int32_t> doc;
  int64_t window;
  explicit DenseMask(const std::vector<int32_t>& tokens, int64_t w) : window(w) {
    int32_t d = 0;
    for (int32_t t : tokens) {
      d += t == kEot;
      doc.push_back(d);
    }
  }
  bool visible(int64_t i, int64_t j) const {
    return j <= i && i - j < window && doc[size_t(i)] == doc[size_t(j)];
  }
};

struct DocCase {
  std::string name;
  std::vector<int32_t> (*make)(int64_t T);
};

std::vector<DocCase> doc_cases() {
  return {
      {"single_document", [](int64_t T) { return tokens_with_eots(T, {}, 1); }},
      {"eot_at_0_and_adjacent",
       [](int64_t T) { return tokens_with_eots(T, {0, 5, 6, 7, 60, 61, 128, 129, 200}, 2); }},
      {"random_sparse", [](int64_t T) { return random_tokens(T, 0.01, 3); }},
      {"random_dense", [](int64_t T) { return random_tokens(T, 0.15, 4); }},
      {"every_token_eot", [](int64_t T) { return std::vector<int32_t>(size_t(T), kEot); }},
  };
}

// Checks one mask against the dense rule; returns through gtest failures.
void check_mask(const BlockMask& m, const std::vector<int32_t>& tokens, int64_t window,
                int64_t tile, const std::string& what) {
  const int64_t T = int64_t(tokens.size());
  const DenseMask dense(tokens, window);
  ASSERT_EQ(m.T, T) << what;
  ASSERT_EQ(m.tile, tile) << what;
  ASSERT_EQ(m.window, window) << what;
  ASSERT_EQ(m.doc, dense.doc) << what;
  const int64_t nb = (T + tile - 1) / tile;
  ASSERT_EQ(m.num_blocks(), nb) << what;
  ASSERT_EQ(int64_t(m.q_ptr.size()), nb + 1) << what;
  ASSERT_EQ(int64_t(m.k_ptr.size()), nb + 1) << what;
  ASSERT_EQ(m.q_ptr[0], 0) << what;
  ASSERT_EQ(m.k_ptr[0], 0) << what;
  ASSERT_EQ(size_t(m.q_ptr[size_t(nb)]), m.q_kv.size()) << what;
  ASSERT_EQ(m.q_full.size(), m.q_kv.size()) << what;
  ASSERT_EQ(size_t(m.k_ptr[size_t(nb)]), m.k_q.size()) << what;
  ASSERT_EQ(m.k_full.size(), m.k_q.size()) << what;
  ASSERT_EQ(m.k_q.size(), m.q_kv.size()) << what;

  // state[qb][kb]: 0 unlisted, 1 partial, 2 full, from the CSR lists; the CSC lists must
  // describe the same set with the same flags, both ascending.
  std::vector<int> state(size_t(nb * nb), 0);
  for (int64_t qb = 0; qb < nb; ++qb) {
    for (int32_t e = m.q_ptr[size_t(qb)]; e < m.q_ptr[size_t(qb) + 1]; ++e) {
      const int32_t kb = m.q_kv[size_t(e)];
      ASSERT_TRUE(kb >= 0 && kb < nb) << what;
      if (e > m.q_ptr[size_t(qb)]) {
        ASSERT_LT(m.q_kv[size_t(e) - 1], kb) << what << " CSR order";
      }
      state[size_t(qb * nb + kb)] = 1 + m.q_full[size_t(e)];
    }
  }
  int64_t csc_entries = 0;
  for (int64_t kb = 0; kb < nb; ++kb) {
    for (int32_t e = m.k_ptr[size_t(kb)]; e < m.k_ptr[size_t(kb) + 1]; ++e) {
      const int32_t qb = m.k_q[size_t(e)];
      ASSERT_TRUE(qb >= 0 && qb < nb) << what;
      if (e > m.k_ptr[size_t(kb)]) {
        ASSERT_LT(m.k_q[size_t(e) - 1], qb) << what << " CSC order";
      }
      ASSERT_EQ(state[size_t(qb * nb + kb)], 1 + m.k_full[size_t(e)])
          << what << " CSC block (" << qb << "," << kb << ") differs from CSR";
      ++csc_entries;
    }
  }
  ASSERT_EQ(csc_entries, int64_t(m.q_kv.size())) << what;

  int64_t full = 0, partial = 0;
  for (int64_t qb = 0; qb < nb; ++qb) {
    for (int64_t kb = 0; kb < nb; ++kb) {
      int64_t vis = 0, all = 0;
      for (int64_t i = qb * tile; i < std::min(T, (qb + 1) * tile); ++i)
        for (int64_t j = kb * tile; j < std::min(T, (kb + 1) * tile); ++j) {
          vis += dense.visible(i, j);
          ++all;
          ASSERT_EQ(m.visible(i, j), dense.visible(i, j)) << what << " visible(" << i << "," << j << ")";
        }
      const int s = state[size_t(qb * nb + kb)];
      // Exact classification: unlisted <=> no visible pair; full <=> every pair visible;
      // so a partial block has at least one visible and one hidden pair.
      if (s == 0) {
        EXPECT_EQ(vis, 0) << what << " unlisted block (" << qb << "," << kb << ")";
      }
      if (s == 1) {
        EXPECT_GT(vis, 0) << what << " partial block (" << qb << "," << kb << ") has no visible pair";
        EXPECT_LT(vis, all) << what << " partial block (" << qb << "," << kb << ") is entirely visible";
        ++partial;
      }
      if (s == 2) {
        EXPECT_EQ(vis, all) << what << " full block (" << qb << "," << kb << ")";
        ++full;
      }
    }
  }
  EXPECT_EQ(m.count_full(), full) << what;
  EXPECT_EQ(m.count_partial(), partial) << what;
}

TEST(BlockMask, MatchesDenseMaskOnRandomDocumentsWindowsAndTiles) {
  for (int64_t T : {1, 2, 127, 128, 129, 300, 1025}) {
    for (int64_t tile : {128, 64, 16, 1}) {
      if (tile == 1 && T > 300) continue;  // O(T^2) blocks: covered at the smaller T
      for (int64_t window : {int64_t(1), int64_t(64), int64_t(100), int64_t(128), int64_t(1000), T, T + 7}) {
        for (const DocCase& dc : doc_cases()) {
          const auto tokens = dc.make(T);
          const std::string what = "T=" + std::to_string(T) + " tile=" + std::to_string(tile) +
                                   " window=" + std::to_string(window) + " docs=" + dc.name;
          const BlockMask m = build_block_mask(tokens.data(), T, kEot, window, tile);
          check_mask(m, tokens, window, tile, what);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(BlockMask, ListsLinearlyManyBlocks) {
  // Single document, window = tile: each query block sees its own and the previous block.
  const int64_t T = 4096, tile = 128, nb = T / tile;
  const auto tokens = tokens_with_eots(T, {}, 7);
  const BlockMask m = build_block_mask(tokens.data(), T, kEot, 128, tile);
  EXPECT_EQ(int64_t(m.q_kv.size()), 2 * nb - 1);
  EXPECT_EQ(m.count_full(), 0);  // diagonal and off-diagonal both straddle an edge
  // Window 1024: 9 key blocks per query block in steady state, the 7 inner ones full.
  const BlockMask w = build_block_mask(tokens.data(), T, kEot, 1024, tile);
  EXPECT_EQ(m.num_blocks(), nb);
  int64_t listed = 0;
  for (int64_t qb = 0; qb < nb; ++qb) listed += std::min<int64_t>(qb + 1, 9);
  EXPECT_EQ(int64_t(w.q_kv.size()), listed);
  EXPECT_EQ(w.count_full(), listed - (nb + (nb - 8)));
  // Documents shorter than a tile leave only the diagonal (and its neighbour when a
  // document crosses the block edge).
  const auto docs = random_tokens(T, 0.05, 9);
  const BlockMask d = build_block_mask(docs.data(), T, kEot, 100000, tile);
  EXPECT_LE(int64_t(d.q_kv.size()), 3 * nb);
}

TEST(BlockMask, RejectsInvalidArguments) {
  const std::vector<int32_t> tokens(16, 1);
  EXPECT_THROW(build_block_mask(tokens.data(), 0, kEot, 8, 4), Error);
  EXPECT_THROW(build_block_mask(tokens.data(), 16, kEot, 0, 4), Error);
  EXPECT_THROW(build_block_mask(tokens.data(), 16, kEot, 8, 0), Error);
  EXPECT_THROW(build_block_mask(nullptr, 16, kEot, 8, 4), Error);
  EXPECT_NO_THROW(build_block_mask(tokens.data(), 16, kEot, 1, 1));
}

// ---------------------------------------------------------------------------------------
// Attention: naive dense double oracle.

struct Problem {
  int64_t B, T, H, D;
  std::vector<BlockMask> masks;
  std::vector<double> q, k, v;
  int64_t size() const { return B * T * H * D; }
  int64_t idx(int64_t b, int64_t t, int64_t h, int64_t d) const { return ((b * T + t) * H + h) * D + d; }
  double scale() const { return 1.0 / std::sqrt(double(D)); }
};

// B sequences with different documents: random EOTs, EOTs at 0 and adjacent ones, none.
Problem make_problem(int64_t B, int64_t T, int64_t H, int64_t D, int64_t window, int64_t tile,
                     uint64_t seed, double magnitude = 2.0) {
  Problem p{B, T, H, D, {}, {}, {}, {}};
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> tokens;
    switch (b % 3) {
      case 0: tokens = random_tokens(T, 0.02, seed + 10 * uint64_t(b)); break;
      case 1: tokens = tokens_with_eots(T, {0, 1, T / 3, T / 3 + 1, T / 2}, seed + 10 * uint64_t(b)); break;
      default: tokens = tokens_with_eots(T, {}, seed); break;
    }
    p.masks.push_back(build_block_mask(tokens.data(), T, kEot, window, tile));
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  for (auto* x : {&p.q, &p.k, &p.v}) {
    x->resize(size_t(p.size()));
    for (auto& e : *x) e = magnitude * n01(rng);
  }
  return p;
}

void naive_forward(const Problem& p, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(size_t(p.size()), 0.0);
  lse.assign(size_t(p.B * p.H * p.T), 0.0);
  std::vector<double> s(size_t(p.T));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < p.T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < p.T; ++j) {
          if (!p.masks[size_t(b)].visible(i, j)) continue;
          double dot = 0;
          for (int64_t d = 0; d < p.D; ++d) dot += p.q[size_t(p.idx(b, i, h, d))] * p.k[size_t(p.idx(b, j, h, d))];
          s[size_t(j)] = dot * p.scale();
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j < p.T; ++j)
          if (p.masks[size_t(b)].visible(i, j)) sum += std::exp(s[size_t(j)] - mx);
        for (int64_t j = 0; j < p.T; ++j) {
          if (!p.masks[size_t(b)].visible(i, j)) continue;
          const double w = std::exp(s[size_t(j)] - mx) / sum;
          for (int64_t d = 0; d < p.D; ++d) out[size_t(p.idx(b, i, h, d))] += w * p.v[size_t(p.idx(b, j, h, d))];
        }
        lse[size_t((b * p.H + h) * p.T + i)] = mx + std::log(sum);
      }
}

// Dense gradients of L = sum(out * dout) given the naive forward's out and lse.
void naive_backward(const Problem& p, const std::vector<double>& dout, const std::vector<double>& lse,
                    std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
  dq.assign(size_t(p.size()), 0.0);
  dk.assign(size_t(p.size()), 0.0);
  dv.assign(size_t(p.size()), 0.0);
  std::vector<double> P(size_t(p.T)), dP(size_t(p.T));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < p.T; ++i) {
        double delta = 0;
        for (int64_t j = 0; j < p.T; ++j) {
          P[size_t(j)] = dP[size_t(j)] = 0;
          if (!p.masks[size_t(b)].visible(i, j)) continue;
          double dot = 0, g = 0;
          for (int64_t d = 0; d < p.D; ++d) {
            dot += p.q[size_t(p.idx(b, i, h, d))] * p.k[size_t(p.idx(b, j, h, d))];
            g += dout[size_t(p.idx(b, i, h, d))] * p.v[size_t(p.idx(b, j, h, d))];
          }
          P[size_t(j)] = std::exp(dot * p.scale() - lse[size_t((b * p.H + h) * p.T + i)]);
          dP[size_t(j)] = g;
          delta += P[size_t(j)] * g;
        }
        for (int64_t j = 0; j < p.T; ++j) {
          if (P[size_t(j)] == 0) continue;
          const double ds = P[size_t(j)] * (dP[size_t(j)] - delta) * p.scale();
          for (int64_t d = 0; d < p.D; ++d) {
            dv[size_t(p.idx(b, j, h, d))] += P[size_t(j)] * dout[size_t(p.idx(b, i, h, d))];
            dq[size_t(p.idx(b, i, h, d))] += ds * p.k[size_t(p.idx(b, j, h, d))];
            dk[size_t(p.idx(b, j, h, d))] += ds * p.q[size_t(p.idx(b, i, h, d))];
          }
        }
      }
}

using tol::rel_err;

template <class T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// Runs the kernels in precision T; outputs start as NaN to prove they are assigned.
template <class T>
struct Run {
  std::vector<T> out, lse, dq, dk, dv;
};
template <class T>
Run<T> run_kernels(const Problem& p, const std::vector<double>& dout_d, bool backward,
                   cpu::attn::BackwardSchedule schedule = cpu::attn::BackwardSchedule::kAuto) {
  const auto q = cast<T>(p.q), k = cast<T>(p.k), v = cast<T>(p.v), dout = cast<T>(dout_d);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  Run<T> r;
  r.out.assign(size_t(p.size()), nan);
  r.lse.assign(size_t(p.B * p.H * p.T), nan);
  cpu::attention_forward<T>(r.out.data(), r.lse.data(), q.data(), k.data(), v.data(), p.masks.data(),
                            p.B, p.T, p.H, p.D, T(p.scale()));
  if (backward) {
    r.dq.assign(size_t(p.size()), nan);
    r.dk.assign(size_t(p.size()), nan);
    r.dv.assign(size_t(p.size()), nan);
    cpu::attn::attention_backward<T>(r.dq.data(), r.dk.data(), r.dv.data(), dout.data(), q.data(),
                                     k.data(), v.data(), r.out.data(), r.lse.data(), p.masks.data(),
                                     p.B, p.T, p.H, p.D, T(p.scale()), schedule);
  }
  return r;
}

std::vector<double> random_vec(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> x(static_cast<size_t>(n));
  for (auto& e : x) e = n01(rng);
  return x;
}

TEST(AttentionCpu, ExpMatchesLibm) {
  EXPECT_EQ(cpu::attn::exp_nonpos(0.0f), 1.0f);
  EXPECT_EQ(cpu::attn::exp_nonpos(0.0), 1.0);
  EXPECT_EQ(cpu::attn::exp_nonpos(-INFINITY), 0.0);
  EXPECT_EQ(cpu::attn::exp_nonpos(-std::numeric_limits<float>::infinity()), 0.0f);
  double ef = 0, ed = 0;
  for (double x = -80.0; x <= 0.0; x += 0.0007) {
    const float xf = float(x);
    ef = std::max(ef, std::abs(double(cpu::attn::exp_nonpos(xf)) / std::exp(double(xf)) - 1));
    ed = std::max(ed, std::abs(cpu::attn::exp_nonpos(x) / std::exp(x) - 1));
  }
  // Relative error per value: a few ulps (float 6e-8, double 1.1e-16) is what the
  // polynomials promise; the shared tolerances sit well above that.
  EXPECT_LT(ef, 4 * 6e-8);
  EXPECT_LT(ed, 16 * 1.1e-16);
}

TEST(AttentionCpu, ForwardMatchesNaiveDense) {
  for (int64_t D : {8, 16}) {
    for (int64_t tile : {32, 64, 128}) {
      for (int64_t window : {1, 64, 100, 300}) {
        const Problem p = make_problem(2, 257, 3, D, window, tile, 100 + uint64_t(D + tile + window));
        std::vector<double> out, lse;
        naive_forward(p, out, lse);
        const auto rd = run_kernels<double>(p, {}, false);
        const auto rf = run_kernels<float>(p, {}, false);
        const std::string what = "D=" + std::to_string(D) + " tile=" + std::to_string(tile) +
                                 " window=" + std::to_string(window);
        EXPECT_LT(rel_err(rd.out, out), tol::kDouble) << what;
        EXPECT_LT(rel_err(rd.lse, lse), tol::kDouble) << what;
        EXPECT_LT(rel_err(rf.out, out), tol::kFloat) << what;
        EXPECT_LT(rel_err(rf.lse, lse), tol::kFloat) << what;
      }
    }
  }
}

TEST(AttentionCpu, ForwardTinyShapes) {
  // T = 1 (one query seeing itself: out = v) and a tile larger than T.
  for (int64_t T : {1, 2, 5}) {
    const Problem p = make_problem(2, T, 2, 4, 3, 16, 7);
    std::vector<double> out, lse;
    naive_forward(p, out, lse);
    const auto rd = run_kernels<double>(p, {}, false);
    EXPECT_LT(rel_err(rd.out, out), tol::kDouble) << "T=" << T;
    EXPECT_LT(rel_err(rd.lse, lse), tol::kDouble) << "T=" << T;
  }
}

// L = sum(out * R): dq, dk, dv against central differences, every element.
TEST(AttentionCpu, BackwardMatchesFiniteDifferences) {
  const int64_t B = 2, T = 70, H = 2, D = 4;
  Problem p = make_problem(B, T, H, D, 20, 16, 55, 1.0);
  // Three documents in each sequence (EOTs at different places per sequence).
  for (int64_t b = 0; b < B; ++b) {
    const auto tokens = tokens_with_eots(T, b == 0 ? std::vector<int64_t>{21, 45} : std::vector<int64_t>{0, 9, 33}, 5);
    p.masks[size_t(b)] = build_block_mask(tokens.data(), T, kEot, 20, 16);
  }
  const auto R = random_vec(p.size(), 77);
  const auto run = run_kernels<double>(p, R, true);
  auto loss = [&](const Problem& pp) {
    std::vector<double> out(size_t(pp.size())), lse(size_t(pp.B * pp.H * pp.T));
    cpu::attention_forward<double>(out.data(), lse.data(), pp.q.data(), pp.k.data(), pp.v.data(),
                                   pp.masks.data(), pp.B, pp.T, pp.H, pp.D, pp.scale());
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  };
  const double eps = 1e-6;
  // Thousands of tiny forwards: one thread avoids a team wake-up per call (same results).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  struct Grad {
    const char* name;
    std::vector<double> Problem::*x;
    const std::vector<double>* g;
  };
  for (const Grad& gr : {Grad{"dq", &Problem::q, &run.dq}, Grad{"dk", &Problem::k, &run.dk},
                         Grad{"dv", &Problem::v, &run.dv}}) {
    std::vector<double> fd(size_t(p.size()));
    Problem pp = p;
    for (int64_t e = 0; e < p.size(); ++e) {
      double& x = (pp.*gr.x)[size_t(e)];
      const double x0 = x;
      x = x0 + eps;
      const double lp = loss(pp);
      x = x0 - eps;
      const double lm = loss(pp);
      x = x0;
      fd[size_t(e)] = (lp - lm) / (2 * eps);
    }
    EXPECT_LT(rel_err(*gr.g, fd), tol::kFiniteDiff) << gr.name;
  }
  omp_set_num_threads(threads);
}

TEST(AttentionCpu, BackwardMatchesNaiveDense) {
  using cpu::attn::BackwardSchedule;
  for (int64_t D : {8, 16}) {
    for (int64_t tile : {32, 64, 128}) {
      for (int64_t window : {1, 100, 300}) {
        const Problem p = make_problem(2, 257, 3, D, window, tile, 300 + uint64_t(D + tile + window));
        const auto dout = random_vec(p.size(), 900 + uint64_t(window));
        std::vector<double> out, lse, dq, dk, dv;
        naive_forward(p, out, lse);
        naive_backward(p, dout, lse, dq, dk, dv);
        const std::string what = "D=" + std::to_string(D) + " tile=" + std::to_string(tile) +
                                 " window=" + std::to_string(window);
        for (BackwardSchedule s : {BackwardSchedule::kByHead, BackwardSchedule::kByBlock}) {
          const auto rd = run_kernels<double>(p, dout, true, s);
          EXPECT_LT(rel_err(rd.dq, dq), tol::kDouble) << what;
          EXPECT_LT(rel_err(rd.dk, dk), tol::kDouble) << what;
          EXPECT_LT(rel_err(rd.dv, dv), tol::kDouble) << what;
          const auto rf = run_kernels<float>(p, dout, true, s);
          EXPECT_LT(rel_err(rf.dq, dq), tol::kFloat) << what;
          EXPECT_LT(rel_err(rf.dk, dk), tol::kFloat) << what;
          EXPECT_LT(rel_err(rf.dv, dv), tol::kFloat) << what;
        }
      }
    }
  }
}

// Each sequence's tile is its mask's: sequences of one batch may use different tiles.
TEST(AttentionCpu, DifferentTilesPerSequence) {
  Problem p = make_problem(2, 200, 2, 8, 90, 16, 41);
  const auto tokens = random_tokens(200, 0.02, 42);
  p.masks[1] = build_block_mask(tokens.data(), 200, kEot, 90, 48);
  const auto dout = random_vec(p.size(), 43);
  std::vector<double> out, lse, dq, dk, dv;
  naive_forward(p, out, lse);
  naive_backward(p, dout, lse, dq, dk, dv);
  for (auto s : {cpu::attn::BackwardSchedule::kByHead, cpu::attn::BackwardSchedule::kByBlock}) {
    const auto r = run_kernels<double>(p, dout, true, s);
    EXPECT_LT(rel_err(r.out, out), tol::kDouble);
    EXPECT_LT(rel_err(r.lse, lse), tol::kDouble);
    EXPECT_LT(rel_err(r.dq, dq), tol::kDouble);
    EXPECT_LT(rel_err(r.dk, dk), tol::kDouble);
    EXPECT_LT(rel_err(r.dv, dv), tol::kDouble);
  }
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

TEST(AttentionCpu, BitIdenticalAcrossSchedulesAndThreadCounts) {
  using cpu::attn::BackwardSchedule;
  const Problem p = make_problem(2, 300, 3, 16, 150, 64, 11);
  const auto dout = random_vec(p.size(), 12);
  const int threads = omp_get_max_threads();
  const auto a = run_kernels<float>(p, dout, true, BackwardSchedule::kByHead);
  const auto b = run_kernels<float>(p, dout, true, BackwardSchedule::kByBlock);
  omp_set_num_threads(1);
  const auto c = run_kernels<float>(p, dout, true, BackwardSchedule::kAuto);
  omp_set_num_threads(3);
  const auto d = run_kernels<float>(p, dout, true, BackwardSchedule::kByBlock);
  omp_set_num_threads(threads);
  for (const auto* r : {&b, &c, &d}) {
    EXPECT_TRUE(same_bits(a.out, r->out));
    EXPECT_TRUE(same_bits(a.lse, r->lse));
    EXPECT_TRUE(same_bits(a.dq, r->dq));
    EXPECT_TRUE(same_bits(a.dk, r->dk));
    EXPECT_TRUE(same_bits(a.dv, r->dv));
  }
}

// Keys and values outside the blocks a query block lists are never read: NaN there leaves
// that block's out, lse and dq bit-identical to a clean run.
TEST(AttentionCpu, SkippedTilesAreNeverRead) {
  const int64_t B = 1, T = 640, H = 2, D = 8, tile = 64;
  const Problem clean = make_problem(B, T, H, D, 100, tile, 21);
  const auto dout = random_vec(clean.size(), 22);
  const auto ref = run_kernels<float>(clean, dout, true);
  const BlockMask& m = clean.masks[0];
  int checked_blocks = 0;
  for (int64_t qb = 0; qb < m.num_blocks(); ++qb) {
    const int64_t lo = int64_t(m.q_kv[size_t(m.q_ptr[size_t(qb)])]) * tile;
    if (lo == 0) continue;  // nothing before the listed range to poison
    Problem p = clean;
    for (int64_t t = 0; t < T; ++t) {
      if (t >= lo && t < std::min(T, (qb + 1) * tile)) continue;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) p.k[size_t(p.idx(0, t, h, d))] = p.v[size_t(p.idx(0, t, h, d))] = NAN;
    }
    const auto r = run_kernels<float>(p, dout, true);
    for (int64_t t = qb * tile; t < std::min(T, (qb + 1) * tile); ++t) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const size_t e = size_t(p.idx(0, t, h, d));
          ASSERT_EQ(r.out[e], ref.out[e]) << "qb=" << qb << " t=" << t;
          ASSERT_EQ(r.dq[e], ref.dq[e]) << "qb=" << qb << " t=" << t;
        }
        ASSERT_EQ(r.lse[size_t(h * T + t)], ref.lse[size_t(h * T + t)]);
      }
    }
    ++checked_blocks;
  }
  EXPECT_GE(checked_blocks, 5);
}

TEST(AttentionCpu, RejectsMismatchedMask) {
  const Problem p = make_problem(1, 64, 1, 4, 16, 16, 1);
  const auto other = tokens_with_eots(65, {}, 1);
  const BlockMask wrong = build_block_mask(other.data(), 65, kEot, 16, 16);
  std::vector<float> q(size_t(p.size())), out(q.size()), lse(64);
  EXPECT_THROW(cpu::attention_forward<float>(out.data(), lse.data(), q.data(), q.data(), q.data(),
                                             &wrong, 1, 64, 1, 4, 0.5f),
               Error);
}

}  // namespace
}  // namespace speedrun
