// Pieces shared by the CPU attention forward and backward kernels (templated on the scalar
// so tests run them in double). Dimension legend: B sequences, T tokens, H heads, D head
// dim; q/k/v/out and their gradients are [B, T, H, D] row-major (row stride H*D), lse is
// [B, H, T]. Tiles follow the BlockMask of each sequence; scores are S = scale * q.k.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "backend/block_mask.h"
#include "backend/cpu/matmul.h"
#include "core/error.h"

namespace speedrun::cpu::attn {

// exp(x) for x <= 0, written without calls or branches so that loops over it vectorise
// (libm's exp does not without -ffast-math, and it would cost more than the tile's
// matmuls). Below ~-87 (float) / ~-708 (double) it returns 0, including for -inf.
// Accuracy: ~1 ulp in float (Cephes' minimax polynomial), a few ulps in double (Taylor to
// degree 13 on |r| <= ln2/2, truncation < 1e-17).
// Always inlined: called out of line it blocks the vectorisation of its callers' loops.
template <class T>
[[gnu::always_inline]] inline T exp_nonpos(T x) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using I = std::conditional_t<std::is_same_v<T, float>, int32_t, int64_t>;
  constexpr bool kF = std::is_same_v<T, float>;
  constexpr T kLo = kF ? T(-87.0) : T(-708.0);
  constexpr T kLog2e = T(1.4426950408889634);
  // ln2 split so that n * kLn2Hi is exact for |n| < 2^10 (float) / 2^11 (double).
  constexpr T kLn2Hi = kF ? T(0.693145751953125) : T(0.6931471803691238);
  constexpr T kLn2Lo = kF ? T(1.428606820309417e-06) : T(1.9082149292705877e-10);
  // Adding 1.5 * 2^mantissa rounds to an integer that sits in the low mantissa bits.
  constexpr T kRound = kF ? T(12582912.0) : T(6755399441055744.0);
  constexpr int kMant = kF ? 23 : 52;
  constexpr I kBias = kF ? 127 : 1023;

  // No clamp of x (a float select that GCC will not vectorise under -ftrapping-math):
  // out-of-range values are masked at the end, through integer ops, which it does.
  const T t = x * kLog2e + kRound;
  const T n = t - kRound;  // round(x / ln2)
  T r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  T p;
  if constexpr (kF) {
    p = T(1.9875691500e-4);
    p = p * r + T(1.3981999507e-3);
    p = p * r + T(8.3334519073e-3);
    p = p * r + T(4.1665795894e-2);
    p = p * r + T(1.6666665459e-1);
    p = p * r + T(5.0000001201e-1);
    p = p * r * r + r + T(1);
  } else {
    p = T(1.0 / 6227020800.0);  // 1/13!
    p = p * r + T(1.0 / 479001600.0);
    p = p * r + T(1.0 / 39916800.0);
    p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0);
    p = p * r + T(1.0 / 40320.0);
    p = p * r + T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0);
    p = p * r + T(1.0 / 120.0);
    p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0);
    p = p * r + T(0.5);
    p = p * r * r + r + T(1);
  }
  const I ni = std::bit_cast<I>(t) - std::bit_cast<I>(kRound);
  const T scale = std::bit_cast<T>(I((ni + kBias) << kMant));
  const I keep = -I(!(x < kLo));  // all ones, or zero below kLo; NaN stays NaN
  return std::bit_cast<T>(I(std::bit_cast<I>(p * scale) & keep));
}

// Base pointer of head h of row t of sequence b in a [B, T, H, D] tensor.
template <class P>
inline P* head_row(P* x, int64_t b, int64_t t, int64_t h, int64_t T, int64_t H, int64_t D) {
  return x + ((b * T + t) * H + h) * D;
}

