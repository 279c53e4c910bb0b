// Device building blocks of the attention kernels: the tensor-core instructions through
// inline PTX (ldmatrix, mma.sync m16n8k16 bf16 -> fp32), cp.async tile loads into padded
// shared memory, and the two warp-level products every kernel is written with:
//   gemm_abt: acc[16 x N] += A[16 x K] * B^T, A read from shared memory or held in
//             registers (load_a_frags), B from shared memory (stored [N][K]): S = Q K^T,
//             dP = dO V^T, and S^T = K Q^T, dP^T = V dO^T.
//   gemm_cb:  acc[16 x N] += C[16 x K] * B, C an accumulator tile still in registers
//             (rounded to bf16), B read from shared memory stored [K][N]: O += P V,
//             dQ += dS K, dV += P^T dO, dK += dS^T Q.
// Fragment layouts and ldmatrix addresses: fragment.h (checked on the CPU).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/attention/fragment.h"
#include "backend/cuda/attention/plan.h"
#include "backend/cuda/attention/tile_math.h"
#include "backend/cuda/launch.h"
#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/ptx.h"
#endif

namespace speedrun::cuda::attn {

using bf16 = __nv_bfloat16;

#ifdef SPEEDRUN_CUDA_EMULATED
// The same instructions on the emulator (emulator/ptx.h, simt.h).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  emu::ldmatrix_x4(r, p, false);
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  emu::ldmatrix_x4(r, p, true);
}
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  emu::mma_m16n8k16_bf16(c, a, b0, b1);
}
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  emu::async_copy(smem, gmem, 16, valid ? 16 : 0);
}
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  emu::async_copy(smem, gmem, 4, valid ? 4 : 0);
}
__device__ __forceinline__ void cp_async_commit() { emu::async_commit(); }
template <int n>
__device__ __forceinline__ void cp_async_wait() {
  emu::async_wait(n);
}
#else
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// "memory": shared memory written by cp.async or plain stores before a barrier must not be
// read early; the clobber keeps the compiler from moving these loads across it.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}

// c += a * b for one 16x8x16 tile (fp32 accumulate).
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared, bypassing L1; src_bytes 0 writes zeros (rows past the end).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
               "l"(__cvta_generic_to_global(gmem)), "r"(valid ? 16 : 0)
               : "memory");
}
// 4 bytes global -> shared; zeros when !valid.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)),
               "l"(__cvta_generic_to_global(gmem)), "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most n of this thread's groups are still in flight.
template <int n>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
}
#endif  // SPEEDRUN_CUDA_EMULATED

// Rows [0, kRows) of a head slice (row stride ld elements, D columns) into shared memory
// s[kRows][D + 8]; rows >= valid are zero-filled (padding of a short last tile: zeros keep
// every product finite, and the mask rule gives them probability 0).
template <int kRows, int D>
__device__ __forceinline__ void load_rows(bf16* s, const bf16* g, int64_t ld, int valid,
                                          int tid) {
  constexpr int kPieces = D / 8;  // 16-byte pieces per row
  constexpr int kLd = D + 8;
  static_assert((kRows * kPieces) % kThreads == 0, "every thread issues the same copies");
  SR_UNROLL
  for (int it = 0; it < kRows * kPieces / kThreads; ++it) {
    const int p = it * kThreads + tid;
    const int r = p / kPieces, c = (p % kPieces) * 8;
    const bool ok = r < valid;
    cp_async_16(s + r * kLd + c, ok ? g + r * ld + c : g, ok);
  }
}

// acc[16 x N] += A[16 x 16] B^T for one 16-wide k-step: af the A fragment, B stored [N][K]
// at `b` (the step's first column; row stride ldb).
template <int N>
__device__ __forceinline__ void mma_row_bt(float (&acc)[N / 8][4], const uint32_t (&af)[4],
                                           const bf16* b, int ldb, int lane) {
  SR_UNROLL
  for (int np = 0; np < N / 16; ++np) {
    uint32_t bf[4];
    ldsm_x4(bf, b + (np * 16 + ldsm_bn_row(lane)) * ldb + ldsm_bn_col(lane));
    mma_16816(acc[2 * np], af, bf[0], bf[1]);
    mma_16816(acc[2 * np + 1], af, bf[2], bf[3]);
  }
}

// A warp's 16 x K operand A (at `a`, row stride lda) as mma fragments, one per k-step: for
// an operand a kernel multiplies with every chunk (its own tile's rows), loaded once.
template <int K>
__device__ __forceinline__ void load_a_frags(uint32_t (&af)[K / 16][4], const bf16* a, int lda,
                                             int lane) {
  SR_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) ldsm_x4(af[kk], a + ldsm_a_row(lane) * lda + kk * 16 + ldsm_a_col(lane));
}

// acc[16 x N] += A[16 x K] B^T; A at `a` (row stride lda), B stored [N][K] at `b` (ldb).
template <int K, int N>
__device__ __forceinline__ void gemm_abt(float (&acc)[N / 8][4], const bf16* a, int lda,
                                         const bf16* b, int ldb, int lane) {
  static_assert(K % 16 == 0 && N % 16 == 0, "whole 16x16 blocks");
  SR_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t af[4];
    ldsm_x4(af, a + ldsm_a_row(lane) * lda + kk * 16 + ldsm_a_col(lane));
    mma_row_bt<N>(acc, af, b + kk * 16, ldb, lane);
  }
}

