// The CPU emulator of CUDA (src/backend/cuda/emulator/) that the emulated build runs the
// CUDA backend on: that it runs kernels as the hardware defines them (barriers, shuffles,
// ldmatrix + mma.sync fragments against a plain matrix product, cp.async groups), and that
// it reports what it promises to catch: races (results that change with the schedule),
// deadlocks, divergent barriers and collectives, a lane missing from a full-mask shuffle,
// cp.async outside shared memory or read before its wait, launch shapes an H200 refuses,
// running out of device memory; that lazy streams show a missing event wait, that async
// copies treat pageable and pinned host memory as CUDA does and that a collective's result
// lands only when waited for. Also its cuBLASLt (strided
// batches, transposes) and its radix sort. The kernels here are CUDA C++, compiled by the host compiler through the
// emulator's prelude; in a build with nvcc (or none) this file has no tests.
#include <gtest/gtest.h>

#ifdef SPEEDRUN_CUDA_EMULATED

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <vector>

#include "backend/cuda/attention/fragment.h"
#include "backend/cuda/emulator/cub_sort.h"
#include "backend/cuda/emulator/ptx.h"
#include "backend/cuda/emulator/simt.h"
#include "backend/cuda/emulator/streams.h"
#include "backend/cuda/launch.h"
#include "backend/cuda/math/bf16.h"

