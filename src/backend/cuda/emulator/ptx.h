// The PTX instructions the attention kernels issue through inline assembly (attention/
// common.cuh, wgmma.cuh), emulated as the PTX ISA defines them: ldmatrix.sync.aligned.m8n8
// .x4[.trans].shared.b16, mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, cp.async
// with its commit and wait groups (simt.h), and Hopper's wgmma.mma_async (A in registers or
// shared memory, B in shared memory). The fragment layouts are written here from the ISA's
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

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 with A in registers (the form
// `d, a, b-desc, scale-d, 1, 1, imm-trans-b`), as one warp of the warpgroup sees it: the
// warp's 16 rows of D (n / 2 floats per lane, the accumulator fragment: d[4j..4j+3] hold
// rows g and g + 8, columns 8j + 2t and 8j + 2t + 1, as mma.sync's C) become
// (scale_d ? D : 0) + A B, A the warp's 16 x 16 rows (mma.sync's A fragment) and B the
// 16 x n matrix the descriptor describes in dynamic shared memory. Only the no-swizzle
// layouts ("interleave"), as the PTX ISA's canonical layouts give them with T = 8 bf16:
//   K-major (trans_b false): B[k][j] at start + (j/8)*SBO + (k/8)*LBO + 16*(j%8) + 2*(k%8)
//   MN-major (trans_b true): B[k][j] at start + (k/8)*LBO + (j/8)*SBO + 16*(k%8) + 2*(j%8)
// with start, LBO and SBO the descriptor's bits 0-13, 16-29 and 32-45 times 16, the start
// counted from the block's dynamic shared memory; a swizzle mode other than 0, or a core
// matrix outside the block's dynamic shared memory, fails the kernel. Products exact, sums
// in double rounded once to fp32, as mma_m16n8k16_bf16; the result lands asynchronously
// (wgmma_wait_group, below).
void wgmma_m64nNk16_bf16(float* d, int n, const uint32_t (&a)[4], uint64_t desc_b, bool trans_b,
                         bool scale_d);
// The same with A in shared memory too (the form `d, a-desc, b-desc, scale-d, 1, 1, 0,
// imm-trans-b`), K-major: the warpgroup's 64 x 16 A at A's descriptor as
//   A[m][k] at start + (m/8)*SBO + (k/8)*LBO + 16*(m%8) + 2*(k%8)
// of which the calling warp multiplies rows 16 r .. 16 r + 15, r its place in the
// warpgroup (its warp index mod 4). Checked and run as above.
void wgmma_m64nNk16_bf16_ss(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool trans_b,
                            bool scale_d);
// Warps that issued a wgmma.mma_async so far (four per warpgroup instruction).
uint64_t wgmma_count();
// wgmma.commit_group and wgmma.wait_group N (this thread's): the products above are
// asynchronous as on the hardware, as far as a thread can see it. Each one's result lands in
// its accumulators at the wait that completes its group (all but the N most recent groups),
// and they read NaN until then; a product issued on accumulators still in flight (a chain
// over k) continues from the in-flight result; the shared memory a product read must not
// change before its wait, nor be the target of a cp.async issued before then, and a product
// may not read bytes a cp.async in flight writes (either copy may land while the tensor
// cores read); the A fragment registers a product reads must hold their values until its
// wait; a thread that ends with products not waited for fails the kernel.
void wgmma_commit_group();
void wgmma_wait_group(int pending);
// wgmma.fence and fence.proxy.async.shared::cta, with the ordering the ISA asks of them
// (simt.h): a product that starts an accumulator chain (its accumulators not in flight) with
// no wgmma.fence since the thread started or last waited fails the kernel, since the thread
// may have rewritten its accumulators or A fragments meanwhile; and so does a product that
// reads shared memory a thread filled by cp.async and did not fence for the async proxy once
// the copy landed. Shared memory written by plain stores is not tracked.
void wgmma_fence();
void fence_proxy_async();

// mma.sync instructions executed by warps of this process so far (one per warp, not per
// lane), as a profiler's tensor-pipe instruction count: the tests read it to check the work
// a kernel does, not only its results.
uint64_t mma_count();
// ldmatrix.x4 instructions (either form) executed by warps so far, one per warp: the
// shared-memory reads that feed the tensor cores (512 bytes each), which bound these
// kernels on a GPU where the tensor cores outrun shared memory.
uint64_t ldmatrix_count();

}  // namespace speedrun::cuda::emu
