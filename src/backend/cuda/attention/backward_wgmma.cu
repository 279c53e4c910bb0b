// Attention backward on Hopper's warpgroup products (wgmma.cuh, sm_90a): backward.cu's two
// kernels with every tile product issued by a warpgroup (4 warps, 64 rows) instead of per
// warp through ldmatrix and mma.sync. The same work lists, the same split (dq kernel first,
// writing D = rowsum(dO * O) for the dK/dV kernel), chunks of 64 partner rows loaded
// through cp.async (3 buffers for dQ, whose last product overlaps the next chunk's; 2 for
// dK/dV, whose registers leave no room for that), and the same scores-to-dS step on the
// same accumulator fragments (backward_steps.cuh): only the products' summation order
// differs (the tensor cores' own), so results agree with backward.cu's within fp32
// rounding, not bit for bit. Deterministic: no atomics, every output row summed by one
// warpgroup in list order.
//
// Operands: the CTA's own tile (Q and dO for dQ; K and V for dK/dV) sits in shared memory in
// core-matrix order and is read by the tensor cores as a K-major A (wgmma_ss), so it holds
// no registers; the chunks (K and V for dQ; Q and dO for dK/dV) sit there the same way and
// serve both as a K-major B (S = Q K^T, dP = dO V^T; S^T = K Q^T, dP^T = V dO^T) and as a
// transposed, MN-major B (dQ += dS K; dV += P^T dO, dK += dS^T Q), with dS and P^T fed from
// the accumulators as register A fragments. Per chunk and warpgroup: dQ 3 products (2 of
// 64 x 64 x D, 1 of 64 x D x 64), dK/dV 4 (2 and 2). A chunk no row of the CTA's tile sees
// is not loaded, and a warpgroup whose 64 rows see nothing of a chunk skips its products
// (backward.cu's warps skip by their 16 rows: a wgmma is issued by the whole warpgroup).
#include <algorithm>

#include "backend/cuda/attention/backward_steps.cuh"
#include "backend/cuda/attention/wgmma.cuh"

