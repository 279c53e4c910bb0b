// The per-element arithmetic of the CUDA attention kernels, as __host__ __device__ inline
// functions in plain C++: the same code runs in the kernels (forward.cu, backward.cu) and in
// the CPU test's scalar emulation of their tile loops (tests/test_cuda_attention_plan.cpp),
// so the tile walk, the mask rule and the softmax arithmetic are proven without a GPU.
//
// Units: scores are kept in log2 units, x = (q.k) * scale * log2(e), so that the softmax
// exponentials are exp2 (one MUFU.EX2 on the GPU). The natural log-sum-exp the contract
// asks for is (m + log2(l)) * ln(2).
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/cuda/math/exp2.h"

#ifdef __CUDACC__
// SR_TILE_HD: inline arithmetic of the tile loops on both sides (math/hd.h's SR_HD, for the
// other kernels, leaves inline to each function).
#define SR_TILE_HD __host__ __device__ __forceinline__
#define SR_UNROLL _Pragma("unroll")
#else
#define SR_TILE_HD inline
#define SR_UNROLL
#endif

namespace speedrun::cuda::attn {

// The BlockMask tile the kernels walk (a mask built with another tile is refused).
inline constexpr int kTile = 128;
using math::kLn2;
using math::kLog2e;
inline constexpr float kNegInf = -__builtin_huge_valf();

// ---- work lists (their byte layout: plan.h) ----------------------------------------------
// One work item: tile `tile` (a query tile for the forward and dQ, a key tile for dK/dV) of
// sequence `seq`, whose listed partner tiles are the entries list[begin, end).
struct WorkItem {
  int32_t seq, tile, begin, end;
};
static_assert(sizeof(WorkItem) == 16, "WorkItem is loaded as one 16-byte vector");

// A list entry: partner tile index << 1 | full (every pair of the tile visible, and both
// tiles of full length: a full tile skips the per-element test, so padding rows of a short
// last tile must never be in one).
SR_TILE_HD int32_t make_entry(int32_t tile, bool full) { return (tile << 1) | (full ? 1 : 0); }
SR_TILE_HD int32_t entry_tile(int32_t e) { return e >> 1; }
SR_TILE_HD bool entry_full(int32_t e) { return (e & 1) != 0; }

// What a kernel reads: pointers into one buffer (device memory for the kernels, host memory
// for the CPU emulation) and the sizes.
struct PlanView {
  const WorkItem* q_items;  // [n_q_items] by query tile, longest list first (forward, dQ)
  const WorkItem* k_items;  // [n_k_items] by key tile, longest list first (dK, dV)
  const int32_t* q_list;    // key-tile entries of the query tiles, concatenated
  const int32_t* k_list;    // query-tile entries of the key tiles, concatenated
  const int32_t* lo;        // [B*T] first visible key of each query (sequence-local index)
  int32_t n_q_items, n_k_items;
  int32_t T;  // tokens per sequence
};

// A chunk: `rows` consecutive tokens of one listed partner tile (rows divides kTile), the
// unit one pipeline stage loads. Chunk c of an item is part c % (kTile/rows) of its entry
// c / (kTile/rows). A chunk starting at or past T (the second half of a short last tile)
// holds no token: valid is false and the kernels skip it whole.
struct Chunk {
  int32_t start;  // first token (sequence-local)
  bool full;      // the tile's full flag
  bool valid;     // start < T
};
SR_TILE_HD int32_t chunk_count(const WorkItem& it, int32_t rows) {
  return (it.end - it.begin) * (kTile / rows);
}
SR_TILE_HD Chunk chunk_at(const int32_t* list, const WorkItem& it, int32_t c, int32_t rows,
                     int32_t T) {
  const int32_t per = kTile / rows;
  const int32_t e = list[it.begin + c / per];
  const int32_t start = entry_tile(e) * kTile + (c % per) * rows;
  return Chunk{start, entry_full(e), start < T};
}

// ---- the mask rule inside a partial tile ------------------------------------------------
// Key j is visible to query i iff j <= i, doc[j] == doc[i] and i - j < window. Documents
// are contiguous, so that is one interval: lo_i <= j <= i with
// lo_i = max(first token of i's document, i - window + 1) (plan.cpp computes lo per token).
// Rows i >= T (padding of a short last tile) see nothing; keys j >= T are past every real
// query, so j <= i hides them.
SR_TILE_HD bool visible(int32_t i, int32_t j, int32_t lo_i, int32_t T) {
  return i < T && j <= i && j >= lo_i;
}

// Whether query i sees any key of [j0, j1]: the interval [lo_i, i] of visible() meets it.
// A warp whose 16 rows see no key of a partial chunk (or whose 16 keys no query of it sees)
// skips the chunk's products: every p there is 0, so they would add exact zeros. In a
// partial tile at a document start or at the window's edge that is up to 3 of 4 warps'
// work (window 64: half of all listed tile work).
SR_TILE_HD bool sees_any(int32_t i, int32_t lo_i, int32_t T, int32_t j0, int32_t j1) {
  const int32_t first = lo_i > j0 ? lo_i : j0, last = i < j1 ? i : j1;
  return i < T && first <= last;
}

// Whether any query of [i0, i1] sees any key of [j0, j1], from one entry of the sequence's
// lo (lo[t] for its tokens t < T): that of max(i0, j0), the first query that can (a query
// before j0 sees only earlier keys). lo never decreases along a sequence (the larger of its
// document's first token and i - window + 1), so a later query sees no key before that
// query's first: when it sees nothing of [j0, j1], or lies past i1 or T, no query of
// [i0, i1] does. A CTA skips loading a partial chunk this rules out for its whole tile:
// every one of its warps would skip the chunk's products.
SR_TILE_HD bool range_sees_any(const int32_t* lo, int32_t T, int32_t i0, int32_t i1, int32_t j0,
                               int32_t j1) {
  const int32_t i = i0 > j0 ? i0 : j0;
  return i <= i1 && i < T && sees_any(i, lo[i], T, j0, j1);
}

// ---- online softmax ----------------------------------------------------------------------
// The value subtracted before exp2: the running max, or 0 while a row has seen no visible
// key (its max is -inf, and -inf - -inf would be NaN; every exponent is then -inf -> 0).
SR_TILE_HD float softmax_shift(float m) { return m == kNegInf ? 0.f : m; }

// One row's share of a chunk. at(k), k < kN, are the scores (log2 units, -inf where hidden)
// of the keys this thread holds for the row; chunk_max is the max over the row's whole chunk
// (across threads). Turns the scores into unnormalised probabilities p = 2^(x - m_new) in
// place, updates the running max m and this thread's partial sum l (l = alpha * l + sum p),
// and returns alpha = 2^(m_old - m_new), the factor the row's output accumulators take.
template <int kN, class At>
SR_TILE_HD float softmax_chunk(At&& at, float chunk_max, float& m, float& l) {
  const float m_new = fmaxf(m, chunk_max);
  const float shift = softmax_shift(m_new);
  const float alpha = math::exp2_ftz(m - shift);
  float sum = 0.f;
  SR_UNROLL
  for (int k = 0; k < kN; ++k) {
    float& x = at(k);
    x = math::exp2_ftz(x - shift);
    sum += x;
  }
  m = m_new;
  l = l * alpha + sum;
  return alpha;
}

// The end of a row: the natural log-sum-exp and 1/l for the output. l == 0 only for padding
// rows (every real row sees its own key); NaN inputs stay NaN.
struct RowEnd {
  float lse;
  float inv_l;
};
SR_TILE_HD RowEnd finish_row(float m, float l) {
  if (l == 0.f) return RowEnd{kNegInf, 0.f};
  return RowEnd{(m + log2f(l)) * kLn2, 1.f / l};
}

// ---- backward -----------------------------------------------------------------------------
// P = exp(s - lse) recomputed from the forward's lse: 2^(x - lse * log2 e).
SR_TILE_HD float lse_to_log2(float lse) { return lse * kLog2e; }
SR_TILE_HD float prob_from_lse(float x, float lse_log2) { return math::exp2_ftz(x - lse_log2); }
// dS = P * (dP - D) with D = rowsum(dO * O) (scale applied once, to dQ and dK at the end).
SR_TILE_HD float dscore(float p, float dp, float delta) { return p * (dp - delta); }

}  // namespace speedrun::cuda::attn
