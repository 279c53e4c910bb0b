// Attention backward on the GPU, deterministic (no atomics: every output row is summed by
// one warp in list order), FlashAttention-2's split into two launches:
//  1. dq_kernel: one CTA per (query tile, head), 8 warps of 16 queries; first D_i =
//     rowsum(dO_i * O_i) in fp32 for its rows (written for dkv_kernel: every query tile is
//     one CTA's, so every row's D is written once), then walks the query tile's listed key
//     tiles in chunks of dq_chunk(D, tiling) keys (plan.h): S, P, dP = dO V^T, dS, dQ += dS K.
//  2. dkv_kernel: one CTA per (key tile, head), 8 warps of 16 keys; walks the key tile's
//     listed query tiles in chunks of dkv_chunk(D, tiling) queries: S^T = K Q^T, P^T from the
//     forward's lse, dP^T = V dO^T, dS^T = P^T (dP^T - D), dV += P^T dO, dK += dS^T Q.
// Both walk their partner chunks double-buffered through cp.async (walk.cuh).
// D in dq_kernel rather than a launch of its own: dO is read once for it (the CTA's own
// tile, just loaded, from cache) where a separate pass read all of it again.
// P and dS are recomputed in both passes (7 tile products instead of 5) to avoid atomics.
// Scores in log2 units, mask rule and dS: tile_math.h; the steps both backwards share:
// backward_steps.cuh. dQ and dK take the scale at the end.
#include "backend/cuda/attention/backward_steps.cuh"

namespace speedrun::cuda::attn {

namespace {

template <int D, int kChunk>
__global__ void __launch_bounds__(kThreads) dkv_kernel(const BackwardArgs a) {
  constexpr int kLd = smem_ld(D);
  SR_DYNAMIC_SMEM(smem_raw);
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [kTile][kLd]
  bf16* sV = sK + kTile * kLd;                     // [kTile][kLd]
  bf16* sQ = sV + kTile * kLd;                     // [2][kChunk][kLd]
  bf16* sdO = sQ + 2 * kChunk * kLd;               // [2][kChunk][kLd]
  float* sLse = reinterpret_cast<float*>(sdO + 2 * kChunk * kLd);  // [2][kChunk]
  float* sDelta = sLse + 2 * kChunk;                                // [2][kChunk]
  int32_t* sLo = reinterpret_cast<int32_t*>(sDelta + 2 * kChunk);   // [2][kChunk]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int T = a.plan.T;
  const Site site = site_of<D>(a.plan.k_items, a.H, T);
  const int k0 = site.r0;
  const bf16* qbase = site.seq(a.q, a.ld);
  const bf16* gbase = site.seq(a.dout, a.ld);
  const float scale_log2 = a.scale * kLog2e;

  load_rows<kTile, D>(sK, site.seq(a.k, a.ld) + k0 * a.ld, a.ld, T - k0, tid);
  load_rows<kTile, D>(sV, site.seq(a.v, a.ld) + k0 * a.ld, a.ld, T - k0, tid);
  cp_async_commit();
  const ChunkWalk<kChunk, false> walk(a.plan, site);
  auto load = [&](const Chunk& ch, int st) {
    load_rows<kChunk, D>(sQ + st * kChunk * kLd, qbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_rows<kChunk, D>(sdO + st * kChunk * kLd, gbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_query_stats<kChunk>(a, ch, st, sLse, sDelta, sLo, site.row0, site.stat0, tid);
  };
  const WalkedChunk first = walk.issue(0, load);

  const int kw0 = k0 + warp * 16;  // this warp's first key
  int kj[2];                       // this thread's two keys
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) kj[slot] = k0 + warp * 16 + c_row(lane, 2 * slot);
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};

  walk.template run<false>(first, load, [&](int, const WalkedChunk& ch, int st) {
    // A partial chunk whose queries see none of this warp's keys adds nothing: skip it (one
    // that sees none of the tile's keys was not loaded).
    bool live = ch.valid && ch.full;
    if (!ch.full && ch.needed) {  // uniform over the block: every lane votes
      bool mine = false;
      for (int q = lane; q < kChunk; q += 32)
        mine = mine || sees_any(ch.start + q, sLo[st * kChunk + q], T, kw0, kw0 + 15);
      live = __any_sync(0xffffffffu, mine);
    }
    if (!live) return;
    const bf16* q = sQ + st * kChunk * kLd;
    const bf16* g = sdO + st * kChunk * kLd;
    float s[kChunk / 8][4] = {}, dp[kChunk / 8][4] = {};
    gemm_abt<D, kChunk>(s, sK + warp * 16 * kLd, kLd, q, kLd, lane);   // S^T: keys x queries
    gemm_abt<D, kChunk>(dp, sV + warp * 16 * kLd, kLd, g, kLd, lane);  // dP^T
    dkv_scores<kChunk>(s, dp, ch, kj, sLse + st * kChunk, sDelta + st * kChunk, sLo + st * kChunk, T,
                       scale_log2, lane);
    gemm_cb<kChunk, D>(dv, s, g, kLd, lane);   // dV += P^T dO
    gemm_cb<kChunk, D>(dk, dp, q, kLd, lane);  // dK += dS^T Q
  });

  const int r0 = kw0;
  const float one[2] = {1.f, 1.f}, sc[2] = {a.scale, a.scale};
  store_rows<D>(dv, one, sV + warp * 16 * kLd,
                site.seq(a.dv, a.ld) + r0 * a.ld, a.ld, T - r0, lane);
  store_rows<D>(dk, sc, sK + warp * 16 * kLd,
                site.seq(a.dk, a.ld) + r0 * a.ld, a.ld, T - r0, lane);
}

template <int D, int kChunk>
__global__ void __launch_bounds__(kThreads) dq_kernel(const BackwardArgs a) {
  constexpr int kLd = smem_ld(D);
  SR_DYNAMIC_SMEM(smem_raw);
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kTile][kLd]
  bf16* sdO = sQ + kTile * kLd;                    // [kTile][kLd]
  bf16* sK = sdO + kTile * kLd;                    // [2][kChunk][kLd]
  bf16* sV = sK + 2 * kChunk * kLd;                // [2][kChunk][kLd]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int T = a.plan.T;
  const Site site = site_of<D>(a.plan.q_items, a.H, T);
  const int q0 = site.r0;
  const bf16* kbase = site.seq(a.k, a.ld);
  const bf16* vbase = site.seq(a.v, a.ld);
  const float scale_log2 = a.scale * kLog2e;

