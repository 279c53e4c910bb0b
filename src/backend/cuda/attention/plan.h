// Host-side planning of the CUDA attention kernels (plain C++, tested on the CPU): the flat
// work lists the kernels walk, built from the BlockMasks of a micro-batch, their byte layout
// in one buffer (uploaded once per distinct set of masks), the launch shapes and shared
// memory per head dim, and the check that tells a new set of masks from the last one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/block_mask.h"
#include "backend/cuda/attention/tile_math.h"

namespace speedrun::cuda::attn {

// ---- kernel shapes --------------------------------------------------------------------------
// Forward and dQ: one CTA per (query tile, head), 8 warps of 16 query rows, walking the
// tile's key tiles in chunks of fwd_chunk / dq_chunk keys. dK/dV: one CTA per (key tile,
// head), 8 warps of 16 keys, walking the key tile's query tiles in chunks of dkv_chunk
// queries. Shared memory rows hold D bf16 plus 8 of padding (16 bytes: ldmatrix reads 8
// consecutive rows without bank conflicts). Chunks are double-buffered.
struct KernelShape {
  int threads;      // per CTA
  int rows;         // rows (queries, or keys for dK/dV) per CTA: one tile
  int chunk;        // partner rows per pipeline stage
  size_t smem;      // dynamic shared memory bytes
};
inline constexpr int kWarps = 8;
inline constexpr int kThreads = 32 * kWarps;
// The chunk sizes, by how much shared memory a CTA may have. kWide: the head dim 128
// kernels take up to 105,216 bytes (A100's 163 KiB and Hopper's 227 KiB per block hold it).
// kNarrow: half the partner rows per stage for head dim 128, so every kernel fits the 99 KiB
// (101,376 bytes) of sm_86 / sm_89 / sm_120 GPUs (RTX 30xx/40xx/50xx, A10, L4, L40S); more
// chunks, so more barriers per tile. Head dim 64 fits either way and has one set of sizes.
enum class Tiling { kWide, kNarrow };
const char* tiling_name(Tiling t);
constexpr int smem_ld(int D) { return D + 8; }
constexpr int fwd_chunk(int D, Tiling t) { return D > 64 && t == Tiling::kNarrow ? 32 : 64; }
constexpr int dq_chunk(int D, Tiling t) {
  return D > 64 ? (t == Tiling::kNarrow ? 16 : 32) : 64;
}
constexpr int dkv_chunk(int D, Tiling t) { return dq_chunk(D, t); }
// Whether the forward kernel holds its warp's 16 rows of Q in registers (as mma fragments,
// D / 16 x 4 registers) for all its chunks, instead of reading them from shared memory
// again for every chunk: D / 16 fewer ldmatrix per S = Q K^T. The dQ kernel always does so
// with its rows of Q and dO. On Hopper and Ampere, mma.sync's tensor cores outrun shared
// memory (an ldmatrix.x4 is 512 bytes, 4 cycles of an SM's 128 bytes a cycle, against 2
// cycles per mma on an A100), so these reads bound the kernels. Worth it where the kernel
// runs one CTA per SM anyway, so that the registers cost no occupancy: at head dim 128, the
// wide tiling by its registers and shared memory, the narrow one on the GPUs that take it
// (~100 KB of shared memory per SM, one CTA); dQ at both head dims. The head-dim-64 forward
// (127 registers) runs two CTAs per SM on A100 and Hopper and keeps re-reading Q.
constexpr bool fwd_keeps_q(int D) { return D > 64; }
// Q tile + (K, V) x 2 stages.
constexpr size_t fwd_smem(int D, Tiling t) {
  return size_t(kTile + 4 * fwd_chunk(D, t)) * smem_ld(D) * 2;
}
// Q, dO tiles + (K, V) x 2 stages.
constexpr size_t dq_smem(int D, Tiling t) {
  return size_t(2 * kTile + 4 * dq_chunk(D, t)) * smem_ld(D) * 2;
}
// K, V tiles + (Q, dO) x 2 stages + (lse, delta, lo) x 2 stages.
constexpr size_t dkv_smem(int D, Tiling t) {
  return size_t(2 * kTile + 4 * dkv_chunk(D, t)) * smem_ld(D) * 2 +
         size_t(2 * 3 * dkv_chunk(D, t)) * 4;
}
// The forward kernel: mma.sync per warp (forward.cu, every GPU of sm_80 or newer), or
// Hopper's warpgroup products (forward_wgmma.cu: sm_90 GPUs, built for sm_90a), chosen by
// SPEEDRUN_ATTENTION_FORWARD=mma|wgmma (default mma) until a GPU has timed both.
enum class ForwardKernel { kMma, kWgmma };
const char* forward_kernel_name(ForwardKernel k);
// The wgmma forward: chunks of 64 keys (one m64n64 product per k-step for S), K and V in
// core-matrix order (wgmma.cuh). Q tile (padded rows) + (K, V) x 3 stages: chunk c's P V
// runs while chunk c + 1's scores are formed and chunk c + 2 loads.
inline constexpr int kWgmmaChunk = 64;
inline constexpr int kWgmmaStages = 3;
constexpr size_t fwd_wgmma_smem(int D) {
  return size_t(kTile) * smem_ld(D) * 2 + size_t(2 * kWgmmaStages * kWgmmaChunk) * D * 2;
}
// The backward likewise: mma.sync per warp (backward.cu) or warpgroup products
// (backward_wgmma.cu: sm_90 GPUs, built for sm_90a), by SPEEDRUN_ATTENTION_BACKWARD=mma|wgmma
// (default mma). The wgmma kernels take chunks of kWgmmaChunk partner rows and hold
// everything in core-matrix order: dQ the Q and dO tiles + (K, V) x 3 stages (its dQ += dS K
// overlaps the next chunk, as the forward's P V); dK/dV the K and V tiles + (Q, dO) x 2
// stages + (lse, delta, lo) x 2 stages.
enum class BackwardKernel { kMma, kWgmma };
const char* backward_kernel_name(BackwardKernel k);
constexpr size_t dq_wgmma_smem(int D) {
  return size_t(2 * kTile + 2 * kWgmmaStages * kWgmmaChunk) * D * 2;
}
constexpr size_t dkv_wgmma_smem(int D) {
  return size_t(2 * kTile + 4 * kWgmmaChunk) * D * 2 + size_t(2 * 3 * kWgmmaChunk) * 4;
}
KernelShape forward_shape(int D, Tiling t);
KernelShape dq_shape(int D, Tiling t);
KernelShape dkv_shape(int D, Tiling t);
// The most dynamic shared memory any kernel of the tiling asks for (either head dim).
size_t max_smem(Tiling t);
// The tiling for a GPU whose CTAs may have `smem_per_block_optin` bytes of dynamic shared
// memory (cudaDevAttrMaxSharedMemoryPerBlockOptin): kWide where it fits, else kNarrow;
// an Error naming both sizes where neither does (no GPU of sm_80 or newer).
Tiling tiling_for(size_t smem_per_block_optin, const char* gpu);
// Whether the kernels have an instance for head dim D (64 and 128).
bool supported_head_dim(int64_t D);

// ---- the work lists ---------------------------------------------------------------------------
// Byte layout of one plan buffer: sections in this order, each 16-byte aligned.
//   q_items  WorkItem[n_q_items]  one per (sequence, query tile), longest list first (ItemOrder)
//   k_items  WorkItem[n_k_items]  one per (sequence, key tile), likewise
//   q_list   int32[n_entries]     the masks' q_kv / q_full as entries, sequence after sequence
//   k_list   int32[n_entries]     the masks' k_q / k_full likewise
//   lo       int32[B*T]           first visible key of each query (tile_math.h, visible())
// Grids are flat: CTA x of a launch is item x / H, head x % H, so the longest items of every
// head start first. Ties keep (sequence, tile) order, so the plan is a function of the masks.
struct PlanLayout {
  int64_t B = 0, T = 0;
  int64_t n_q_items = 0, n_k_items = 0, n_entries = 0;
  size_t q_items = 0, k_items = 0, q_list = 0, k_list = 0, lo = 0;  // byte offsets
  size_t bytes = 0;                                                // whole buffer
};

// Validates the masks for the CUDA kernels (one T, 128-token tiles, well-formed lists) and
// returns the layout. `op` prefixes error messages.
PlanLayout plan_layout(const char* op, const std::vector<BlockMask>& masks);
// The size of the largest plan that masks of B sequences of T tokens have: every query tile
// listing every key tile at or below it (masks are causal: build_block_mask lists no tile
// above the diagonal). The runner sizes its buffers to it when it first sees (B, T), so
// later masks (the window grows over a run) never make them grow: no allocation, and no
// wait for the GPU to release the old buffer, in a step. At the record's T = 65,536: 1.3 MB.
size_t plan_bytes_bound(int64_t B, int64_t T);
// The order of the work items, so of the CTAs a launch starts. Each item's CTAs compute
// their outputs alone, so the order changes no result, only the schedule:
//  - kLongestFirst (the default): the longest lists first, so that the last CTAs of a
//    launch are short ones and the GPU's tail is short;
//  - kTiles: (sequence, tile) order, so that the CTAs running at once are neighbours whose
//    windows overlap and read the same key/value tiles (L2 reuse), at the cost of a tail of
//    whatever items come last.
// SPEEDRUN_ATTENTION_ORDER=longest|tiles picks one until a GPU has timed both
// (bench/cuda_check.sh's attn-order step).
enum class ItemOrder { kLongestFirst, kTiles };
const char* item_order_name(ItemOrder o);
// Writes the plan into dst (layout.bytes bytes, 16-byte aligned). `order` is scratch.
void write_plan(const std::vector<BlockMask>& masks, const PlanLayout& layout, void* dst,
                std::vector<WorkItem>& order, ItemOrder item_order = ItemOrder::kLongestFirst);
// The kernels' view of a plan written at `base` (host or device memory).
PlanView plan_view(const PlanLayout& layout, const void* base);
// Launch grid of a kernel over q_items or k_items: items * H CTAs.
int64_t grid_size(int64_t items, int64_t H);

// ---- telling a new set of masks from the last one ------------------------------------------
// The forward of every layer and the backward of a micro-batch get the same masks; the
// runner uploads a plan only when they change. Masks are rebuilt into the same vector every
// micro-batch (the same addresses, new contents), so the check compares contents: all
// fields, exactly (O(T + listed tiles) per call, memcmp speed; no hash collisions).
class MaskCache {
 public:
  bool matches(const std::vector<BlockMask>& masks) const;
  void remember(const std::vector<BlockMask>& masks);  // reuses its buffers once warm
  void forget() { valid_ = false; }

 private:
  std::vector<BlockMask> last_;
  bool valid_ = false;
};

}  // namespace speedrun::cuda::attn