namespace speedrun::cuda {
namespace {

namespace emu = cuda::emu;

// ---- kernels -------------------------------------------------------------------------------

// out[b * n + i] = sum of in[b * n + 0..n) via shared memory and a tree: correct with the
// barriers, a race without them.
template <bool Barriers>
__global__ void block_sum_kernel(float* out, const float* in) {
  __shared__ float s[256];
  const int t = int(threadIdx.x), n = int(blockDim.x);
  s[t] = in[blockIdx.x * n + t];
  if (Barriers) __syncthreads();
  for (int step = n / 2; step > 0; step /= 2) {
    if (t < step) s[t] += s[t + step];
    if (Barriers) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

__global__ void shuffle_kernel(int* xor_out, int* down_out, int* from_out) {
  const int v = int(threadIdx.x) * 10;
  xor_out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 5);
  down_out[threadIdx.x] = __shfl_down_sync(0xffffffffu, v, 3);
  // Each warp's lane 7 (39 % 32 for the second warp's odd lanes: the lane is taken mod 32).
  from_out[threadIdx.x] = __shfl_sync(0xffffffffu, v, threadIdx.x & 1 ? 39 : 7);
}

// out[t] = __any_sync over the warp of (lane == pick[warp]); pick < 0 or >= 32: no lane.
__global__ void vote_kernel(int* out, const int* pick) {
  const int lane = int(threadIdx.x & 31), warp = int(threadIdx.x >> 5);
  out[threadIdx.x] = __any_sync(0xffffffffu, lane == pick[warp]);
}

// Lanes >= 16 leave before the shuffle the others wait at.
__global__ void missing_lane_kernel(int* out) {
  if ((threadIdx.x & 31) >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

// Half the block waits at one barrier, half at another.
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Warp 0 waits at a shuffle that lane 0 never reaches: it waits at the barrier instead.
__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else if (threadIdx.x < 32) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
  }
}

// One warp: C[16x8] = A[16x16] B[16x8] through ldmatrix (A row-major, B stored [n][k]) and
// mma.sync, addressed with attention/fragment.h; A and B are staged in dynamic shared memory
// with cp.async.
// One warpgroup (128 threads) computes D [64 x 16] = A [64 x 16] B [16 x 16] by
// wgmma.mma_async with A in registers, B placed in shared memory by the host at the byte
// offsets `place` gives (the layout under test) and described by `desc` (start at byte 0).
// A's fragments are written here from the PTX ISA's figure for m64nNk16 (each warp's 16
// rows as mma.sync's A), D's read back the same way.
__global__ void wgmma_kernel(float* d, const uint16_t* a, const uint16_t* b_placed, int b_bytes,
                             uint64_t desc, bool trans_b) {
  SR_DYNAMIC_SMEM(smem);
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  for (int i = tid; i < b_bytes / 2; i += 128) reinterpret_cast<uint16_t*>(smem)[i] = b_placed[i];
  emu::fence_proxy_async();  // stores, then the async proxy reads them
  __syncthreads();
  const int g = lane / 4, t = lane % 4;
  uint32_t af[4];
  for (int r = 0; r < 4; ++r) {  // a[2r], a[2r+1]: row g + 8 (r % 2), columns 2t + 8 (r / 2)
    const int row = warp * 16 + g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
    af[r] = uint32_t(a[row * 16 + col]) | (uint32_t(a[row * 16 + col + 1]) << 16);
  }
  float acc[8];
  for (float& x : acc) x = 1e30f;  // scale-d 0: not read
  emu::wgmma_fence();
  emu::wgmma_m64nNk16_bf16(acc, 16, af, desc, trans_b, false);
  emu::wgmma_commit_group();
  emu::wgmma_wait_group(0);
  for (int i = 0; i < 8; ++i) {  // d[4j..4j+3]: rows g, g+8; columns 8j + 2t, +1
    const int row = warp * 16 + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * t + (i % 2);
    d[row * 16 + col] = acc[i];
  }
}

// The same product with A read through its own descriptor from shared memory (a_placed,
// 2048 bytes, then B's placement): each warp reads its warpgroup's 64 rows from 16 x its
// place in the group.
__global__ void wgmma_ss_kernel(float* d, const uint16_t* a_placed, const uint16_t* b_placed,
                                int b_bytes, uint64_t desc_a, uint64_t desc_b, bool trans_b) {
  SR_DYNAMIC_SMEM(smem);
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  auto* s16 = reinterpret_cast<uint16_t*>(smem);
  for (int i = tid; i < 1024; i += 128) s16[i] = a_placed[i];
  for (int i = tid; i < b_bytes / 2; i += 128) s16[1024 + i] = b_placed[i];
  emu::fence_proxy_async();
  __syncthreads();
  const int g = lane / 4, t = lane % 4;
  float acc[8];
  for (float& x : acc) x = 1e30f;  // scale-d 0: not read
  emu::wgmma_fence();
  emu::wgmma_m64nNk16_bf16_ss(acc, 16, desc_a, desc_b, trans_b, false);
  emu::wgmma_commit_group();
  emu::wgmma_wait_group(0);
  for (int i = 0; i < 8; ++i) {
    const int row = warp * 16 + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * t + (i % 2);
    d[row * 16 + col] = acc[i];
  }
}

// Two products of the same accumulators (a chain over k, B's two halves of 16 rows each:
// A B0 + A B1, A the same registers) in one group, then per `mode`: 0 waits and writes the
// result; 1 reads the accumulators before the wait (into early) and after; 2 changes B's
// shared memory before the wait; 3 ends without a wait; 4 reloads B's first 16 bytes by
// cp.async before the wait (landing after it, at the copy's own wait).
__global__ void wgmma_async_kernel(float* d, float* early, const uint16_t* a, const uint16_t* b_placed,
                                   uint64_t desc_b0, uint64_t desc_b1, int mode) {
  SR_DYNAMIC_SMEM(smem);
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  for (int i = tid; i < 512; i += 128) reinterpret_cast<uint16_t*>(smem)[i] = b_placed[i];
  emu::fence_proxy_async();
  __syncthreads();
  const int g = lane / 4, t = lane % 4;
  uint32_t af[4];
  for (int r = 0; r < 4; ++r) {
    const int row = warp * 16 + g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
    af[r] = uint32_t(a[row * 16 + col]) | (uint32_t(a[row * 16 + col + 1]) << 16);
  }
  float acc[8] = {};
  emu::wgmma_fence();
  emu::wgmma_m64nNk16_bf16(acc, 16, af, desc_b0, false, false);
  emu::wgmma_m64nNk16_bf16(acc, 16, af, desc_b1, false, true);
  emu::wgmma_commit_group();
  if (mode == 1)
    for (int i = 0; i < 8; ++i) early[tid * 8 + i] = acc[i];
  if (mode == 2) {
    __syncthreads();
    if (tid == 0) reinterpret_cast<uint16_t*>(smem)[3] ^= 0x4000;
    __syncthreads();
  }
  if (mode == 3) return;
  if (mode == 4) {
    __syncthreads();
    if (tid == 0) emu::async_copy(smem, b_placed, 16, 16);
    emu::async_commit();
  }
  emu::wgmma_wait_group(0);
  if (mode == 4) emu::async_wait(0);
  for (int i = 0; i < 8; ++i) {
    const int row = warp * 16 + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * t + (i % 2);
    d[row * 16 + col] = acc[i];
  }
}

// wgmma's two fences. B (16 x 16, K-major, 1024 bytes) comes by cp.async, a 16-byte piece
// from each of threads 0..63, then one product A B, then, after the wait, the accumulators
// doubled by ordinary instructions and a second product added: 3 A B. Per `mode`: 0 as the
// ISA asks; 1 no fence.proxy.async; 2 fence.proxy.async by threads 64..127 only (not the
// writers); 3 fence.proxy.async before the copies' wait; 4 no wgmma.fence before the first
// product; 5 none before the second; 6 warp 1 skips the second product; 7 warp 3 issues it
// with another descriptor than its warpgroup's; 8 thread 0 reloads B's first 16 bytes by
// cp.async before the products and waits for that copy only after them; 9 rewrites its A
// fragments while the second product is in flight.
__global__ void wgmma_fences_kernel(float* d, const uint16_t* a, const uint16_t* b_placed, uint64_t desc_b,
                                    int mode) {
  SR_DYNAMIC_SMEM(smem);
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  if (tid < 64) emu::async_copy(smem + 16 * tid, b_placed + 8 * tid, 16, 16);
  emu::async_commit();
  if (mode == 3) emu::fence_proxy_async();
  emu::async_wait(0);
  if (mode == 0 || mode >= 4 || (mode == 2 && tid >= 64)) emu::fence_proxy_async();
  __syncthreads();
  if (mode == 8) {
    if (tid == 0) emu::async_copy(smem, b_placed, 16, 16);
    emu::async_commit();
  }
  const int g = lane / 4, t = lane % 4;
  uint32_t af[4];
  for (int r = 0; r < 4; ++r) {
    const int row = warp * 16 + g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
    af[r] = uint32_t(a[row * 16 + col]) | (uint32_t(a[row * 16 + col + 1]) << 16);
  }
  float acc[8];
  if (mode != 4) emu::wgmma_fence();
  emu::wgmma_m64nNk16_bf16(acc, 16, af, desc_b, false, false);
  emu::wgmma_commit_group();
  emu::wgmma_wait_group(0);
  for (float& x : acc) x *= 2;
  if (mode != 5) emu::wgmma_fence();
  if (mode != 6 || warp != 1)
    emu::wgmma_m64nNk16_bf16(acc, 16, af, mode == 7 && warp == 3 ? desc_b + 1 : desc_b, false, true);
  emu::wgmma_commit_group();
  if (mode == 9) af[0] ^= 1u;
  emu::wgmma_wait_group(0);
  if (mode == 8) emu::async_wait(0);
  for (int i = 0; i < 8; ++i) {
    const int row = warp * 16 + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * t + (i % 2);
    d[row * 16 + col] = acc[i];
  }
}

__global__ void mma_kernel(float* c, const uint16_t* a, const uint16_t* bt) {
  SR_DYNAMIC_SMEM(smem);
  auto* sa = reinterpret_cast<uint16_t*>(smem);  // [16][16]
  auto* sb = sa + 16 * 16;                         // [16][16]: two n-blocks of 8 rows
  const int lane = int(threadIdx.x);
  // 2 x 16 rows x 2 pieces of 16 bytes = 64 pieces, 2 per lane.
  for (int p = lane; p < 64; p += 32) {
    const int m = p / 32, r = (p % 32) / 2, col = (p % 2) * 8;
    uint16_t* dst = (m == 0 ? sa : sb) + r * 16 + col;
    const uint16_t* src = (m == 0 ? a : bt) + r * 16 + col;
    emu::async_copy(dst, src, 16, 16);
  }
  emu::async_commit();
  emu::async_wait(0);
  __syncthreads();
  uint32_t af[4], bf[4];
  emu::ldmatrix_x4(af, sa + attn::ldsm_a_row(lane) * 16 + attn::ldsm_a_col(lane), false);
  emu::ldmatrix_x4(bf, sb + attn::ldsm_bn_row(lane) * 16 + attn::ldsm_bn_col(lane), false);
  float acc0[4] = {}, acc1[4] = {};
  emu::mma_m16n8k16_bf16(acc0, af, bf[0], bf[1]);  // n-block 0
  emu::mma_m16n8k16_bf16(acc1, af, bf[2], bf[3]);  // n-block 1
  for (int i = 0; i < 4; ++i) {
    c[attn::c_row(lane, i) * 16 + attn::c_col(lane, i)] = acc0[i];
    c[attn::c_row(lane, i) * 16 + 8 + attn::c_col(lane, i)] = acc1[i];
  }
}

// Reads shared memory after cp.async was issued but before its wait (when `wait` is false).
__global__ void early_read_kernel(float* out, const float* in, bool wait) {
  SR_DYNAMIC_SMEM(smem);
  auto* s = reinterpret_cast<float*>(smem);
  emu::async_copy(s + threadIdx.x, in + threadIdx.x, 4, 4);
  emu::async_commit();
  if (wait) emu::async_wait(0);
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void copy_outside_smem_kernel(const float* in) {
  SR_DYNAMIC_SMEM(smem);
  emu::async_copy(smem + 16 * (threadIdx.x + 1), in, 16, 16);  // thread 0 fits, 1 does not
}

__global__ void nothing_kernel(int*) {}

__global__ void scale_kernel(float* out, const float* in, float a, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = a * in[i];
}

// ---- helpers --------------------------------------------------------------------------------

struct Device {
  std::vector<void*> ptrs;
  template <class T>
  T* upload(const std::vector<T>& v) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    ptrs.push_back(p);
    return static_cast<T*>(p);
  }
  template <class T>
  T* zeros(size_t n) {
    return upload(std::vector<T>(n, T{}));
  }
  ~Device() {
    for (void* p : ptrs) cudaFree(p);
  }
};

template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// Runs with a schedule, restoring the default afterwards.
struct ScheduleScope {
  emu::Schedule saved = emu::schedule();
  explicit ScheduleScope(const emu::Schedule& s) { emu::set_schedule(s); }
  ~ScheduleScope() { emu::set_schedule(saved); }
};

emu::Schedule order(emu::Schedule::Order o, uint64_t seed = 0, bool early = false, bool lazy = false) {
  emu::Schedule s;
  s.order = o;
  s.seed = seed;
  s.early_copies = early;
  s.lazy_streams = lazy;
  return s;
}

// A launch that must fail inside the kernel: the failure is sticky, as on a device, so the
// test clears it.
void expect_kernel_failure(cudaError_t launch_result, const std::string& words) {
  EXPECT_EQ(launch_result, cudaErrorLaunchFailure);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure) << "a kernel fault is sticky";
  EXPECT_NE(emu::last_failure().find(words), std::string::npos) << emu::last_failure();
  emu::reset_device_for_tests();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// n standard normal values rounded to bf16 (their bits).
std::vector<uint16_t> bf16_randn(size_t n, uint32_t seed) {
  const std::vector<float> r = randn(n, seed);
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = math::f32_to_bf16(r[i]);
  return v;
}

// A no-swizzle wgmma matrix descriptor (start, LBO and SBO in bytes).
uint64_t wgmma_desc(uint32_t start_bytes, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return uint64_t(start_bytes >> 4) | (uint64_t(lbo_bytes >> 4) << 16) | (uint64_t(sbo_bytes >> 4) << 32);
}

// b [16][16] (b[k][n], bf16 bits) placed as wgmma's no-swizzle K-major B with LBO 64 and SBO
// 128 elements (in the first 256 of 512 elements).
std::vector<uint16_t> k_major_placed(const std::vector<uint16_t>& b) {
  std::vector<uint16_t> placed(512, 0);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) placed[size_t((n % 8) * 8 + (n / 8) * 128 + (k % 8) + (k / 8) * 64)] = b[size_t(k * 16 + n)];
  return placed;
}

// got [64][16] (a warpgroup's accumulators, row-major) equals A B for a [64][16] (bf16 bits)
// and B given by b(k, j) for k < 16, j < 16, summed in double.
template <class B>
void expect_warpgroup_product(const std::vector<float>& got, const std::vector<uint16_t>& a, B b) {
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 16; ++j) {
      double want = 0;
      for (int k = 0; k < 16; ++k) want += double(math::bf16_to_f32(a[size_t(i * 16 + k)])) * b(k, j);
      ASSERT_NEAR(got[size_t(i * 16 + j)], want, 1e-4 * (1 + std::fabs(want))) << i << "," << j;
    }
}

// ---- execution model --------------------------------------------------------------------------

TEST(CudaEmulator, BarriersMakeABlockReductionRightInEverySchedule) {
  Device d;
  const std::vector<float> in = randn(4 * 256, 1);
  const float* din = d.upload(in);
  float* out = d.zeros<float>(4);
  for (auto o : {emu::Schedule::Order::Forward, emu::Schedule::Order::Reverse, emu::Schedule::Order::Shuffle}) {
    ScheduleScope scope(order(o, 7));
    SR_LAUNCH(4, 256, 0, nullptr, block_sum_kernel<true>)(out, din);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<float> got = download(out, 4);
    for (int b = 0; b < 4; ++b) {
      double want = 0;
      for (int i = 0; i < 256; ++i) want += in[size_t(b * 256 + i)];
      EXPECT_NEAR(got[size_t(b)], want, 1e-3) << "block " << b;
    }
  }
}

TEST(CudaEmulator, AMissingBarrierShowsAsResultsThatChangeWithTheSchedule) {
  Device d;
  const float* din = d.upload(randn(256, 2));
  float* out = d.zeros<float>(1);
  std::vector<float> results;
  for (auto o : {emu::Schedule::Order::Forward, emu::Schedule::Order::Reverse}) {
    ScheduleScope scope(order(o));
    SR_LAUNCH(1, 256, 0, nullptr, block_sum_kernel<false>)(out, din);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    results.push_back(download(out, 1)[0]);
  }
  EXPECT_NE(results[0], results[1]) << "the race went unseen";
}

TEST(CudaEmulator, ShufflesFollowTheirDefinitions) {
  Device d;
  int* x = d.zeros<int>(64);
  int* dn = d.zeros<int>(64);
  int* from = d.zeros<int>(64);
  SR_LAUNCH(1, 64, 0, nullptr, shuffle_kernel)(x, dn, from);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> gx = download(x, 64), gd = download(dn, 64), gf = download(from, 64);
  for (int t = 0; t < 64; ++t) {
    const int warp = t / 32 * 32, lane = t % 32;
    EXPECT_EQ(gx[size_t(t)], (warp + (lane ^ 5)) * 10);
    EXPECT_EQ(gd[size_t(t)], (lane + 3 < 32 ? t + 3 : t) * 10) << "lanes past the end keep their value";
    EXPECT_EQ(gf[size_t(t)], (warp + 7) * 10) << "lane " << t;
  }
}

TEST(CudaEmulator, AnyVoteIsTrueOnEveryLaneIffOneLaneIsTrue) {
  Device d;
  const std::vector<int> picks = {0, 31, -1, 17};  // a warp each; -1: no lane votes true
  const int* pick = d.upload(picks);
  int* out = d.zeros<int>(32 * picks.size());
  SR_LAUNCH(1, unsigned(32 * picks.size()), 0, nullptr, vote_kernel)(out, pick);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = download(out, 32 * picks.size());
  for (size_t t = 0; t < got.size(); ++t)
    EXPECT_EQ(got[t], picks[t / 32] >= 0 ? 1 : 0) << "thread " << t;
}

TEST(CudaEmulator, ReportsALaneMissingFromAFullMaskShuffle) {
  ScheduleScope forward(order(emu::Schedule::Order::Forward));  // the messages below are its
  Device d;
  int* out = d.zeros<int>(32);
  SR_LAUNCH(1, 32, 0, nullptr, missing_lane_kernel)(out);
  expect_kernel_failure(emu::peek_sticky_error(), "ended while its warp waits at __shfl_xor_sync");
}

TEST(CudaEmulator, ReportsThreadsAtDifferentBarriers) {
  ScheduleScope forward(order(emu::Schedule::Order::Forward));  // the messages below are its
  Device d;
  int* out = d.zeros<int>(128);
  SR_LAUNCH(1, 128, 0, nullptr, divergent_barrier_kernel)(out);
  expect_kernel_failure(emu::peek_sticky_error(), "while others wait at");
}

TEST(CudaEmulator, ReportsADeadlock) {
  ScheduleScope forward(order(emu::Schedule::Order::Forward));  // the messages below are its
  Device d;
  int* out = d.zeros<int>(64);
  SR_LAUNCH(1, 64, 0, nullptr, deadlock_kernel)(out);
  expect_kernel_failure(emu::peek_sticky_error(), "deadlock");
}

// ---- tensor cores and cp.async ---------------------------------------------------------------

TEST(CudaEmulator, LdmatrixAndMmaComputeTheMatrixProductThroughFragmentH) {
  std::vector<uint16_t> a(16 * 16), bt(16 * 16);
  const std::vector<float> ra = randn(a.size(), 3), rb = randn(bt.size(), 4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = math::f32_to_bf16(ra[i]), bt[i] = math::f32_to_bf16(rb[i]);
  Device d;
  float* c = d.zeros<float>(16 * 16);
  const uint16_t* da = d.upload(a);
  const uint16_t* db = d.upload(bt);
  for (bool early : {false, true}) {
    ScheduleScope scope(order(emu::Schedule::Order::Reverse, 0, early));
    SR_LAUNCH(1, 32, 2 * 16 * 16 * 2, nullptr, mma_kernel)(c, da, db);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<float> got = download(c, 16 * 16);
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) {
        double want = 0;
        for (int k = 0; k < 16; ++k)
          want += double(math::bf16_to_f32(a[size_t(i * 16 + k)])) * math::bf16_to_f32(bt[size_t(j * 16 + k)]);
        EXPECT_NEAR(got[size_t(i * 16 + j)], want, 1e-4 * (1 + std::fabs(want))) << i << "," << j;
      }
  }
}

// wgmma's B descriptor read as the PTX ISA's canonical no-swizzle layouts say (T = 8 bf16
// per 16 bytes): MN-major ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)), here with the ISA's own
// bf16 example's strides (LBO 128 and SBO 64 elements), and K-major ((8,m),(T,2k)):
// ((1T,SBO),(1,LBO)) with LBO 64 and SBO 128 elements. The product must be A B either way,
// and a swizzled descriptor is refused.
TEST(CudaEmulator, WgmmaReadsBThroughTheDescriptorsCanonicalLayouts) {
  const std::vector<uint16_t> a = bf16_randn(64 * 16, 11), b = bf16_randn(16 * 16, 12);  // b[k][n]
  Device dev;
  const uint16_t* da = dev.upload(a);
  float* dd = dev.zeros<float>(64 * 16);
  for (bool mn_major : {true, false}) {
    SCOPED_TRACE(mn_major ? "MN-major" : "K-major");
    const int lbo = mn_major ? 128 : 64, sbo = mn_major ? 64 : 128;  // elements
    std::vector<uint16_t> placed(512, 0);
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 16; ++n) {
        const int at = mn_major ? (n % 8) + (n / 8) * sbo + (k % 8) * 8 + (k / 8) * lbo
                                : (n % 8) * 8 + (n / 8) * sbo + (k % 8) + (k / 8) * lbo;
        placed[size_t(at)] = b[size_t(k * 16 + n)];
      }
    const uint16_t* dp = dev.upload(placed);
    SR_LAUNCH(1, 128, 1024, nullptr, wgmma_kernel)(dd, da, dp, 1024, wgmma_desc(0, 2 * lbo, 2 * sbo), mn_major);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    expect_warpgroup_product(download(dd, 64 * 16), a,
                             [&](int k, int j) { return double(math::bf16_to_f32(b[size_t(k * 16 + j)])); });
  }
  const std::vector<uint16_t> zeros(512, 0);
  const uint16_t* dz = dev.upload(zeros);
  const uint64_t swizzled = wgmma_desc(0, 16, 1024) | (uint64_t(1) << 62);  // 128-byte swizzle
  SR_LAUNCH(1, 128, 1024, nullptr, wgmma_kernel)(dd, da, dz, 1024, swizzled, false);
  expect_kernel_failure(emu::peek_sticky_error(), "swizzle");
}