// The same with A already in registers (load_a_frags): K/16 fewer ldmatrix per product.
template <int K, int N>
__device__ __forceinline__ void gemm_abt(float (&acc)[N / 8][4], const uint32_t (&af)[K / 16][4],
                                         const bf16* b, int ldb, int lane) {
  static_assert(K % 16 == 0 && N % 16 == 0, "whole 16x16 blocks");
  SR_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) mma_row_bt<N>(acc, af[kk], b + kk * 16, ldb, lane);
}

// acc[16 x N] += C[16 x K] B; C accumulator tiles in registers (K/8 tiles of 16x8), B stored
// [K][N] at `b` (row stride ldb).
template <int K, int N>
__device__ __forceinline__ void gemm_cb(float (&acc)[N / 8][4], const float (&c)[K / 8][4],
                                        const bf16* b, int ldb, int lane) {
  static_assert(K % 16 == 0 && N % 16 == 0, "whole 16x16 blocks");
  SR_UNROLL
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t af[4];
    a_from_c(af, c[2 * kk], c[2 * kk + 1]);
    SR_UNROLL
    for (int np = 0; np < N / 16; ++np) {
      uint32_t bf[4];
      ldsm_x4_trans(bf, b + (kk * 16 + ldsm_bk_row(lane)) * ldb + np * 16 + ldsm_bk_col(lane));
      mma_16816(acc[2 * np], af, bf[0], bf[1]);
      mma_16816(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// A warp's scores of a chunk of kChunk keys from ch.start, s = Q K^T for its 16 query rows
// (this thread's: qi[slot], first visible key lo[slot]), to log2 units (scale_log2), and in a
// partial chunk the pairs the mask rule hides to -inf.
template <int kChunk>
__device__ __forceinline__ void scale_and_mask(float (&s)[kChunk / 8][4], const Chunk& ch,
                                               const int (&qi)[2], const int (&lo)[2], int T,
                                               float scale_log2, int lane) {
  SR_UNROLL
  for (int nb = 0; nb < kChunk / 8; ++nb)
    SR_UNROLL
    for (int i = 0; i < 4; ++i) {
      float x = s[nb][i] * scale_log2;
      if (!ch.full) {
        const int j = ch.start + nb * 8 + c_col(lane, i);
        if (!visible(qi[i >> 1], j, lo[i >> 1], T)) x = kNegInf;
      }
      s[nb][i] = x;
    }
}

// The max of v over the 4 lanes that share an accumulator row (lanes 4g..4g+3).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Whether a CTA loads chunk ch: it holds tokens, and its tile is full or some query of
// [i0, i1] sees some key of [j0, j1] (tile_math.h's range_sees_any; lo: the sequence's).
// The same for every thread of the block, so votes that follow it stay collective.
__device__ __forceinline__ bool chunk_needed(const Chunk& ch, const int32_t* lo, int T, int i0,
                                             int i1, int j0, int j1) {
  return ch.valid && (ch.full || range_sees_any(lo, T, i0, i1, j0, j1));
}

// Whether any of a warp's 16 query rows (this thread's two: qi[slot] with first visible key
// lo[slot]) sees a key of [j0, j1] (tile_math.h's sees_any). A vote: every lane calls it.
__device__ __forceinline__ bool warp_rows_see_any(const int (&qi)[2], const int (&lo)[2], int T,
                                                  int j0, int j1) {
  return __any_sync(0xffffffffu, sees_any(qi[0], lo[0], T, j0, j1) || sees_any(qi[1], lo[1], T, j0, j1));
}

// Writes a warp's 16 x D accumulator rows (scaled by `mul[slot]`, slot 0 = row g, 1 = row g+8)
// as bf16 into its own 16 rows of shared memory `s` (row stride D + 8), then copies the rows
// < valid to global memory g (row stride ld) in 16-byte stores. Only this warp touches those
// shared rows, so a warp barrier orders the two steps.
template <int D>
__device__ __forceinline__ void store_rows(const float (&acc)[D / 8][4], const float (&mul)[2],
                                           bf16* s, bf16* g, int64_t ld, int valid, int lane) {
  constexpr int kLd = D + 8;
  SR_UNROLL
  for (int nb = 0; nb < D / 8; ++nb)
    SR_UNROLL
    for (int slot = 0; slot < 2; ++slot) {
      const int r = c_row(lane, 2 * slot), c = nb * 8 + c_col(lane, 2 * slot);
      const uint32_t v = pack_bf16x2(acc[nb][2 * slot] * mul[slot], acc[nb][2 * slot + 1] * mul[slot]);
      *reinterpret_cast<uint32_t*>(s + r * kLd + c) = v;
    }
  __syncwarp();
  constexpr int kPieces = D / 8;
  SR_UNROLL
  for (int it = 0; it < 16 * kPieces / 32; ++it) {
    const int p = it * 32 + lane;
    const int r = p / kPieces, c = (p % kPieces) * 8;
    if (r < valid)
      *reinterpret_cast<uint4*>(g + r * ld + c) = *reinterpret_cast<const uint4*>(s + r * kLd + c);
  }
}

}  // namespace speedrun::cuda::attn
