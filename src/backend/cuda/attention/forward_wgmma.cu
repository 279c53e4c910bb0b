// Attention forward on Hopper's warpgroup products (wgmma.cuh, sm_90a): the forward kernel
// of forward.cu with S = Q K^T and O += P V issued by a warpgroup (4 warps, 64 query rows)
// instead of per warp through ldmatrix and mma.sync. The same work list, chunks of 64 keys
// loaded through cp.async, online softmax per warp on the same accumulator fragments, and
// the same outputs: only the products' summation order differs (the tensor cores' own), so
// results agree within fp32 rounding, not bit for bit.
//
// The products of consecutive chunks overlap: a chunk's O += P V is issued together with
// the next chunk's S = Q K^T and waited for only after that chunk's softmax, so the tensor
// cores multiply while the warps exponentiate (the order of the arithmetic is unchanged:
// O is rescaled to a chunk's max once the previous chunk's P V is in it). Chunks go through
// 3 buffers: one loading, one being multiplied, one whose V the P V in flight reads.
//
// What differs from forward.cu: K and V chunks sit in shared memory in core-matrix order
// (wgmma.cuh's core_offset), so the tensor cores read them without ldmatrix; a chunk is
// skipped by a warpgroup whose 64 rows see nothing of it (a wgmma is issued by the whole
// warpgroup: forward.cu's warps skip by their 16 rows), and not loaded where no row of the
// tile sees it, as forward.cu's. Q stays in registers as A fragments (loaded once through ldmatrix from a padded
// tile, which also stages the output rows).
#include <algorithm>

#include "backend/cuda/attention/forward_steps.cuh"
#include "backend/cuda/attention/walk.cuh"
#include "backend/cuda/attention/wgmma.cuh"

namespace speedrun::cuda::attn {

namespace {

template <int D>
__global__ void __launch_bounds__(kThreads, D == 64 ? 2 : 1) forward_wgmma_kernel(const ForwardArgs a) {
  constexpr int kChunk = kWgmmaChunk;
  constexpr int kLd = smem_ld(D);
  constexpr int kStage = kChunk * D * 2;  // bytes of one K or V chunk
  SR_DYNAMIC_SMEM(smem_raw);
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);                      // [kTile][kLd]
  unsigned char* sK = smem_raw + size_t(kTile) * kLd * 2;            // [kWgmmaStages][kStage]
  unsigned char* sV = sK + kWgmmaStages * kStage;                    // [kWgmmaStages][kStage]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int T = a.plan.T;
  const Site site = site_of<D>(a.plan.q_items, a.H, T);
  const int q0 = site.r0;
  const bf16* kbase = static_cast<const bf16*>(a.k) + site.row0 * a.ld + site.head;
  const bf16* vbase = static_cast<const bf16*>(a.v) + site.row0 * a.ld + site.head;
  const float scale_log2 = a.scale * kLog2e;

  load_rows<kTile, D>(sQ, static_cast<const bf16*>(a.q) + (site.row0 + q0) * a.ld + site.head, a.ld,
                      T - q0, tid);
  cp_async_commit();
  const ChunkWalk<kChunk, true, kWgmmaStages> walk(a.plan, site);
  auto load = [&](const Chunk& ch, int st) {
    load_rows_core<kChunk, D>(sK + st * kStage, kbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_rows_core<kChunk, D>(sV + st * kStage, vbase + ch.start * a.ld, a.ld, T - ch.start, tid);
  };
  const WalkedChunk first = walk.issue(0, load);

  int qi[2], lo[2];
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) {
    qi[slot] = q0 + warp * 16 + c_row(lane, 2 * slot);
    lo[slot] = qi[slot] < T ? a.plan.lo[site.row0 + qi[slot]] : 0;
  }
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
  float o[D / 8][4] = {};
  uint32_t qf[D / 16][4];  // this warp's 16 rows of Q as A fragments, from chunk 0 on
  // P of the last chunk this warpgroup multiplied, as A fragments (bf16), and the stage of
  // its V: its O += P V is issued with the next chunk's S = Q K^T, so that it runs while
  // that chunk's softmax does (-1: none pending).
  uint32_t pf[kChunk / 16][4];
  int pending = -1;
  auto issue_pv = [&](int st) {  // O += P V for the pending chunk; the caller fenced
    const unsigned char* v_st = sV + st * kStage;
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk)
      wgmma<D, true>(o, pf[kk], smem_desc(v_st + kk * 32 * D, 16 * D, 128), true);
    wgmma_commit();
  };
  auto finish_pending = [&] {
    fence_operands(o);
    wgmma_fence();
    issue_pv(pending);
    wgmma_wait<0>();
    fence_operands(o);
    pending = -1;
  };