namespace speedrun::cuda::attn {

namespace {

// A no-swizzle descriptor of rows [64 g, 64 g + 64) of a K-major operand in core-matrix
// order (wgmma.cuh), at k-step kk: warpgroup g's A, or a chunk's B (g = 0).
template <int D>
__device__ __forceinline__ uint64_t k_major(const unsigned char* base, int g, int kk) {
  return smem_desc(base + g * 128 * D + kk * 256, 128, 16 * D);
}
// The same operand as a transposed (MN-major) B [k = row][n = d], at k-step kk (16 rows).
template <int D>
__device__ __forceinline__ uint64_t mn_major(const unsigned char* base, int kk) {
  return smem_desc(base + kk * 32 * D, 16 * D, 128);
}

// dQ's products of consecutive chunks overlap, as the forward's do: a chunk's dQ += dS K is
// issued with the next chunk's S and dP and waited for after that chunk's dS step, so the
// tensor cores multiply while the warps exponentiate (dQ sums the same terms in the same
// order). The K a product in flight reads must outlive the next load: 3 buffers. At D = 64
// each dQ += dS K is waited for at once: the overlap's registers would spill there at the
// two CTAs per SM that D allows.
template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 2 : 1) dq_wgmma_kernel(const BackwardArgs a) {
  constexpr int kChunk = kWgmmaChunk;
  constexpr int kTileBytes = kTile * D * 2, kStage = kChunk * D * 2;
  SR_DYNAMIC_SMEM(smem_raw);
  unsigned char* sQ = smem_raw;                        // [kTile rows], core order
  unsigned char* sdO = sQ + kTileBytes;                // [kTile rows]
  unsigned char* sK = sdO + kTileBytes;                // [kWgmmaStages][kChunk rows]
  unsigned char* sV = sK + kWgmmaStages * kStage;      // [kWgmmaStages][kChunk rows]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
  const int T = a.plan.T;
  const Site site = site_of<D>(a.plan.q_items, a.H, T);
  const int q0 = site.r0;
  const bf16* kbase = site.seq(a.k, a.ld);
  const bf16* vbase = site.seq(a.v, a.ld);
  const float scale_log2 = a.scale * kLog2e;

  load_rows_core<kTile, D>(sQ, site.seq(a.q, a.ld) + q0 * a.ld, a.ld, T - q0, tid);
  load_rows_core<kTile, D>(sdO, site.seq(a.dout, a.ld) + q0 * a.ld, a.ld, T - q0, tid);
  cp_async_commit();
  const ChunkWalk<kChunk, true, kWgmmaStages> walk(a.plan, site);
  auto load = [&](const Chunk& ch, int st) {
    load_rows_core<kChunk, D>(sK + st * kStage, kbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_rows_core<kChunk, D>(sV + st * kStage, vbase + ch.start * a.ld, a.ld, T - ch.start, tid);
  };
  const WalkedChunk first = walk.issue(0, load);

  int qi[2], lo[2];
  float lse2[2], delta[2];
  query_rows(a, site, warp, lane, qi, lo, lse2);
  warp_deltas<D, D != 64>(a, site.row0, site.stat0, site.h, q0, warp, lane, delta);  // (its note)
  float dq[D / 8][4] = {};
  // dS of the last chunk this warpgroup multiplied, as A fragments (bf16), and the stage of
  // its K: its dQ += dS K is issued with the next chunk's products (-1: none pending).
  constexpr bool kOverlap = D != 64;
  uint32_t df[kChunk / 16][4];
  int pending = -1;
  auto issue_dq = [&](int st) {  // dQ += dS K for the pending chunk; the caller fenced
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk)
      wgmma<D, true>(dq, df[kk], mn_major<D>(sK + st * kStage, kk), true);
    wgmma_commit();
  };
  auto finish_pending = [&] {
    fence_operands(dq);
    wgmma_fence();
    issue_dq(pending);
    wgmma_wait<0>();
    fence_operands(dq);
    pending = -1;
  };

  // The tiles and each chunk are fenced for the tensor cores' reads (the async proxy) as they land.
  walk.template run<true>(first, load, [&](int, const Chunk& ch, int st) {
    // A chunk none of this warpgroup's 64 rows sees adds nothing: skip it (uniform over the
    // warpgroup, whose products are collective; one the tile does not see was not loaded),
    // finishing the pending product first (its K's stage is reloaded after this chunk).
    if (!warp_uniform(walk.seen_by_warpgroup(ch, wg))) {
      if (pending >= 0) finish_pending();
      return;
    }
    const unsigned char* k_st = sK + st * kStage;
    const unsigned char* v_st = sV + st * kStage;
    float s[kChunk / 8][4] = {}, dp[kChunk / 8][4] = {};  // overwritten (scale-d 0)
    fence_operands(s);
    fence_operands(dp);
    fence_operands(dq);
    wgmma_fence();  // s, dp, and dq and df for the pending product, written by ordinary instructions
    SR_UNROLL
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss<kChunk, false>(s, k_major<D>(sQ, wg, kk), k_major<D>(k_st, 0, kk), kk > 0);
    SR_UNROLL
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_ss<kChunk, false>(dp, k_major<D>(sdO, wg, kk), k_major<D>(v_st, 0, kk), kk > 0);
    wgmma_commit();
    if (pending >= 0) {
      // df were written by ordinary instructions: ptxas wants the fence right before
      // the products that read them (it adds one there otherwise, note C7519).
      wgmma_fence();
      issue_dq(pending);
      wgmma_wait<1>();  // S and dP have landed; the previous chunk's dQ += dS K may still run
    } else {
      wgmma_wait<0>();
    }
    fence_operands(s);
    fence_operands(dp);
    dq_scores<kChunk>(s, dp, ch, qi, lo, T, scale_log2, lse2, delta, lane);
    // df is read by the product in flight, if any, until here. Unconditional (with none in
    // flight it returns at once): under a second `pending >= 0` test ptxas cannot tell that
    // every path that issued the product waits for it, and serializes the products.
    wgmma_wait<0>();
    fence_operands(dq);
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk) a_from_c(df[kk], s[2 * kk], s[2 * kk + 1]);
    pending = warp_uniform(st);  // uniform to ptxas too (see warp_uniform)
    if constexpr (!kOverlap) finish_pending();
  });
  if (pending >= 0) finish_pending();  // the last chunk's dQ += dS K
  cp_async_wait<0>();  // the chunk buffers stage the output below
  __syncthreads();