// wgmma with A from shared memory: K-major ((8,m),(T,2k)):((1T,SBO),(1,LBO)) as for B, the
// warpgroup's 64 rows at A's descriptor, here with LBO 512 and SBO 64 elements (the rows'
// 8-blocks between the k halves) and the other way round (LBO 64, SBO 128: the k halves
// inside each 8-row block); B K-major as above. Each warp must multiply its own 16 rows,
// and a swizzled A is refused.
TEST(CudaEmulator, WgmmaReadsAThroughItsDescriptorWarpByWarp) {
  const std::vector<uint16_t> a = bf16_randn(64 * 16, 13), b = bf16_randn(16 * 16, 14);  // a[m][k], b[k][n]
  const std::vector<uint16_t> b_placed = k_major_placed(b);
  Device dev;
  const uint16_t* db = dev.upload(b_placed);
  float* dd = dev.zeros<float>(64 * 16);
  const uint64_t desc_b = wgmma_desc(2048, 128, 256);
  for (const auto& [lbo, sbo] : {std::pair{512, 64}, std::pair{64, 128}}) {  // elements
    SCOPED_TRACE("LBO " + std::to_string(lbo) + ", SBO " + std::to_string(sbo));
    std::vector<uint16_t> a_placed(1024, 0);
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 16; ++k)
        a_placed[size_t((m % 8) * 8 + (m / 8) * sbo + (k % 8) + (k / 8) * lbo)] = a[size_t(m * 16 + k)];
    const uint16_t* da = dev.upload(a_placed);
    SR_LAUNCH(1, 128, 3072, nullptr, wgmma_ss_kernel)(dd, da, db, 1024, wgmma_desc(0, 2 * lbo, 2 * sbo), desc_b,
                                                      false);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    expect_warpgroup_product(download(dd, 64 * 16), a,
                             [&](int k, int j) { return double(math::bf16_to_f32(b[size_t(k * 16 + j)])); });
  }
  const std::vector<uint16_t> zeros(1024, 0);
  const uint16_t* dz = dev.upload(zeros);
  SR_LAUNCH(1, 128, 3072, nullptr, wgmma_ss_kernel)(dd, dz, db, 1024, wgmma_desc(0, 1024, 128) | (uint64_t(2) << 62),
                                                    desc_b, false);
  expect_kernel_failure(emu::peek_sticky_error(), "swizzled A");
}

