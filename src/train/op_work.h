// The work of one Backend op, from its operands' shapes: floating-point operations for the
// ops that run on the matrix units (matmul, attention, Newton-Schulz) and bytes moved for
// the memory-bound rest. These are the counts `speedrun bench` divides by time, so they
// are the useful work, not what a kernel happens to do:
//   matmul          2 M N K
//   attention       4 D per visible (query, key) pair per head forward, 10 D backward
//                   (FlashAttention's convention: the backward does 2.5x the forward's
//                   products); pairs counted exactly from the masks, never from tiles
//   newton_schulz   per iteration 4 m^2 k + 2 m^3 for a matrix [m, k] (m the short side),
//                   counted as gemm (a backend may use syrk for the symmetric products)
//   the rest        bytes: every input read once, every output written once, an
//                   accumulated (+=) output read once more (METHOD's fewest-bytes rule)
#pragma once
#include <cstdint>
#include <vector>

#include "backend/block_mask.h"
#include "core/tensor.h"

namespace speedrun {

struct OpWork {
  double flops = 0;
  double bytes = 0;
};

// Visible (query, key) pairs of one sequence's mask: the keys j <= i with i - j < window
// in query i's document. O(T).
int64_t visible_pairs(const BlockMask& m);
int64_t visible_pairs(const std::vector<BlockMask>& masks);

// 2 M N K of C [M, N] (=/+=) op(A) op(B).
double matmul_flops(const Tensor& C, const Tensor& A, bool transA);
// Forward 4 pairs D H, backward 10 pairs D H (D = C / H of q [N, C]).
double attention_forward_flops(int64_t pairs, int64_t heads, int64_t head_dim);
double attention_backward_flops(int64_t pairs, int64_t heads, int64_t head_dim);
// The quintic iteration on G [rows, cols] or [n, rows, cols], `steps` times.
double newton_schulz_flops(const Tensor& G, int steps);

}  // namespace speedrun
