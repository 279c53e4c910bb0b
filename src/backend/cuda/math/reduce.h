// The deterministic reduction order of the CUDA backend, in one place. Every sum over a
// tensor (sum_into, scaled_sum's coefficient gradients, Newton-Schulz's Frobenius norms)
// runs in two launches with no atomics:
//  1. reduce_blocks(items) blocks of kReduceThreads threads; thread g of the grid adds the
//     items g, g + grid, g + 2*grid, ... in that order into a double (an item is one
//     element, or 8 consecutive elements added in order when the kernel loads 16 bytes);
//     the block then combines its threads by the tree of block_tree() into one partial.
//  2. One block: thread t adds partials t, t + kReduceThreads, ... in order, then the same
//     tree. The result is a function of the data and the size only: the same bits on every
//     run and on every GPU. two_stage_sum() below replays this order on the host, so a
//     GPU test can demand bit equality with it.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/cuda/math/hd.h"

namespace speedrun::cuda::math {

inline constexpr int kReduceThreads = 256;
inline constexpr int kReduceWarps = kReduceThreads / 32;
inline constexpr int kMaxPartials = 1024;
// Stage 1 gives every thread at least this many items before adding blocks (up to
// kMaxPartials blocks).
inline constexpr int64_t kItemsPerThread = 16;

// Stage-1 blocks for `items` items: a function of the size alone.
SR_HD constexpr int reduce_blocks(int64_t items) {
  const int64_t per_block = int64_t(kReduceThreads) * kItemsPerThread;
  const int64_t b = (items + per_block - 1) / per_block;
  return b < 1 ? 1 : b > kMaxPartials ? kMaxPartials : int(b);
}

// What lane 0 holds after the kernels' warp tree: v += shfl_down(v, o) for o = 16, 8, 4,
// 2, 1. Lanes whose partner is out of range never reach lane 0, so they are not replayed.
inline double warp_tree(double* v) {
  for (int o = 16; o > 0; o >>= 1)
    for (int i = 0; i < o; ++i) v[i] += v[i + o];
  return v[0];
}

// A block's combination of its threads' values t[kReduceThreads]: each warp's tree, then
// warp 0's tree over the warp sums (lanes past the last warp hold 0).
inline double block_tree(const double* t) {
  double w[32] = {};
  for (int k = 0; k < kReduceWarps; ++k) {
    double lanes[32];
    for (int i = 0; i < 32; ++i) lanes[i] = t[32 * k + i];
    w[k] = warp_tree(lanes);
  }
  return warp_tree(w);
}

// Replays both stages on the host. add_item(acc, i) returns acc plus item i's elements,
// added one by one in the kernel's order.
template <class AddItem>
double two_stage_sum(int64_t items, AddItem add_item) {
  const int blocks = reduce_blocks(items);
  const int64_t grid = int64_t(blocks) * kReduceThreads;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  std::vector<double> t(static_cast<size_t>(kReduceThreads), 0.0);
  for (int b = 0; b < blocks; ++b) {
    for (int th = 0; th < kReduceThreads; ++th) {
      double acc = 0;
      for (int64_t i = int64_t(b) * kReduceThreads + th; i < items; i += grid) acc = add_item(acc, i);
      t[size_t(th)] = acc;
    }
    partial[size_t(b)] = block_tree(t.data());
  }
  for (int th = 0; th < kReduceThreads; ++th) {
    double acc = 0;
    for (int p = th; p < blocks; p += kReduceThreads) acc += partial[size_t(p)];
    t[size_t(th)] = acc;
  }
  return block_tree(t.data());
}

}  // namespace speedrun::cuda::math