// wgmma is asynchronous as far as a thread can see: the accumulators read NaN from the issue
// to the wgmma.wait_group that completes the group, then hold the product; a product issued
// on accumulators in flight continues from their in-flight result (A B0 + A B1 here); a
// change of the shared memory a product read before its wait, a cp.async issued to it
// before then, or a thread that ends without waiting, fails the kernel.
TEST(CudaEmulator, WgmmaLandsAtItsWaitGroup) {
  // a[m][k]; b[k][n], k < 16 for B0, >= 16 for B1
  const std::vector<uint16_t> a = bf16_randn(64 * 16, 15), b = bf16_randn(32 * 16, 16);
  std::vector<uint16_t> placed(512, 0);  // each half K-major, LBO 64, SBO 128 elements, 256 apart
  for (int k = 0; k < 32; ++k)
    for (int n = 0; n < 16; ++n)
      placed[size_t((k / 16) * 256 + (n % 8) * 8 + (n / 8) * 128 + (k % 8) + ((k % 16) / 8) * 64)] =
          b[size_t(k * 16 + n)];
  Device dev;
  const uint16_t* da = dev.upload(a);
  const uint16_t* dp = dev.upload(placed);
  float* dd = dev.zeros<float>(64 * 16);
  float* de = dev.zeros<float>(128 * 8);
  const auto desc = [](uint32_t start_bytes) { return wgmma_desc(start_bytes, 128, 256); };
  for (int mode : {0, 1}) {
    SR_LAUNCH(1, 128, 1024, nullptr, wgmma_async_kernel)(dd, de, da, dp, desc(0), desc(512), mode);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    expect_warpgroup_product(download(dd, 64 * 16), a, [&](int k, int j) {
      return double(math::bf16_to_f32(b[size_t(k * 16 + j)])) + math::bf16_to_f32(b[size_t((k + 16) * 16 + j)]);
    });
  }
  for (float v : download(de, 128 * 8)) EXPECT_TRUE(std::isnan(v)) << "read before the wait: " << v;
  SR_LAUNCH(1, 128, 1024, nullptr, wgmma_async_kernel)(dd, de, da, dp, desc(0), desc(512), 2);
  expect_kernel_failure(emu::peek_sticky_error(), "changed before the wgmma.wait_group");
  SR_LAUNCH(1, 128, 1024, nullptr, wgmma_async_kernel)(dd, de, da, dp, desc(0), desc(512), 3);
  expect_kernel_failure(emu::peek_sticky_error(), "never waited for");
  // The copy lands only at its own wait, after the product's: the bytes are unchanged there,
  // but on the hardware it may land first.
  SR_LAUNCH(1, 128, 1024, nullptr, wgmma_async_kernel)(dd, de, da, dp, desc(0), desc(512), 4);
  expect_kernel_failure(emu::peek_sticky_error(), "which a warpgroup product in flight reads");
}

