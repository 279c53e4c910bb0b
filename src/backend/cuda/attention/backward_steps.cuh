// The steps the two backward kernel sets share (backward.cu on mma.sync, backward_wgmma.cu
// on wgmma): both hold a warp's 16 rows (queries for dQ, keys for dK/dV) as the same
// accumulator fragments (fragment.h), so D = rowsum(dO * O) and the scores-to-dS step of a
// chunk are one code.
#pragma once
#include "backend/cuda/attention/common.cuh"
#include "backend/cuda/attention/kernels.h"
#include "backend/cuda/attention/walk.cuh"

namespace speedrun::cuda::attn {

// D = rowsum(dO * O) of row n, head h (head dim D), by one warp: lanes take bf16 pairs in
// turn, then a butterfly sum; every lane returns the row's value.
template <int D>
__device__ inline float row_delta(const BackwardArgs& a, int64_t n, int h, int lane) {
  const auto* o = reinterpret_cast<const __nv_bfloat162*>(static_cast<const bf16*>(a.out) +
                                                          n * a.ld + int64_t(h) * D);
  const auto* g = reinterpret_cast<const __nv_bfloat162*>(static_cast<const bf16*>(a.dout) +
                                                          n * a.ld + int64_t(h) * D);
  float s = 0.f;
  SR_UNROLL
  for (int it = 0; it < (D / 2 + 31) / 32; ++it) {
    const int p = it * 32 + lane;
    if (p >= D / 2) break;
    const float2 x = __bfloat1622float2(o[p]), y = __bfloat1622float2(g[p]);
    s += x.x * y.x + x.y * y.y;
  }
  SR_UNROLL
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

// A dQ CTA's thread's two query rows (accumulator slots 0 and 1: rows g and g + 8 of its
// warp): qi, their first visible keys lo and the forward's lse in log2 units lse2 (zeros for
// rows past T).
__device__ __forceinline__ void query_rows(const BackwardArgs& a, const Site& site, int warp, int lane,
                                           int (&qi)[2], int (&lo)[2], float (&lse2)[2]) {
  const int T = a.plan.T;
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) {
    qi[slot] = site.r0 + warp * 16 + c_row(lane, 2 * slot);
    const bool ok = qi[slot] < T;
    lo[slot] = ok ? a.plan.lo[site.row0 + qi[slot]] : 0;
    lse2[slot] = ok ? lse_to_log2(a.lse[site.stat0 + qi[slot]]) : 0.f;
  }
}

// A dK/dV CTA's copies of a chunk's per-query statistics into stage st of its shared arrays
// ([2][kChunk] each): the forward's lse, D and the first visible key; zeros past T (those
// queries are hidden). Threads below kChunk issue them.
template <int kChunk>
__device__ __forceinline__ void load_query_stats(const BackwardArgs& a, const Chunk& ch, int st,
                                                 float* sLse, float* sDelta, int32_t* sLo,
                                                 int64_t row0, int64_t stat0, int tid) {
  if (tid >= kChunk) return;
  const int i = ch.start + tid;
  const bool ok = i < a.plan.T;
  cp_async_4(sLse + st * kChunk + tid, ok ? a.lse + stat0 + i : a.lse, ok);
  cp_async_4(sDelta + st * kChunk + tid, ok ? a.delta + stat0 + i : a.delta, ok);
  cp_async_4(sLo + st * kChunk + tid, ok ? a.plan.lo + row0 + i : a.plan.lo, ok);
}

// D for a warp's 16 query rows from q0 + 16 warp (rows past T have 0): each lane keeps its
// two rows' in delta[slot] (slot 0: row lane / 4, slot 1: row lane / 4 + 8), and the warp
// writes them to a.delta (stat0: the [B, H, T] row of this sequence and head) for the dK/dV
// kernel. kEarlyLoads: no exit and no store inside the loop (a row past T reads row T - 1
// and drops it; lane r < 16 stores row r's after it), so the compiler issues every row's
// loads before the first row's sums, where an exit or a store (which may alias them) keeps
// each row's loads behind the row before: 16 memory round trips in a chain per warp before
// the CTA's first product. It holds more loads in flight in registers; the kernel whose
// register bound leaves no room (dq_wgmma at head dim 64, 128 registers) keeps the chain.
template <int D, bool kEarlyLoads = true>
__device__ __forceinline__ void warp_deltas(const BackwardArgs& a, int64_t row0, int64_t stat0, int h,
                                            int q0, int warp, int lane, float (&delta)[2]) {
  const int T = a.plan.T;
  delta[0] = delta[1] = 0.f;
  float mine = 0.f;  // row `lane`'s, for lanes 0-15 (kEarlyLoads)
  SR_UNROLL
  for (int r = 0; r < 16; ++r) {
    const int t = q0 + warp * 16 + r;
    float s;
    if constexpr (kEarlyLoads) {
      const float d = row_delta<D>(a, row0 + std::min(t, T - 1), h, lane);
      s = t < T ? d : 0.f;
      if (lane == r) mine = s;
    } else {
      if (t >= T) break;  // uniform over the warp
      s = row_delta<D>(a, row0 + t, h, lane);
      if (lane == 0) a.delta[stat0 + t] = s;
    }
    if (c_row(lane, 0) == r) delta[0] = s;
    if (c_row(lane, 2) == r) delta[1] = s;
  }
  if constexpr (kEarlyLoads) {
    const int t = q0 + warp * 16 + lane;
    if (lane < 16 && t < T) a.delta[stat0 + t] = mine;
  }
}

// dQ's chunk step for a warp's query rows (this thread's: qi[slot], first visible key
// lo[slot], lse2[slot] the forward's lse in log2 units, delta[slot]): s holds S = Q K^T and
// dp dP = dO V^T for the chunk's keys from ch.start; s is left holding dS = P (dP - D)
// (fp32), keys the mask rule hides (in a partial chunk) giving 0.
template <int kChunk>
__device__ __forceinline__ void dq_scores(float (&s)[kChunk / 8][4], const float (&dp)[kChunk / 8][4],
                                          const Chunk& ch, const int (&qi)[2], const int (&lo)[2], int T,
                                          float scale_log2, const float (&lse2)[2],
                                          const float (&delta)[2], int lane) {
  scale_and_mask<kChunk>(s, ch, qi, lo, T, scale_log2, lane);
  SR_UNROLL
  for (int nb = 0; nb < kChunk / 8; ++nb)
    SR_UNROLL
    for (int i = 0; i < 4; ++i)
      s[nb][i] = dscore(prob_from_lse(s[nb][i], lse2[i >> 1]), dp[nb][i], delta[i >> 1]);
}

// dK/dV's chunk step for a warp's keys (this thread's: kj[slot]): s holds S^T = K Q^T and
// dp dP^T = V dO^T for the chunk's queries from ch.start, whose lse (natural log), D and first
// visible key are lse[q], delta[q] and lo[q] (q relative to the chunk, this stage's shared
// copies); s is left holding P^T and dp dS^T (fp32), pairs the mask rule hides giving 0.
template <int kChunk>
__device__ __forceinline__ void dkv_scores(float (&s)[kChunk / 8][4], float (&dp)[kChunk / 8][4],
                                           const Chunk& ch, const int (&kj)[2], const float* lse,
                                           const float* delta, const int32_t* lo, int T,
                                           float scale_log2, int lane) {
  SR_UNROLL
  for (int nb = 0; nb < kChunk / 8; ++nb)
    SR_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int col = nb * 8 + c_col(lane, i);  // query, relative to the chunk
      // Evaluated without a branch (lo read in full chunks too): a short-circuit made each
      // element a branch of its own waiting on its shared-memory read.
      const float x = (!ch.full & !visible(ch.start + col, kj[i >> 1], lo[col], T))
                          ? kNegInf
                          : s[nb][i] * scale_log2;
      const float p = prob_from_lse(x, lse_to_log2(lse[col]));
      s[nb][i] = p;
      dp[nb][i] = dscore(p, dp[nb][i], delta[col]);
    }
}

}  // namespace speedrun::cuda::attn
