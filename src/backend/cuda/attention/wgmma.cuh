// Hopper's warpgroup products (wgmma.mma_async, sm_90a) for the attention kernels: four
// consecutive warps (a warpgroup, 128 threads) multiply 64 rows at once, each warp holding
// its 16 rows of A and of the accumulators in the same fragments as mma.sync m16n8k16
// (fragment.h), with B read by the tensor cores straight from shared memory, described by a
// 64-bit descriptor: no ldmatrix, and the largest tensor-core rate the GPU has.
//
// B's layout in shared memory is the PTX ISA's no-swizzle ("interleave") canonical layout:
// 8 x 8 bf16 core matrices of 128 contiguous bytes (8 rows of 16 bytes). An operand of R
// rows of D bf16 (a K or V chunk, stored [row][d] in global memory) is placed with row r's
// 16-byte piece c at core_offset(r, c) = (r/8) * 16D + c * 128 + (r%8) * 16, which serves
// both products:
//   S = Q K^T:  B[k = d][n = key], K-major (rows of K hold d contiguous): LBO = 128 (the next
//               8 d), SBO = 16D (the next 8 keys); k-step kk starts 256 kk bytes in.
//   O += P V:   B[k = key][n = d], MN-major (imm-trans-b = 1): LBO = 16D (the next 8 keys),
//               SBO = 128 (the next 8 d); k-step kk starts 32 D kk bytes in.
// Ordering: shared memory filled by cp.async (the generic proxy) is read by wgmma through the
// async proxy, so each writing thread fences (fence.proxy.async) after its copies land and
// before the barrier; registers a wgmma reads or writes that ordinary instructions touched
// since (the accumulators rescaled, P packed) need wgmma.fence first; results are read only
// after wgmma.wait_group, with the accumulators pinned on both sides (fence_operands).
// A may also come from shared memory (wgmma_ss), in the same core-matrix order: a tile of Q,
// dO, K or V as the backward's K-major A[m = row][k = d], LBO = 128, SBO = 16D, the
// warpgroup g's rows 128 D g bytes in; k-step kk starts 256 kk bytes in.
// The forward overlaps a chunk's O += P V with the next chunk's scores and softmax, dQ (at
// D = 128) its dQ += dS K likewise; dK/dV waits for each product at once.
#pragma once
#include <cstdint>

#include "backend/cuda/attention/common.cuh"

#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/ptx.h"
#endif

namespace speedrun::cuda::attn {

// Byte offset of row r's 16-byte piece c in an operand of rows of D bf16 in core matrices.
template <int D>
__host__ __device__ constexpr int core_offset(int r, int c) {
  return (r / 8) * 16 * D + c * 128 + (r % 8) * 16;
}

// Rows [0, kRows) of a head slice (row stride ld elements, D columns) into shared memory at
// s in core-matrix order (core_offset); rows >= valid are zero-filled.
//
// Copy p is piece c of row r with the row's low 3 bits fastest: 8 consecutive threads fill
// one core matrix, 128 contiguous bytes, every bank once. With the piece fastest, the 16
// (D = 128) or 8 (D = 64) threads of one row wrote 128 bytes apart, into the same 4 banks.
// A warp still reads whole 32-byte sectors: 8 rows x 4 adjacent pieces of 16 bytes.
template <int kRows, int D>
__device__ __forceinline__ void load_rows_core(unsigned char* s, const bf16* g, int64_t ld,
                                               int valid, int tid) {
  constexpr int kPieces = D / 8;
  static_assert(kRows % 8 == 0 && (kRows * kPieces) % kThreads == 0, "whole core matrices, even copies");
  SR_UNROLL
  for (int it = 0; it < kRows * kPieces / kThreads; ++it) {
    const int p = it * kThreads + tid;
    const int r = (p / (8 * kPieces)) * 8 + p % 8, c = (p / 8) % kPieces;
    const bool ok = r < valid;
    cp_async_16(s + core_offset<D>(r, c), ok ? g + r * ld + c * 8 : g, ok);
  }
}

#ifdef SPEEDRUN_CUDA_EMULATED
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(static_cast<const unsigned char*>(p) - emu::dynamic_smem());
}
#else
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return smem_u32(p); }
#endif

// A no-swizzle matrix descriptor: start address, leading and stride byte offsets (each a
// multiple of 16; the ISA keeps bits 4-17 of each).
__device__ __forceinline__ uint64_t smem_desc(const void* start, uint32_t lbo, uint32_t sbo) {
  return uint64_t((smem_addr(start) & 0x3ffffu) >> 4) | (uint64_t((lbo & 0x3ffffu) >> 4) << 16) |
         (uint64_t((sbo & 0x3ffffu) >> 4) << 32);
}

// Pins accumulator registers in place around a product: the compiler sees wgmma's outputs
// written when it is issued, so without this it may move their reads above
// wgmma.wait_group (or writes below the issue); an empty volatile asm that reads and writes
// each one orders them with the waits and issues, which are volatile too.
template <int R>
__device__ __forceinline__ void fence_operands(float (&d)[R][4]) {
#if !defined(SPEEDRUN_CUDA_EMULATED) && defined(__CUDA_ARCH__)
  SR_UNROLL
  for (int r = 0; r < R; ++r)
    SR_UNROLL
    for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(d[r][i])::"memory");