// wgmma_fences_kernel in each failing mode (with `threads` threads): the kernel fails, saying
// `words`.
struct FailingMode {
  int mode;
  unsigned threads;
  const char* words;
};
void expect_fences_kernel_failures(float* dd, const uint16_t* da, const uint16_t* dp, uint64_t desc,
                                   std::initializer_list<FailingMode> cases) {
  for (const FailingMode& c : cases) {
    SCOPED_TRACE("mode " + std::to_string(c.mode) + ", " + std::to_string(c.threads) + " threads");
    SR_LAUNCH(1, c.threads, 1024, nullptr, wgmma_fences_kernel)(dd, da, dp, desc, c.mode);
    expect_kernel_failure(emu::peek_sticky_error(), c.words);
  }
}

// The tensor cores read shared memory through the async proxy and registers the thread may
// have rewritten: a kernel that skips either fence the ISA asks for fails, as it may compute
// from stale data on the hardware, and one that has both computes the product in every
// schedule; so does one whose product reads what a cp.async in flight writes, or one that
// rewrites a product's A fragments before its wait.
TEST(CudaEmulator, WgmmaNeedsBothFences) {
  const std::vector<uint16_t> a = bf16_randn(64 * 16, 17), b = bf16_randn(16 * 16, 18);  // a[m][k], b[k][n]
  const std::vector<uint16_t> placed = k_major_placed(b);
  Device dev;
  const uint16_t* da = dev.upload(a);
  const uint16_t* dp = dev.upload(placed);
  float* dd = dev.zeros<float>(64 * 16);
  const uint64_t desc = wgmma_desc(0, 128, 256);
  for (const emu::Schedule& s : {order(emu::Schedule::Order::Forward), order(emu::Schedule::Order::Reverse, 0, true),
                                 order(emu::Schedule::Order::Shuffle, 7)}) {
    ScheduleScope scope(s);
    SR_LAUNCH(1, 128, 1024, nullptr, wgmma_fences_kernel)(dd, da, dp, desc, 0);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    expect_warpgroup_product(download(dd, 64 * 16), a,
                             [&](int k, int j) { return 3.0 * math::bf16_to_f32(b[size_t(k * 16 + j)]); });
  }
  ScheduleScope forward(order(emu::Schedule::Order::Forward));  // copies land at their wait
  expect_fences_kernel_failures(dd, da, dp, desc, {
      {1, 128, "filled by cp.async and has not fenced since"},
      {2, 128, "which thread 0 filled"},  // the writer's own fence counts, and it is named
      {3, 128, "filled by cp.async and has not fenced since"},
      {4, 128, "no wgmma.fence since the thread started or last waited"},
      {5, 128, "no wgmma.fence since the thread started or last waited"},
      // A copy to what a product reads, in flight during the product: it lands at its wait
      // here, after the product, but may land first on the hardware.
      {8, 128, "which a cp.async in flight (issued, not yet waited for) writes"},
      // The A fragments of a product in flight are its operands until its wait.
      {9, 128, "A fragment registers a warpgroup product reads were rewritten"},
  });
}

// wgmma.mma_async is one instruction of a warpgroup's four warps: a warp that skips one (on
// the hardware the others would wait for it), a warp whose operands differ from its
// warpgroup's, or a block that is not whole warpgroups fails the kernel.
TEST(CudaEmulator, WgmmaIsOneInstructionOfFourWarps) {
  const std::vector<uint16_t> a = bf16_randn(64 * 16, 19), placed = bf16_randn(512, 20);
  Device dev;
  const uint16_t* da = dev.upload(a);
  const uint16_t* dp = dev.upload(placed);
  float* dd = dev.zeros<float>(64 * 16);
  const uint64_t desc = wgmma_desc(0, 128, 256);
  SR_LAUNCH(1, 128, 1024, nullptr, wgmma_fences_kernel)(dd, da, dp, desc, 0);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  expect_fences_kernel_failures(dd, da, dp, desc, {
      {6, 128, "warp 1 issued 1 warpgroup products (wgmma.mma_async) and warp 0"},
      {7, 128, "number 2 differs from warp"},
      {0, 96, "a warpgroup is four whole warps"},
  });
}