  const int r0 = q0 + warp * 16;
  const float sc[2] = {a.scale, a.scale};
  store_rows<D>(dq, sc, reinterpret_cast<bf16*>(sK) + warp * 16 * smem_ld(D),
                site.seq(a.dq, a.ld) + r0 * a.ld, a.ld, T - r0, lane);
}

template <int D>
__global__ void __launch_bounds__(kThreads) dkv_wgmma_kernel(const BackwardArgs a) {
  constexpr int kChunk = kWgmmaChunk;
  constexpr int kTileBytes = kTile * D * 2, kStage = kChunk * D * 2;
  SR_DYNAMIC_SMEM(smem_raw);
  unsigned char* sK = smem_raw;             // [kTile rows], core order
  unsigned char* sV = sK + kTileBytes;      // [kTile rows]
  unsigned char* sQ = sV + kTileBytes;      // [2][kChunk rows]
  unsigned char* sdO = sQ + 2 * kStage;     // [2][kChunk rows]
  float* sLse = reinterpret_cast<float*>(sdO + 2 * kStage);         // [2][kChunk]
  float* sDelta = sLse + 2 * kChunk;                                // [2][kChunk]
  int32_t* sLo = reinterpret_cast<int32_t*>(sDelta + 2 * kChunk);   // [2][kChunk]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
  const int T = a.plan.T;
  const Site site = site_of<D>(a.plan.k_items, a.H, T);
  const int k0 = site.r0;
  const bf16* qbase = site.seq(a.q, a.ld);
  const bf16* gbase = site.seq(a.dout, a.ld);
  const float scale_log2 = a.scale * kLog2e;

  load_rows_core<kTile, D>(sK, site.seq(a.k, a.ld) + k0 * a.ld, a.ld, T - k0, tid);
  load_rows_core<kTile, D>(sV, site.seq(a.v, a.ld) + k0 * a.ld, a.ld, T - k0, tid);
  cp_async_commit();
  const ChunkWalk<kChunk, false> walk(a.plan, site);
  auto load = [&](const Chunk& ch, int st) {
    load_rows_core<kChunk, D>(sQ + st * kStage, qbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_rows_core<kChunk, D>(sdO + st * kStage, gbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_query_stats<kChunk>(a, ch, st, sLse, sDelta, sLo, site.row0, site.stat0, tid);
  };
  const WalkedChunk first = walk.issue(0, load);

  int kj[2];  // this thread's two keys
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) kj[slot] = k0 + warp * 16 + c_row(lane, 2 * slot);
  float dk[D / 8][4] = {}, dv[D / 8][4] = {};

  walk.template run<true>(first, load, [&](int, const Chunk& ch, int st) {
    if (!walk.seen_by_warpgroup(ch, wg)) return;  // none of this warpgroup's 64 keys is seen
    const unsigned char* q_st = sQ + st * kStage;
    const unsigned char* g_st = sdO + st * kStage;
    float s[kChunk / 8][4] = {}, dp[kChunk / 8][4] = {};  // overwritten (scale-d 0)
    fence_operands(s);
    fence_operands(dp);
    wgmma_fence();
    SR_UNROLL
    for (int kk = 0; kk < D / 16; ++kk)  // S^T: keys x queries
      wgmma_ss<kChunk, false>(s, k_major<D>(sK, wg, kk), k_major<D>(q_st, 0, kk), kk > 0);
    SR_UNROLL
    for (int kk = 0; kk < D / 16; ++kk)  // dP^T
      wgmma_ss<kChunk, false>(dp, k_major<D>(sV, wg, kk), k_major<D>(g_st, 0, kk), kk > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(s);
    fence_operands(dp);
    dkv_scores<kChunk>(s, dp, ch, kj, sLse + st * kChunk, sDelta + st * kChunk, sLo + st * kChunk, T,
                       scale_log2, lane);
    uint32_t pf[kChunk / 16][4], df[kChunk / 16][4];  // P^T and dS^T as A fragments (bf16)
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk) {
      a_from_c(pf[kk], s[2 * kk], s[2 * kk + 1]);
      a_from_c(df[kk], dp[2 * kk], dp[2 * kk + 1]);
    }
    fence_operands(dv);
    fence_operands(dk);
    wgmma_fence();
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk) wgmma<D, true>(dv, pf[kk], mn_major<D>(g_st, kk), true);
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk) wgmma<D, true>(dk, df[kk], mn_major<D>(q_st, kk), true);
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(dv);
    fence_operands(dk);
  });
  cp_async_wait<0>();  // the chunk and tile buffers stage the outputs below
  __syncthreads();

  const int r0 = k0 + warp * 16;
  const float one[2] = {1.f, 1.f}, sc[2] = {a.scale, a.scale};
  store_rows<D>(dv, one, reinterpret_cast<bf16*>(sQ) + warp * 16 * smem_ld(D),
                site.seq(a.dv, a.ld) + r0 * a.ld, a.ld, T - r0, lane);
  store_rows<D>(dk, sc, reinterpret_cast<bf16*>(sK) + warp * 16 * smem_ld(D),
                site.seq(a.dk, a.ld) + r0 * a.ld, a.ld, T - r0, lane);
}