  // Q and each chunk are fenced for the tensor cores' reads (the async proxy) as they land.
  walk.template run<true>(first, load, [&](int c, const Chunk& ch, int st) {
    if (c == 0) load_a_frags<D>(qf, sQ + warp * 16 * kLd, kLd, lane);
    // A chunk none of this warpgroup's 64 rows sees adds nothing: skip it (uniform over the
    // warpgroup, whose products are collective; one the tile does not see was not loaded).
    // A pending P V is finished first: its V's stage is reloaded after this chunk.
    if (!warp_uniform(walk.seen_by_warpgroup(ch, warp >> 2))) {
      if (pending >= 0) finish_pending();
      return;
    }
    const unsigned char* k_st = sK + st * kStage;
    float s[kChunk / 8][4] = {};  // the first product overwrites them (scale-d 0)
    fence_operands(s);
    fence_operands(o);
    wgmma_fence();  // qf, s, and o and pf for the pending P V, were written by ordinary instructions
    SR_UNROLL
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma<kChunk, false>(s, qf[kk], smem_desc(k_st + kk * 256, 128, 16 * D), kk > 0);
    wgmma_commit();
    if (pending >= 0) {
      // pf were written by ordinary instructions: ptxas wants the fence right before
      // the products that read them (it adds one there otherwise, note C7519).
      wgmma_fence();
      issue_pv(pending);
      wgmma_wait<1>();  // S has landed; the previous chunk's P V may still run
    } else {
      wgmma_wait<0>();
    }
    fence_operands(s);
    float alpha[2];
    softmax_scores<kChunk>(s, ch, qi, lo, T, scale_log2, m, l, alpha, lane);
    // The pending P V, if any, lands before O is rescaled. Unconditional (with none in flight
    // it returns at once): under a second `pending >= 0` test ptxas cannot tell that every
    // path that issued the product waits for it, and serializes the products (C7515).
    wgmma_wait<0>();
    fence_operands(o);
    rescale_rows<D>(o, alpha);  // O, now holding every chunk before this one, to this one's max
    SR_UNROLL
    for (int kk = 0; kk < kChunk / 16; ++kk) a_from_c(pf[kk], s[2 * kk], s[2 * kk + 1]);
    pending = warp_uniform(st);  // uniform to ptxas too (see warp_uniform)
  });
  if (pending >= 0) finish_pending();  // the last chunk's P V

  finish_tile<D>(a, o, m, l, qi, site.it.seq, site.h, q0, site.row0, sQ + warp * 16 * kLd, warp, lane);
}

template <int D>
cudaError_t prepare() {
  return cudaFuncSetAttribute(forward_wgmma_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              int(fwd_wgmma_smem(D)));
}

template <int D>
cudaError_t launch(const ForwardArgs& a, cudaStream_t stream) {
  const dim3 grid(unsigned(a.plan.n_q_items) * unsigned(a.H));
  SR_LAUNCH(grid, kThreads, fwd_wgmma_smem(D), stream, forward_wgmma_kernel<D>)(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t prepare_forward_wgmma(int D) { return D == 64 ? prepare<64>() : prepare<128>(); }

cudaError_t launch_forward_wgmma(int D, const ForwardArgs& a, cudaStream_t stream) {
  return D == 64 ? launch<64>(a, stream) : launch<128>(a, stream);
}

int forward_wgmma_binary_version() {
  return std::min(binary_version_of(forward_wgmma_kernel<64>), binary_version_of(forward_wgmma_kernel<128>));
}

}  // namespace speedrun::cuda::attn