  load_rows<kTile, D>(sQ, site.seq(a.q, a.ld) + q0 * a.ld, a.ld, T - q0, tid);
  load_rows<kTile, D>(sdO, site.seq(a.dout, a.ld) + q0 * a.ld, a.ld, T - q0, tid);
  cp_async_commit();
  const ChunkWalk<kChunk, true> walk(a.plan, site);
  auto load = [&](const Chunk& ch, int st) {
    load_rows<kChunk, D>(sK + st * kChunk * kLd, kbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_rows<kChunk, D>(sV + st * kChunk * kLd, vbase + ch.start * a.ld, a.ld, T - ch.start, tid);
  };
  const WalkedChunk first = walk.issue(0, load);

  int qi[2], lo[2];
  float lse2[2], delta[2];
  query_rows(a, site, warp, lane, qi, lo, lse2);
  warp_deltas<D>(a, site.row0, site.stat0, site.h, q0, warp, lane, delta);
  float dq[D / 8][4] = {};
  uint32_t qf[D / 16][4], gf[D / 16][4];  // this warp's Q and dO, from chunk 0 on (plan.h)

  walk.template run<false>(first, load, [&](int c, const WalkedChunk& ch, int st) {
    if (c == 0) {
      load_a_frags<D>(qf, sQ + warp * 16 * kLd, kLd, lane);
      load_a_frags<D>(gf, sdO + warp * 16 * kLd, kLd, lane);
    }
    // A partial chunk none of this warp's rows sees adds nothing: skip it.
    const bool live = ch.needed &&  // uniform over the block, so every lane votes below
                      (ch.full || warp_rows_see_any(qi, lo, T, ch.start, ch.start + kChunk - 1));
    if (!live) return;
    const bf16* kc = sK + st * kChunk * kLd;
    float s[kChunk / 8][4] = {}, dp[kChunk / 8][4] = {};
    gemm_abt<D, kChunk>(s, qf, kc, kLd, lane);
    gemm_abt<D, kChunk>(dp, gf, sV + st * kChunk * kLd, kLd, lane);
    dq_scores<kChunk>(s, dp, ch, qi, lo, T, scale_log2, lse2, delta, lane);
    gemm_cb<kChunk, D>(dq, s, kc, kLd, lane);  // dQ += dS K
  });

  const int r0 = q0 + warp * 16;
  const float sc[2] = {a.scale, a.scale};
  store_rows<D>(dq, sc, sQ + warp * 16 * kLd,
                site.seq(a.dq, a.ld) + r0 * a.ld, a.ld, T - r0, lane);
}

// The kernels of head dim D with tiling T's chunks (plan.h).
template <int D, Tiling T>
cudaError_t launch(const BackwardArgs& a, cudaStream_t stream) {
  // dq_kernel first: it writes the D that dkv_kernel reads.
  SR_LAUNCH(dim3(unsigned(a.plan.n_q_items) * unsigned(a.H)), kThreads, dq_smem(D, T), stream,
            dq_kernel<D, dq_chunk(D, T)>)(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  SR_LAUNCH(dim3(unsigned(a.plan.n_k_items) * unsigned(a.H)), kThreads, dkv_smem(D, T), stream,
            dkv_kernel<D, dkv_chunk(D, T)>)(a);
  return cudaGetLastError();
}

template <int D, Tiling T>
cudaError_t prepare() {
  cudaError_t e = cudaFuncSetAttribute(dkv_kernel<D, dkv_chunk(D, T)>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(dkv_smem(D, T)));
  if (e != cudaSuccess) return e;
  return cudaFuncSetAttribute(dq_kernel<D, dq_chunk(D, T)>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, int(dq_smem(D, T)));
}

}  // namespace

cudaError_t prepare_backward(int D, Tiling t) {
  return with_kernel_set(D, t, [&]<int kD, Tiling kT>() { return prepare<kD, kT>(); });
}

cudaError_t launch_backward(int D, Tiling t, const BackwardArgs& a, cudaStream_t stream) {
  return with_kernel_set(D, t, [&]<int kD, Tiling kT>() { return launch<kD, kT>(a, stream); });
}

}  // namespace speedrun::cuda::attn