// Validates the masks against the shapes; returns the largest tile (the work buffers' edge).
inline int64_t check_masks(const char* op, const BlockMask* masks, int64_t B, int64_t T,
                           int64_t H, int64_t D) {
  check(B >= 1 && T >= 1 && H >= 1 && D >= 1, op, ": shapes must be positive, got B=", B,
        " T=", T, " H=", H, " D=", D);
  check(masks != nullptr, op, ": masks is null; pass one BlockMask per sequence");
  int64_t tile = 1;
  for (int64_t b = 0; b < B; ++b) {
    const BlockMask& m = masks[b];
    check(m.T == T, op, ": mask of sequence ", b, " was built for T=", m.T,
          " but the tensors have T=", T, "; rebuild it with build_block_mask");
    check(m.tile >= 1 && m.window >= 1 && int64_t(m.doc.size()) == T &&
              int64_t(m.q_ptr.size()) == m.num_blocks() + 1 &&
              int64_t(m.k_ptr.size()) == m.num_blocks() + 1,
          op, ": mask of sequence ", b, " is malformed; build it with build_block_mask");
    tile = std::max(tile, m.tile);
  }
  return tile;
}

// S[bq, bk] (row stride ld) = scale * Q K^T for a (query block, key block) tile; rows of Q
// and K are head slices of the [B, T, H, D] tensors (row stride H*D).
template <class T>
inline void tile_scores(T* S, int64_t ld, const T* Q, const T* K, int64_t bq, int64_t bk,
                        int64_t D, int64_t row, T scale) {
  gemm<T>(false, true, bq, bk, D, scale, Q, row, K, row, T(0), S, ld);
}

// Sets the scores of the pairs (q0 + r, k0 + c) that the mask hides to -inf (partial tiles).
// Query i sees the keys [max(i - window + 1, start of i's document), i]: one interval, so
// each row is cut at two columns (the document start by binary search: doc[] ascends).
template <class T>
inline void tile_mask(T* S, int64_t ld, const BlockMask& m, int64_t q0, int64_t bq, int64_t k0,
                      int64_t bk) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int32_t* doc = m.doc.data();
  for (int64_t r = 0; r < bq; ++r) {
    const int64_t i = q0 + r;
    T* s = S + r * ld;
    const int64_t hi = std::min(bk, i - k0 + 1);  // columns [lo, hi) stay
    int64_t lo = std::clamp<int64_t>(i - m.window + 1 - k0, 0, bk);
    if (lo < hi) lo = std::lower_bound(doc + k0 + lo, doc + k0 + hi, doc[i]) - (doc + k0);
    if (lo >= hi) {
      std::fill(s, s + bk, kNegInf);
      continue;
    }
    std::fill(s, s + lo, kNegInf);
    std::fill(s + hi, s + bk, kNegInf);
  }
}

// Lanes of exp_shift_sum's sum: independent accumulators so that the loop vectorises
// without -ffast-math (which the project does not use), in a fixed order (deterministic).
inline constexpr int64_t kLanes = 16;

// max_c s[c] over n values (-inf when n == 0 or all are -inf). The order does not change
// a max, so the simd reduction is exact.
template <class T>
inline T row_max(const T* s, int64_t n) {
  T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t c = 0; c < n; ++c) mx = mx < s[c] ? s[c] : mx;
  return mx;
}

// s[c] = exp(s[c] - m) in place over n values; returns their sum.
template <class T>
inline T exp_shift_sum(T* s, int64_t n, T m) {
  T acc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) {
      const T p = exp_nonpos<T>(s[c + l] - m);
      s[c + l] = p;
      acc[l] += p;
    }
  for (; c < n; ++c) {
    s[c] = exp_nonpos<T>(s[c] - m);
    acc[0] += s[c];
  }
  T sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

// P = exp(S - lse_row) in place over a tile, lse indexed by the tile's rows.
template <class T>
inline void tile_probs(T* S, int64_t ld, const T* lse, int64_t bq, int64_t bk) {
  for (int64_t r = 0; r < bq; ++r) {
    T* s = S + r * ld;
    const T l = lse[r];
    for (int64_t c = 0; c < bk; ++c) s[c] = exp_nonpos<T>(s[c] - l);
  }
}

}  // namespace speedrun::cpu::attn
