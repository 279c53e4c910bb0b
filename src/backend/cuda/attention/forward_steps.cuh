// The steps the two forward kernels share (forward.cu on mma.sync, forward_wgmma.cu on
// wgmma): both hold a warp's 16 query rows as the same accumulator fragments (fragment.h),
// so the softmax of a chunk's scores and the end of a tile are one code.
#pragma once
#include "backend/cuda/attention/common.cuh"
#include "backend/cuda/attention/kernels.h"

namespace speedrun::cuda::attn {

// One chunk's online softmax for a warp's rows, but for the accumulator: s [16 x kChunk]
// holds S = Q K^T for the chunk's keys from ch.start; scores go to log2 units (scale_log2),
// keys the mask rule hides (in a partial chunk) to -inf, then per row (this thread's slots:
// rows qi[slot], first visible key lo[slot]) the running max m and sum l take the chunk in,
// s is left holding P (fp32), ready for O += P V, and alpha[slot] is the factor the row's
// accumulator must be rescaled by (the change of max) before P V is added to it.
template <int kChunk>
__device__ __forceinline__ void softmax_scores(float (&s)[kChunk / 8][4], const Chunk& ch, const int (&qi)[2],
                                               const int (&lo)[2], int T, float scale_log2, float (&m)[2],
                                               float (&l)[2], float (&alpha)[2], int lane) {
  scale_and_mask<kChunk>(s, ch, qi, lo, T, scale_log2, lane);
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) {
    float mx = kNegInf;
    SR_UNROLL
    for (int nb = 0; nb < kChunk / 8; ++nb) mx = fmaxf(mx, fmaxf(s[nb][2 * slot], s[nb][2 * slot + 1]));
    mx = quad_max(mx);
    alpha[slot] = softmax_chunk<kChunk / 4>(
        [&](int k) -> float& { return s[k >> 1][2 * slot + (k & 1)]; }, mx, m[slot], l[slot]);
  }
}

// o *= alpha, row by row (this thread's two slots).
template <int D>
__device__ __forceinline__ void rescale_rows(float (&o)[D / 8][4], const float (&alpha)[2]) {
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot)
    SR_UNROLL
    for (int nb = 0; nb < D / 8; ++nb) {
      o[nb][2 * slot] *= alpha[slot];
      o[nb][2 * slot + 1] *= alpha[slot];
    }
}

// Both: the chunk's softmax with the accumulator rescaled at once (the accumulator is not
// being written by a product in flight).
template <int kChunk, int D>
__device__ __forceinline__ void softmax_step(float (&s)[kChunk / 8][4], float (&o)[D / 8][4],
                                             const Chunk& ch, const int (&qi)[2], const int (&lo)[2],
                                             int T, float scale_log2, float (&m)[2], float (&l)[2],
                                             int lane) {
  float alpha[2];
  softmax_scores<kChunk>(s, ch, qi, lo, T, scale_log2, m, l, alpha, lane);
  rescale_rows<D>(o, alpha);
}

// The end of a query tile for a warp: each row's lse (natural log) to a.lse and out = O / l
// (bf16) through the warp's own 16 rows of shared memory `stage` (row stride D + 8) to
// global memory; rows past T are not written. q0: the tile's first row, row0: the
// sequence's first row of [N, C], h: the head.
template <int D>
__device__ __forceinline__ void finish_tile(const ForwardArgs& a, const float (&o)[D / 8][4],
                                            const float (&m)[2], const float (&l)[2],
                                            const int (&qi)[2], int seq, int h, int q0,
                                            int64_t row0, bf16* stage, int warp, int lane) {
  const int T = a.plan.T;
  float mul[2];
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) {
    const RowEnd e = finish_row(m[slot], quad_sum(l[slot]));
    mul[slot] = e.inv_l;
    if ((lane & 3) == 0 && qi[slot] < T) a.lse[(int64_t(seq) * a.H + h) * T + qi[slot]] = e.lse;
  }
  const int r0 = q0 + warp * 16;
  store_rows<D>(o, mul, stage, static_cast<bf16*>(a.out) + (row0 + r0) * a.ld + int64_t(h) * D, a.ld,
                T - r0, lane);
}

}  // namespace speedrun::cuda::attn
