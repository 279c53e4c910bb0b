// The PTX instructions the attention kernels issue through inline assembly (attention/
// common.cuh), emulated as the PTX ISA defines them: ldmatrix.sync.aligned.m8n8.x4[.trans]
// .shared.b16, mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, and cp.async with its
// commit and wait groups (simt.h). The fragment layouts are written here from the ISA's
// tables, independently of attention/fragment.h, which the kernels use to address them.
#pragma once
#include <cstdint>

#include "backend/cuda/emulator/simt.h"

namespace speedrun::cuda::emu {

// Register m of lane L from 8x8 matrix m, whose 8 row addresses lanes 8m..8m+7 supply
// (16-byte aligned, in shared memory): row L/4, columns 2(L%4) and 2(L%4)+1 (lower column
// in the low half); with trans, column L/4, rows 2(L%4) and 2(L%4)+1.
void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool trans);

// d = a * b + c for one warp's 16x8x16 tile; a, b bf16 pairs, c and d fp32 (products
// exact, sums in double rounded once to fp32: the hardware's order is unspecified).
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

// mma.sync instructions executed by warps of this process so far (one per warp, not per
// lane), as a profiler's tensor-pipe instruction count: the tests read it to check the work
// a kernel does, not only its results.
uint64_t mma_count();
// ldmatrix.x4 instructions (either form) executed by warps so far, one per warp: the
// shared-memory reads that feed the tensor cores (512 bytes each), which bound these
// kernels on a GPU where the tensor cores outrun shared memory.
uint64_t ldmatrix_count();

}  // namespace speedrun::cuda::emu
