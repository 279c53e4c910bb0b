// The walk every attention kernel makes (forward.cu, backward.cu and their wgmma versions):
// a CTA owns one 128-row tile (its work item: queries for the forward and dQ, keys for
// dK/dV) of one head, and walks the item's list of partner tiles in chunks of kChunk rows,
// through kStages buffers filled by cp.async, so chunk c + 1's copies fly while chunk c is
// multiplied (and, with 3, while a product of chunk c - 1 still reads its buffer).
// Chunks no row of the tile sees (range_sees_any) are neither loaded nor multiplied.
#pragma once
#include "backend/cuda/attention/common.cuh"
#include "backend/cuda/attention/wgmma.cuh"

namespace speedrun::cuda::attn {

// Where a CTA works, from its block index (CTA x: item x / H, head x % H; plan.h).
struct Site {
  WorkItem it;
  int h;
  int r0;         // the tile's first row, within its sequence
  int64_t row0;   // the sequence's first row of [N, C]
  int64_t head;   // the head's first column of [N, C] (h * D)
  int64_t stat0;  // the sequence and head's first element of [B, H, T]

  // The head's columns from the sequence's first row of a bf16 [N, C] tensor (row stride ld).
  __device__ __forceinline__ const bf16* seq(const void* t, int64_t ld) const {
    return static_cast<const bf16*>(t) + row0 * ld + head;
  }
  __device__ __forceinline__ bf16* seq(void* t, int64_t ld) const {
    return static_cast<bf16*>(t) + row0 * ld + head;
  }
};

template <int D>
__device__ __forceinline__ Site site_of(const WorkItem* items, int H, int T) {
  Site s;
  s.h = int(blockIdx.x % unsigned(H));
  s.it = items[blockIdx.x / unsigned(H)];
  s.r0 = s.it.tile * kTile;
  s.row0 = int64_t(s.it.seq) * T;
  s.head = int64_t(s.h) * D;
  s.stat0 = (int64_t(s.it.seq) * H + s.h) * T;
  return s;
}

// A chunk of the walk with whether the CTA loads and multiplies it (ChunkWalk::needed),
// found once, when its copies are issued, and kept for its body: found again after the
// barrier, the list entry and the rows' first keys behind it were two chained global reads
// every warp waited for before its first product.
struct WalkedChunk : Chunk {
  bool needed;
};

// An item's chunks of kChunk partner rows. kOwnQueries: the tile's rows are queries and the
// chunks keys (the forward, dQ: the plan's q_list), else the other way round (dK/dV: k_list).
// Chunk c goes to buffer (stage) c % kStages.
template <int kChunk, bool kOwnQueries, int kStages = 2>
struct ChunkWalk {
  static_assert(kStages == 2 || kStages == 3, "one chunk multiplied, one loading, maybe one finishing");

  const int32_t* list;
  const int32_t* lo;  // the sequence's first visible key of each query
  WorkItem it;
  int T, r0, n;       // n: chunks

  __device__ __forceinline__ ChunkWalk(const PlanView& plan, const Site& s)
      : list(kOwnQueries ? plan.q_list : plan.k_list), lo(plan.lo + s.row0), it(s.it), T(plan.T),
        r0(s.r0), n(chunk_count(s.it, kChunk)) {}

  __device__ __forceinline__ Chunk at(int c) const { return chunk_at(list, it, c, kChunk, T); }

  // Whether chunk ch means anything to the tile's rows [a, b]: it holds tokens, and the
  // tile is full or some pair of those rows and the chunk is visible.
  __device__ __forceinline__ bool seen_by(const Chunk& ch, int a, int b) const {
    if constexpr (kOwnQueries)
      return chunk_needed(ch, lo, T, a, b, ch.start, ch.start + kChunk - 1);
    else
      return chunk_needed(ch, lo, T, ch.start, ch.start + kChunk - 1, a, b);
  }
  // Whether the CTA loads and multiplies chunk ch: it means something to some row of the
  // tile. The same for every thread of the block, so votes that follow it stay collective.
  __device__ __forceinline__ bool needed(const Chunk& ch) const { return seen_by(ch, r0, r0 + kTile - 1); }
  // Whether warpgroup g (rows 64 g .. 64 g + 63 of the tile) multiplies chunk ch: the same
  // for its 128 threads, as its products need.
  __device__ __forceinline__ bool seen_by_warpgroup(const Chunk& ch, int g) const {
    return seen_by(ch, r0 + 64 * g, r0 + 64 * g + 63);
  }

  __device__ __forceinline__ WalkedChunk walked(int c) const {
    const Chunk ch = at(c);
    return {ch, needed(ch)};
  }

  // Enqueues chunk c's copies, load(ch, stage) with stage c % kStages, where the CTA needs
  // the chunk, and commits a group either way (an empty one keeps the wait counts uniform);
  // returns the chunk.
  template <class Load>
  __device__ __forceinline__ WalkedChunk issue(int c, Load& load) const {
    const WalkedChunk ch = walked(c);
    if (ch.needed) load(ch, c % kStages);
    cp_async_commit();
    return ch;
  }

  // For each chunk in order: issues the next chunk's copies, waits for this one's (and for
  // every group committed before issue(0): the tile's own rows), then runs body(c, ch,
  // stage) (ch a WalkedChunk) between two barriers, the second because the next iteration
  // reloads a stage: with 2, chunk c's own; with 3, chunk c - 1's, so a body may leave a
  // product reading its own chunk in flight if the next chunk's body waits for it. `first`:
  // what issue(0), which must come before, returned.
  // kAsyncProxy: the tensor cores read the stages through the async proxy (wgmma), so each
  // thread fences its landed copies before the first barrier.
  // kCarry: the chunk found when its copies were issued is kept for its body (WalkedChunk),
  // which holds two chunks' fields in registers during a body; without, the body's chunk is
  // found again after the barrier (a kernel at its register bound: the forward at D = 64).
  template <bool kAsyncProxy, bool kCarry = true, class Load, class Body>
  __device__ __forceinline__ void run(const WalkedChunk& first, Load& load, Body&& body) const {
    WalkedChunk ch = first;
    for (int c = 0; c < n; ++c) {
      WalkedChunk next = ch;
      if (c + 1 < n) {
        if constexpr (kCarry)
          next = issue(c + 1, load);
        else
          issue(c + 1, load);
      } else {
        cp_async_commit();
      }
      cp_async_wait<1>();
      if constexpr (kAsyncProxy) fence_proxy_async();
      __syncthreads();
      if constexpr (kCarry)
        body(c, ch, c % kStages);
      else
        body(c, walked(c), c % kStages);
      __syncthreads();
      ch = next;
    }
  }
};

}  // namespace speedrun::cuda::attn