TEST(CudaEmulator, CpAsyncLandsAtItsWaitAndIsCheckedAgainstSharedMemory) {
  ScheduleScope forward(order(emu::Schedule::Order::Forward));  // the messages below are its
  Device d;
  const std::vector<float> in = randn(64, 5);
  const float* din = d.upload(in);
  float* out = d.zeros<float>(64);
  SR_LAUNCH(1, 64, 64 * 4, nullptr, early_read_kernel)(out, din, true);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(download(out, 64), in);
  SR_LAUNCH(1, 64, 64 * 4, nullptr, early_read_kernel)(out, din, false);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : download(out, 64)) EXPECT_TRUE(std::isnan(v)) << "read before the wait: still the poison";
  {
    ScheduleScope scope(order(emu::Schedule::Order::Forward, 0, true));
    SR_LAUNCH(1, 64, 64 * 4, nullptr, early_read_kernel)(out, din, false);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(download(out, 64), in) << "landing at issue, the other end of what hardware may do";
  }
  SR_LAUNCH(1, 2, 16, nullptr, copy_outside_smem_kernel)(din);
  expect_kernel_failure(emu::peek_sticky_error(), "outside the block's dynamic shared memory");
}

// ---- launches and memory ----------------------------------------------------------------------

TEST(CudaEmulator, RefusesLaunchShapesAnH200Refuses) {
  Device d;
  int* out = d.zeros<int>(1);
  SR_LAUNCH(1, 1025, 0, nullptr, nothing_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SR_LAUNCH(dim3(1, 65536), 32, 0, nullptr, nothing_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SR_LAUNCH(1, 32, 64 << 10, nullptr, nothing_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue) << "64 KiB without the attribute";
  EXPECT_EQ(cudaFuncSetAttribute(nothing_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10),
            cudaSuccess);
  SR_LAUNCH(1, 32, 64 << 10, nullptr, nothing_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(nothing_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 << 10),
            cudaErrorInvalidValue)
      << "past an H200's 227 KiB";
  EXPECT_EQ(emu::peek_sticky_error(), cudaSuccess) << "refused launches are not sticky";
}

TEST(CudaEmulator, DeviceMemoryRunsOutAndStartsAsNaN) {
  size_t free_b = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_b, &total), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, total + 1), cudaErrorMemoryAllocation);
  EXPECT_EQ(p, nullptr);
  ASSERT_EQ(cudaMalloc(&p, 8), cudaSuccess);
  float f[2];
  ASSERT_EQ(cudaMemcpy(f, p, 8, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(std::isnan(f[0]) && std::isnan(f[1]));
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(f), cudaErrorInvalidValue) << "not device memory";
}

// ---- libraries --------------------------------------------------------------------------------

TEST(CudaEmulator, CublasLtStridedBatchedTransposedProductMatchesFp64) {
  // Column-major: D (m x n) = op(A) op(B), A stored k x m (TRANSA), B stored k x n; 3 batches.
  const int m = 5, n = 7, k = 9, batch = 3;
  const int64_t sa = int64_t(k) * m + 4, sb = int64_t(k) * n, sd = int64_t(m) * n;
  std::vector<uint16_t> a(size_t(sa * batch)), b(size_t(sb * batch));
  const std::vector<float> ra = randn(a.size(), 6), rb = randn(b.size(), 7);
  for (size_t i = 0; i < a.size(); ++i) a[i] = math::f32_to_bf16(ra[i]);
  for (size_t i = 0; i < b.size(); ++i) b[i] = math::f32_to_bf16(rb[i]);
  Device d;
  const uint16_t* da = d.upload(a);
  const uint16_t* db = d.upload(b);
  float* dd = d.zeros<float>(size_t(sd * batch));
  cublasLtHandle_t h;
  ASSERT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc;
  ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  const cublasOperation_t t = CUBLAS_OP_T;
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t), CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t la, lb, ld;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, k), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m), CUBLAS_STATUS_SUCCESS);
  const int32_t count = batch;
  for (auto [l, stride] : {std::pair{la, sa}, std::pair{lb, sb}, std::pair{ld, sd}}) {
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                               sizeof stride),
              CUBLAS_STATUS_SUCCESS);
  }
  const float alpha = 2, beta = 0;
  ASSERT_EQ(cublasLtMatmul(h, desc, &alpha, da, la, db, lb, &beta, dd, ld, dd, ld, nullptr, nullptr, 0, nullptr),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<float> got = download(dd, size_t(sd * batch));
  for (int s = 0; s < batch; ++s)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double want = 0;
        for (int p = 0; p < k; ++p)
          want += double(math::bf16_to_f32(a[size_t(s * sa + p + i * k)])) *
                  math::bf16_to_f32(b[size_t(s * sb + p + j * k)]);
        EXPECT_NEAR(got[size_t(s * sd + i + j * m)], 2 * want, 1e-4 * (1 + std::fabs(want)));
      }
  // Shapes that do not fit are refused, as cuBLASLt refuses them.
  cublasLtMatrixLayout_t wrong;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&wrong, CUDA_R_32F, m + 1, n, m + 1), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatmul(h, desc, &alpha, da, la, db, lb, &beta, dd, wrong, dd, wrong, nullptr, nullptr, 0,
                           nullptr),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasLtMatrixLayout_t refused = nullptr;
  EXPECT_EQ(cublasLtMatrixLayoutCreate(&refused, CUDA_R_32F, 4, 4, 3), CUBLAS_STATUS_INVALID_VALUE) << "ld < rows";
  for (auto l : {la, lb, ld, wrong}) cublasLtMatrixLayoutDestroy(l);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(h);
}

