// Where the tensor-core fragments of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 live
// across the 32 lanes of a warp, and the ldmatrix.x4 row addresses that fill them, as
// __host__ __device__ functions: the kernels (common.cuh) address shared memory and index
// their accumulators with these, and the CPU test runs them through an emulation of the
// two instructions as the PTX ISA defines them (tests/test_cuda_attention_plan.cpp), so the
// composition (A from ldmatrix, B from ldmatrix or ldmatrix.trans, P fed back as A) is
// checked without a GPU.
//
// Legend: lane = 0..31, g = lane / 4 (group), t = lane % 4 (thread in group).
//  - A (16x16, row-major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..),
//    a3 = (g+8, 2t+8..); each register holds two bf16, the lower column in the low half.
//  - B (16x8, "col": element (k, n)): b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g).
//  - C/D (16x8, fp32): c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1).
//  - ldmatrix.x4: lanes 8m..8m+7 give the row addresses of 8x8 matrix m (16 bytes each);
//    register m of lane L gets row L/4, columns 2(L%4)..+1 of matrix m, or with .trans the
//    column L/4, rows 2(L%4)..+1.
#pragma once
#include <cstdint>

#include "backend/cuda/attention/tile_math.h"
#ifndef __CUDA_ARCH__
#include "core/bf16.h"
#endif

namespace speedrun::cuda::attn {

// Row and column, inside the 16x8 accumulator tile, of element i (0..3) of `lane`.
SR_TILE_HD int c_row(int lane, int i) { return (lane >> 2) + ((i >> 1) << 3); }
SR_TILE_HD int c_col(int lane, int i) { return ((lane & 3) << 1) + (i & 1); }

// ldmatrix.x4 over a 16x16 block stored row-major (16-byte rows of 8 bf16): the row and
// column (in elements, relative to the block) whose address `lane` supplies.
//  - ldsm_a_*: no .trans, the block is an A operand (rows = M, columns = K): registers
//    a0..a3 in order.
//  - ldsm_bk_*: with .trans, the block is B stored [k][n] (rows = K, columns = two n-blocks
//    of 8): registers b0, b1 of n-block 0, then b0, b1 of n-block 1. Same addresses as A.
//  - ldsm_bn_*: no .trans, the block is B stored [n][k] (rows = two n-blocks of 8,
//    columns = K): registers b0, b1 of n-block 0, then b0, b1 of n-block 1.
SR_TILE_HD int ldsm_a_row(int lane) { return lane & 15; }
SR_TILE_HD int ldsm_a_col(int lane) { return (lane >> 4) << 3; }
SR_TILE_HD int ldsm_bk_row(int lane) { return lane & 15; }
SR_TILE_HD int ldsm_bk_col(int lane) { return (lane >> 4) << 3; }
SR_TILE_HD int ldsm_bn_row(int lane) { return ((lane >> 4) << 3) + (lane & 7); }
SR_TILE_HD int ldsm_bn_col(int lane) { return ((lane >> 3) & 1) << 3; }

// Two floats rounded to bf16 (nearest even), packed lower column first: one A register.
SR_TILE_HD uint32_t pack_bf16x2(float lo, float hi) {
#ifdef __CUDA_ARCH__
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // first source -> high half
  return r;
#else
  return uint32_t(bf16_bits(lo)) | (uint32_t(bf16_bits(hi)) << 16);
#endif
}

// The A fragment of one 16-wide k-step from two adjacent 16x8 accumulator tiles (columns
// 0..7 in c0, 8..15 in c1): how P (and dS) feed the next product without leaving registers.
SR_TILE_HD void a_from_c(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16x2(c0[0], c0[1]);
  a[1] = pack_bf16x2(c0[2], c0[3]);
  a[2] = pack_bf16x2(c1[0], c1[1]);
  a[3] = pack_bf16x2(c1[2], c1[3]);
}

}  // namespace speedrun::cuda::attn