// The staging of the outputs (8 warps x 16 rows of D + 8 bf16) fits where it goes.
static_assert(kWarps * 16 * smem_ld(128) * 2 <= 4 * kWgmmaChunk * 128 * 2, "dq's stage in its chunks");
static_assert(kWarps * 16 * smem_ld(128) * 2 <= 2 * kTile * 128 * 2, "dk's stage in its tiles");
static_assert(kWarps * 16 * smem_ld(64) * 2 <= 4 * kWgmmaChunk * 64 * 2, "the same at head dim 64");

template <int D>
cudaError_t prepare() {
  cudaError_t e = cudaFuncSetAttribute(dq_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(dq_wgmma_smem(D)));
  if (e != cudaSuccess) return e;
  return cudaFuncSetAttribute(dkv_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              int(dkv_wgmma_smem(D)));
}

template <int D>
cudaError_t launch(const BackwardArgs& a, cudaStream_t stream) {
  // dq first: it writes the D that the dK/dV kernel reads.
  SR_LAUNCH(dim3(unsigned(a.plan.n_q_items) * unsigned(a.H)), kThreads, dq_wgmma_smem(D), stream,
            dq_wgmma_kernel<D>)(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  SR_LAUNCH(dim3(unsigned(a.plan.n_k_items) * unsigned(a.H)), kThreads, dkv_wgmma_smem(D), stream,
            dkv_wgmma_kernel<D>)(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t prepare_backward_wgmma(int D) { return D == 64 ? prepare<64>() : prepare<128>(); }

cudaError_t launch_backward_wgmma(int D, const BackwardArgs& a, cudaStream_t stream) {
  return D == 64 ? launch<64>(a, stream) : launch<128>(a, stream);
}

int backward_wgmma_binary_version() {
  return std::min({binary_version_of(dq_wgmma_kernel<64>), binary_version_of(dq_wgmma_kernel<128>),
                   binary_version_of(dkv_wgmma_kernel<64>), binary_version_of(dkv_wgmma_kernel<128>)});
}

}  // namespace speedrun::cuda::attn