// cuBLASLt's default preference allows split-K reductions in the output's type; the
// emulated heuristic offers, for a bf16 D, one such algorithm first (2 slices, each partial
// sum rounded to bf16), and none once the preference's reduction mask leaves them out. The
// row [1, 1, 1, 1] times the column [1, 2^-9, 2^-9, 2^-9]: 1 + 3 * 2^-9 rounds to 1 + 2^-7
// in one pass; reduced in bf16, (1 + 2^-9 -> 1) + 2^-8 = 1 + 2^-8 ties to 1.
TEST(CudaEmulator, CublasLtOffersBf16ReductionsUnlessThePreferenceMasksThem) {
  const uint16_t one = math::f32_to_bf16(1.f), e = math::f32_to_bf16(std::ldexp(1.f, -9));
  Device d;
  const uint16_t* da = d.upload(std::vector<uint16_t>{one, one, one, one});
  const uint16_t* db = d.upload(std::vector<uint16_t>{one, e, e, e});
  uint16_t* dd = d.zeros<uint16_t>(1);
  cublasLtHandle_t h;
  ASSERT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc;
  ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  // Column-major: A [1, 4] with ld 1, B [4, 1] with ld 4, D [1, 1].
  cublasLtMatrixLayout_t la, lb, ld;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, 1, 4, 1), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, 4, 1, 4), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, 1, 1, 1), CUBLAS_STATUS_SUCCESS);
  const float alpha = 1, beta = 0;
  auto first = [&](const uint32_t* mask) {
    cublasLtMatmulPreference_t pref;
    EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
    if (mask) {
      EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, mask,
                                                     sizeof *mask),
                CUBLAS_STATUS_SUCCESS);
    }
    cublasLtMatmulHeuristicResult_t results[8] = {};
    int returned = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, 8, results, &returned),
              CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulPreferenceDestroy(pref);
    std::vector<uint32_t> schemes;
    for (int i = 0; i < returned; ++i) {
      uint32_t scheme = 99;
      size_t written = 0;
      EXPECT_EQ(cublasLtMatmulAlgoConfigGetAttribute(&results[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                     &scheme, sizeof scheme, &written),
                CUBLAS_STATUS_SUCCESS);
      EXPECT_EQ(written, sizeof scheme);
      schemes.push_back(scheme);
    }
    return std::pair{returned > 0 ? results[0].algo : cublasLtMatmulAlgo_t{}, schemes};
  };
  auto product = [&](const cublasLtMatmulAlgo_t& algo) {
    EXPECT_EQ(cublasLtMatmul(h, desc, &alpha, da, la, db, lb, &beta, dd, ld, dd, ld, &algo, nullptr, 0, nullptr),
              CUBLAS_STATUS_SUCCESS);
    return double(math::bf16_to_f32(download(dd, 1)[0]));
  };
  const auto [by_default, default_schemes] = first(nullptr);
  EXPECT_EQ(default_schemes, (std::vector<uint32_t>{CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE, CUBLASLT_REDUCTION_SCHEME_NONE,
                                                    CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE,
                                                    CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}));
  EXPECT_EQ(product(by_default), 1.0);
  const uint32_t fp32 = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  const auto [masked, masked_schemes] = first(&fp32);
  EXPECT_EQ(masked_schemes, (std::vector<uint32_t>{CUBLASLT_REDUCTION_SCHEME_NONE, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE,
                                                   CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}));
  EXPECT_EQ(product(masked), 1 + std::ldexp(1.0, -7));
  for (auto l : {la, lb, ld}) cublasLtMatrixLayoutDestroy(l);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(h);
}

TEST(CudaEmulator, RadixSortIsStableOverTheGivenBits) {
  const std::vector<uint32_t> keys = {5, 3, 0x105, 3, 1, 5};  // 0x105 sorts as 5 over 8 bits
  const std::vector<int32_t> vals = {0, 1, 2, 3, 4, 5};
  std::vector<uint32_t> ko(keys.size());
  std::vector<int32_t> vo(vals.size());
  size_t temp = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, temp, keys.data(), ko.data(), vals.data(), vo.data(),
                                            int(keys.size()), 0, 8),
            cudaSuccess);
  std::vector<char> scratch(temp);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(scratch.data(), temp, keys.data(), ko.data(), vals.data(),
                                            vo.data(), int(keys.size()), 0, 8),
            cudaSuccess);
  EXPECT_EQ(vo, (std::vector<int32_t>{4, 1, 3, 0, 2, 5}));
  EXPECT_EQ(ko, (std::vector<uint32_t>{1, 3, 3, 5, 0x105, 5}));
}

// ---- streams ----------------------------------------------------------------------------------

// Stream A computes mid = 2 in, stream B out = 3 mid; with B waiting for A's event, out is
// 6 in under either model. Without the wait, lazy streams run B's kernel before A's (A
// has not been waited for) and B reads mid as it was: the bug a GPU may show, which eager
// streams hide.
TEST(CudaEmulator, LazyStreamsShowAMissingEventWait) {
  const int n = 64;
  const std::vector<float> in = randn(n, 8);
  for (bool lazy : {false, true}) {
    for (bool wait : {true, false}) {
      ScheduleScope scope(order(emu::Schedule::Order::Forward, 0, false, lazy));
      Device d;
      const float* din = d.upload(in);
      float* mid = d.zeros<float>(n);
      float* out = d.zeros<float>(n);
      cudaStream_t a, b;
      cudaEvent_t done;
      ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
      ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
      ASSERT_EQ(cudaEventCreate(&done), cudaSuccess);
      SR_LAUNCH(1, n, 0, a, scale_kernel)(mid, din, 2.f, n);
      ASSERT_EQ(cudaEventRecord(done, a), cudaSuccess);
      if (wait) {
        ASSERT_EQ(cudaStreamWaitEvent(b, done, 0), cudaSuccess);
      }
      SR_LAUNCH(1, n, 0, b, scale_kernel)(out, mid, 3.f, n);
      ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
      std::vector<float> got(n);
      ASSERT_EQ(cudaMemcpyAsync(got.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost, b), cudaSuccess);
      int right = 0;
      for (int i = 0; i < n; ++i) right += got[size_t(i)] == 6 * in[size_t(i)];
      if (wait || !lazy)
        EXPECT_EQ(right, n) << "lazy " << lazy << " wait " << wait;
      else
        EXPECT_EQ(right, 0) << "the missing wait went unseen";
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      cudaEventDestroy(done);
      cudaStreamDestroy(a);
      cudaStreamDestroy(b);
    }
  }
}

// The host's calls, counted (streams.h's HostCalls): allocations and releases of each kind,
// every wait, and as drains the waits that ran queued work and left none. A wait for an
// event with later work queued behind it is not a drain; a stream synchronisation is; a
// wait for work already run is not either (the device was idle before it).
TEST(CudaEmulator, CountsTheHostsAllocationsWaitsAndDrains) {
  ScheduleScope scope(order(emu::Schedule::Order::Forward, 0, false, true));
  const emu::HostCalls c0 = emu::host_calls();
  void* p = nullptr;
  void* h = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 256), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(&h, 256), cudaSuccess);
  cudaStream_t s;
  cudaEvent_t e;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e), cudaSuccess);
  const emu::HostCalls c1 = emu::host_calls();
  EXPECT_EQ(c1.device_allocs - c0.device_allocs, 1);
  EXPECT_EQ(c1.pinned_allocs - c0.pinned_allocs, 1);

  ASSERT_EQ(cudaMemsetAsync(p, 0, 256, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(p, 1, 256, s), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(e), cudaSuccess);  // the second memset stays queued
  const emu::HostCalls c2 = emu::host_calls();
  EXPECT_EQ(c2.waits - c1.waits, 1);
  EXPECT_EQ(c2.drains - c1.drains, 0) << "work was still queued behind the event";

  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);  // runs the second: a drain
  const emu::HostCalls c3 = emu::host_calls();
  EXPECT_EQ(c3.waits - c2.waits, 1);
  EXPECT_EQ(c3.drains - c2.drains, 1);

  ASSERT_EQ(cudaEventSynchronize(e), cudaSuccess);  // ran already: a wait, not a drain
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  const emu::HostCalls c4 = emu::host_calls();
  EXPECT_EQ(c4.waits - c3.waits, 2);
  EXPECT_EQ(c4.drains - c3.drains, 0);

  ASSERT_EQ(cudaMemsetAsync(p, 2, 256, s), cudaSuccess);
  unsigned char back[256];
  ASSERT_EQ(cudaMemcpyAsync(back, p, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);  // pageable
  EXPECT_EQ(back[0], 2);
  const emu::HostCalls c5 = emu::host_calls();
  EXPECT_EQ(c5.drains - c4.drains, 1) << "a copy to pageable memory waits for the stream";

  cudaEventDestroy(e);
  cudaStreamDestroy(s);
  ASSERT_EQ(cudaFree(p), cudaSuccess);
  ASSERT_EQ(cudaFreeHost(h), cudaSuccess);
  const emu::HostCalls c6 = emu::host_calls();
  EXPECT_EQ(c6.device_frees - c5.device_frees, 1);
  EXPECT_EQ(c6.pinned_frees - c5.pinned_frees, 1);
  EXPECT_EQ(c6.drains - c5.drains, 0) << "nothing was left to run";
}

