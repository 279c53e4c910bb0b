// Attention forward on the GPU: one CTA per (query tile, head), in the plan's order (longest
// key-tile list first). 8 warps each own 16 query rows of the 128-row tile; the CTA walks
// the tile's listed key tiles in chunks of kChunk keys (fwd_chunk(D, tiling): plan.h),
// double-buffered through cp.async (walk.cuh): S = Q K^T and O += P V on the tensor cores
// (mma.sync m16n8k16 bf16, fp32 accumulate), the online softmax in fp32 registers
// (tile_math.h), the mask rule only in partial tiles. Writes out (bf16) and lse (fp32, natural log) of every real row.
#include "backend/cuda/attention/forward_steps.cuh"
#include "backend/cuda/attention/walk.cuh"

namespace speedrun::cuda::attn {

namespace {

template <int D, int kChunk>
__global__ void __launch_bounds__(kThreads) forward_kernel(const ForwardArgs a) {
  constexpr int kLd = smem_ld(D);
  constexpr bool kKeepQ = fwd_keeps_q(D);  // the warp's Q rows stay in registers (plan.h)
  SR_DYNAMIC_SMEM(smem_raw);
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [kTile][kLd]
  bf16* sK = sQ + kTile * kLd;                     // [2][kChunk][kLd]
  bf16* sV = sK + 2 * kChunk * kLd;                // [2][kChunk][kLd]

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
  const ChunkWalk<kChunk, true> walk(a.plan, site);
  auto load = [&](const Chunk& ch, int st) {
    load_rows<kChunk, D>(sK + st * kChunk * kLd, kbase + ch.start * a.ld, a.ld, T - ch.start, tid);
    load_rows<kChunk, D>(sV + st * kChunk * kLd, vbase + ch.start * a.ld, a.ld, T - ch.start, tid);
  };
  const WalkedChunk first = walk.issue(0, load);

  // This thread's two rows (accumulator slots 0 and 1: rows g and g + 8 of its warp).
  int qi[2], lo[2];
  SR_UNROLL
  for (int slot = 0; slot < 2; ++slot) {
    qi[slot] = q0 + warp * 16 + c_row(lane, 2 * slot);
    lo[slot] = qi[slot] < T ? a.plan.lo[site.row0 + qi[slot]] : 0;
  }
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
  float o[D / 8][4] = {};
  uint32_t qf[kKeepQ ? D / 16 : 1][4];  // with kKeepQ: this warp's Q, from chunk 0 on

  walk.template run<false, D != 64>(first, load, [&](int c, const WalkedChunk& ch, int st) {
    if constexpr (kKeepQ)
      if (c == 0) load_a_frags<D>(qf, sQ + warp * 16 * kLd, kLd, lane);
    // A partial chunk none of this warp's rows sees adds nothing: skip it (tile_math.h).
    const bool live = ch.needed &&  // uniform over the block, so every lane votes below
                      (ch.full || warp_rows_see_any(qi, lo, T, ch.start, ch.start + kChunk - 1));
    if (!live) return;
    float s[kChunk / 8][4] = {};
    if constexpr (kKeepQ)
      gemm_abt<D, kChunk>(s, qf, sK + st * kChunk * kLd, kLd, lane);
    else
      gemm_abt<D, kChunk>(s, sQ + warp * 16 * kLd, kLd, sK + st * kChunk * kLd, kLd, lane);
    softmax_step<kChunk, D>(s, o, ch, qi, lo, T, scale_log2, m, l, lane);
    gemm_cb<kChunk, D>(o, s, sV + st * kChunk * kLd, kLd, lane);
  });

  finish_tile<D>(a, o, m, l, qi, site.it.seq, site.h, q0, site.row0, sQ + warp * 16 * kLd, warp, lane);
}

// The kernel of head dim D with tiling T's chunk (plan.h).
template <int D, Tiling T>
cudaError_t prepare() {
  return cudaFuncSetAttribute(forward_kernel<D, fwd_chunk(D, T)>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize, int(fwd_smem(D, T)));
}

template <int D, Tiling T>
cudaError_t launch(const ForwardArgs& a, cudaStream_t stream) {
  const dim3 grid(unsigned(a.plan.n_q_items) * unsigned(a.H));
  SR_LAUNCH(grid, kThreads, fwd_smem(D, T), stream, forward_kernel<D, fwd_chunk(D, T)>)(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t prepare_forward(int D, Tiling t) {
  return with_kernel_set(D, t, [&]<int kD, Tiling kT>() { return prepare<kD, kT>(); });
}

cudaError_t launch_forward(int D, Tiling t, const ForwardArgs& a, cudaStream_t stream) {
  return with_kernel_set(D, t, [&]<int kD, Tiling kT>() { return launch<kD, kT>(a, stream); });
}

}  // namespace speedrun::cuda::attn