#else
  (void)d;
#endif
}

// Lane 0's v, on every lane of the warp. A branch around products that the code knows to be
// uniform, but on a value ptxas cannot prove uniform (one loaded from memory, a counter it
// sets under such a branch), makes ptxas serialize the products (its warning C7520:
// "wgmma.mma_async instructions are serialized due to program dependence on
// compiler-inserted WG.AR in divergent path"): a product then no longer runs while the code
// after its issue does. A broadcast value is uniform by construction.
__device__ __forceinline__ int warp_uniform(int v) { return __shfl_sync(0xffffffffu, v, 0); }

#if !defined(SPEEDRUN_CUDA_EMULATED) && defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int n>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(n) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// The accumulator operands of one wgmma, "+f" each, in fragment order d[j][0..3].
#define SR_WG_D8(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define SR_WG_D64 SR_WG_D8(0), SR_WG_D8(1), SR_WG_D8(2), SR_WG_D8(3), SR_WG_D8(4), SR_WG_D8(5), \
                  SR_WG_D8(6), SR_WG_D8(7)
#define SR_WG_D128 SR_WG_D64, SR_WG_D8(8), SR_WG_D8(9), SR_WG_D8(10), SR_WG_D8(11), SR_WG_D8(12), \
                   SR_WG_D8(13), SR_WG_D8(14), SR_WG_D8(15)

template <int N, bool kTransB>
__device__ __forceinline__ void wgmma(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b,
                                      bool accumulate) {
  static_assert(N == 64 || N == 128, "the attention kernels' widths");
  const int scale_d = accumulate ? 1 : 0;
  if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, %37;\n}\n"
        : SR_WG_D64
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(kTransB ? 1 : 0), "r"(scale_d));
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, %69;\n}\n"
        : SR_WG_D128
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(kTransB ? 1 : 0), "r"(scale_d));
  }
}
// The same with A read from shared memory too (K-major, no swizzle: wgmma_fence orders it
// like B): the warpgroup's 64 rows at desc_a, warp w of the group multiplying rows
// 16 (w % 4) .. 16 (w % 4) + 15.
template <int N, bool kTransB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b,
                                         bool accumulate) {
  static_assert(N == 64 || N == 128, "the attention kernels' widths");
  const int scale_d = accumulate ? 1 : 0;
  if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %35, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, %34;\n}\n"
        : SR_WG_D64
        : "l"(desc_a), "l"(desc_b), "n"(kTransB ? 1 : 0), "r"(scale_d));
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %67, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, %66;\n}\n"
        : SR_WG_D128
        : "l"(desc_a), "l"(desc_b), "n"(kTransB ? 1 : 0), "r"(scale_d));
  }
}
#undef SR_WG_D128
#undef SR_WG_D64
#undef SR_WG_D8
#else
// The emulator (products land at the wait that completes their group, and both fences are
// checked where the ISA asks for them: ptx.h), or another target (sm_80, or the host pass),
// where the kernels that use these are never launched: the runner runs them only on a GPU
// whose code was built for sm_90a.
#if defined(SPEEDRUN_CUDA_EMULATED)
__device__ __forceinline__ void wgmma_fence() { emu::wgmma_fence(); }
__device__ __forceinline__ void fence_proxy_async() { emu::fence_proxy_async(); }
__device__ __forceinline__ void wgmma_commit() { emu::wgmma_commit_group(); }
template <int n>
__device__ __forceinline__ void wgmma_wait() {
  emu::wgmma_wait_group(n);
}
#else
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void fence_proxy_async() {}
__device__ __forceinline__ void wgmma_commit() {}
template <int n>
__device__ __forceinline__ void wgmma_wait() {}
#endif
template <int N, bool kTransB>
__device__ __forceinline__ void wgmma(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b,
                                      bool accumulate) {
#if defined(SPEEDRUN_CUDA_EMULATED)
  emu::wgmma_m64nNk16_bf16(&d[0][0], N, a, desc_b, kTransB, accumulate);
#elif defined(__CUDA_ARCH__)
  (void)d, (void)a, (void)desc_b, (void)accumulate;
  __trap();
#endif
}
template <int N, bool kTransB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b,
                                         bool accumulate) {
#if defined(SPEEDRUN_CUDA_EMULATED)
  emu::wgmma_m64nNk16_bf16_ss(&d[0][0], N, desc_a, desc_b, kTransB, accumulate);
#elif defined(__CUDA_ARCH__)
  (void)d, (void)desc_a, (void)desc_b, (void)accumulate;
  __trap();
#endif
}
#endif

// The SASS version a kernel runs as on the current GPU (90 where built for sm_90a and run on
// an sm_90 GPU; 0 where the build has no code for it): the runner launches the wgmma kernels
// only where their code is sm_90a's.
template <class Kernel>
int binary_version_of(Kernel kernel) {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return attr.binaryVersion;
}

}  // namespace speedrun::cuda::attn