// CUDA's rules for host memory in async copies: pageable memory is read at the call and
// written before it returns; pinned memory is read and written when the copy runs, so a
// pinned buffer reused before its copy ran is a bug that lazy streams show.
TEST(CudaEmulator, AsyncCopiesUseHostMemoryAsCudaDefines) {
  ScheduleScope scope(order(emu::Schedule::Order::Forward, 0, false, true));
  Device d;
  float* dev = d.zeros<float>(4);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  std::vector<float> pageable(4, 1.f);
  ASSERT_EQ(cudaMemcpyAsync(dev, pageable.data(), 16, cudaMemcpyHostToDevice, s), cudaSuccess);
  pageable.assign(4, 2.f);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(download(dev, 4), std::vector<float>(4, 1.f)) << "pageable: read at the call";

  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), 16), cudaSuccess);
  std::fill(pinned, pinned + 4, 3.f);
  ASSERT_EQ(cudaMemcpyAsync(dev, pinned, 16, cudaMemcpyHostToDevice, s), cudaSuccess);
  std::fill(pinned, pinned + 4, 4.f);  // too early: the copy has not run
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(download(dev, 4), std::vector<float>(4, 4.f)) << "pinned: read when the copy runs";

  std::fill(pinned, pinned + 4, 0.f);
  ASSERT_EQ(cudaMemcpyAsync(pinned, dev, 16, cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(pinned[0], 0.f) << "pinned: written when the copy runs, after a wait";
  cudaEvent_t e0, e1;
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e0, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e1, s), cudaSuccess);
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaErrorNotReady) << "events that have not run";
  ASSERT_EQ(cudaEventSynchronize(e1), cudaSuccess);
  EXPECT_EQ(pinned[0], 4.f);
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaSuccess);
  // An event made without timing cannot be timed, as CUDA refuses it.
  cudaEvent_t untimed;
  ASSERT_EQ(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(untimed, s), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(untimed), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, untimed), cudaErrorInvalidResourceHandle);
  cudaEventDestroy(untimed);

  std::vector<float> back(4, 0.f);
  ASSERT_EQ(cudaMemcpyAsync(back.data(), dev, 16, cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(back, std::vector<float>(4, 4.f)) << "pageable: finished when the call returns";
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
  cudaStreamDestroy(s);
}

// The legacy default stream waits for blocking streams (cudaStreamCreate), not for
// non-blocking ones.
TEST(CudaEmulator, TheDefaultStreamWaitsForBlockingStreamsOnly) {
  ScheduleScope scope(order(emu::Schedule::Order::Forward, 0, false, true));
  const std::vector<float> in = randn(32, 9);
  Device d;
  const float* din = d.upload(in);
  for (bool blocking : {true, false}) {
    float* out = d.zeros<float>(32);
    cudaStream_t s;
    ASSERT_EQ(blocking ? cudaStreamCreate(&s) : cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
              cudaSuccess);
    SR_LAUNCH(1, 32, 0, s, scale_kernel)(out, din, 2.f, 32);
    const std::vector<float> got = download(out, 32);  // cudaMemcpy: the default stream
    EXPECT_EQ(got[0] == 2 * in[0], blocking) << (blocking ? "blocking" : "non-blocking");
    cudaStreamDestroy(s);
  }
}

// A collective's result (an Access::Lands item) issued before a second collective on other
// bytes stays queued while the second takes its input (drain_for), and lands when an event
// recorded after it is waited for, or when a later item touches its bytes.
TEST(CudaEmulator, ACollectivesResultLandsOnlyWhenWaitedFor) {
  ScheduleScope scope(order(emu::Schedule::Order::Forward, 0, false, true));
  Device d;
  float* a = d.zeros<float>(4);
  float* b = d.zeros<float>(4);
  cudaStream_t s;
  cudaEvent_t landed;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&landed), cudaSuccess);
  auto land = [&](float* p, float v) {
    emu::enqueue(s, [p, v] { std::fill(p, p + 4, v); }, {emu::Access::Lands, p, 16});
  };
  bool read_b = false;
  land(a, 1.f);
  ASSERT_EQ(cudaEventRecord(landed, s), cudaSuccess);
  emu::enqueue(s, [&] { read_b = true; }, {emu::Access::Reads, b, 16});
  emu::drain_for(s, b, 16);
  EXPECT_TRUE(read_b) << "the second collective took its input";
  EXPECT_EQ(a[0], 0.f) << "the first result landed before anything waited for it";
  ASSERT_EQ(cudaEventSynchronize(landed), cudaSuccess);
  EXPECT_EQ(a[0], 1.f) << "waiting for the event after it lands it";

  land(a, 2.f);
  land(b, 3.f);
  emu::enqueue(s, [] {}, {emu::Access::Reads, a, 16});
  emu::drain_for(s, a, 16);
  EXPECT_EQ(a[0], 2.f) << "a result under the new input lands first";
  EXPECT_EQ(b[0], 0.f) << "one elsewhere stays queued";
  land(b, 4.f);
  SR_LAUNCH(1, 4, 0, s, scale_kernel)(a, a, 1.f, 4);  // unknown access: in order
  emu::drain_for(s, b, 0);
  EXPECT_EQ(b[0], 4.f) << "results on the same bytes land in order, before a kernel";
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  cudaEventDestroy(landed);
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace speedrun::cuda

#else

TEST(CudaEmulator, OnlyInTheEmulatedBuild) {
  GTEST_SKIP() << "the CUDA emulator's tests run in the emulated build (cmake -DSPEEDRUN_CUDA_EMULATOR=ON)";
}

#endif
