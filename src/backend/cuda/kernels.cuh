// Device helpers shared by the kernels of this folder: warp and block reductions in the
// fixed order of math/reduce.h, and 16-byte bf16 loads and stores. Only .cu files include
// this.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/launch.h"
#include "backend/cuda/math/bf16.h"
#include "backend/cuda/math/reduce.h"
#include "backend/cuda/plan.h"

namespace speedrun::cuda {

// Lane 0 gets the warp's sum in math::warp_tree's order (every lane must call).
template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Every lane gets the warp's sum (butterfly: a fixed order too, the same on every lane).
template <class T>
__device__ inline T warp_allsum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Thread 0 gets the block's sum in math::block_tree's order. The block must have
// math::kReduceThreads threads; smem holds math::kReduceWarps values. Every thread calls.
__device__ inline double block_sum(double v, double* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  double r = 0;
  if (warp == 0) r = warp_sum(lane < math::kReduceWarps ? smem[lane] : 0.0);
  __syncthreads();  // smem may be reused
  return r;
}

// 8 bf16 at p (16-byte aligned) as floats, and back (rounded to nearest even).
__device__ inline void load8(const uint16_t* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = math::unpack_lo(w[i]);
    v[2 * i + 1] = math::unpack_hi(w[i]);
  }
}

__device__ inline void store8(uint16_t* p, const float (&v)[8]) {
  uint4 u;
  u.x = math::pack_bf16x2(v[0], v[1]);
  u.y = math::pack_bf16x2(v[2], v[3]);
  u.z = math::pack_bf16x2(v[4], v[5]);
  u.w = math::pack_bf16x2(v[6], v[7]);
  *reinterpret_cast<uint4*>(p) = u;
}

// 8 floats at p (16-byte aligned) with two 16-byte accesses, and back.
__device__ inline void load8f(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ inline void store8f(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ inline float load_bf16(const uint16_t* p) { return math::bf16_to_f32(*p); }
__device__ inline void store_bf16(uint16_t* p, float v) { *p = math::f32_to_bf16(v); }

// The global index and stride of a grid-stride loop, in 64 bits.
__device__ inline int64_t global_thread() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_threads() { return int64_t(gridDim.x) * blockDim.x; }

// A warp's row of dim bf16 elements (one warp per row; Vec: 8 at a time from 16-byte
// aligned data): this lane's share of <a, b> in fp32, in a fixed order (warp_allsum gives
// the row's), and dst = src * s, each lane on the elements it would have read itself.
template <bool Vec>
__device__ inline float warp_row_dot(const uint16_t* a, const uint16_t* b, int64_t dim, int lane) {
  float dot = 0;
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float p[8], q[8];
      load8(a + i, p);
      load8(b + i, q);
#pragma unroll
      for (int k = 0; k < 8; ++k) dot += p[k] * q[k];
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) dot += load_bf16(a + i) * load_bf16(b + i);
  }
  return dot;
}
template <bool Vec>
__device__ inline void warp_row_scale(uint16_t* dst, const uint16_t* src, int64_t dim, int lane,
                                      float s) {
  if constexpr (Vec) {
    for (int64_t i = lane * 8; i < dim; i += 256) {
      float v[8];
      load8(src + i, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] *= s;
      store8(dst + i, v);
    }
  } else {
    for (int64_t i = lane; i < dim; i += 32) store_bf16(dst + i, load_bf16(src + i) * s);
  }
}

// The reduction partials' scratch every kernel asks for, whatever its number of dots (up
// to three per block, mix_norm.cu's with the skip): one size, so the buffer is made once.
inline constexpr size_t kPartialsBytes = sizeof(double) * 3 * math::kMaxPartials;

// A block of a multi-tensor launch (plan.h tensor_block_starts): the tensor k it works on
// and its first item and stride in that tensor's grid-stride loop, the same as in a launch
// of the tensor alone.
struct TensorBlock {
  int k;
  int64_t first, stride;
};
// The head of a multi-tensor launch's table, a kernel parameter: count tensors of n[k]
// elements, tensor k's blocks [start[k], start[k + 1]). A tensor with vec[k] (n[k] % 8 == 0
// and every address 16-byte aligned: vec8_ok) is walked in items of 8 elements with 16-byte
// accesses, the others one element at a time; each element's arithmetic is the same either
// way. Each op's batch holds one beside its own per-tensor pointers.
struct TensorTable {
  int count;
  int start[kMaxLaunchTensors + 1];
  int64_t n[kMaxLaunchTensors];
  bool vec[kMaxLaunchTensors];
  // Host: start from the items of n[0, count) (plan.h tensor_block_starts); returns the
  // launch's grid.
  unsigned grid() {
    int64_t items[kMaxLaunchTensors];
    for (int k = 0; k < count; ++k) items[k] = vec[k] ? n[k] / 8 : n[k];
    tensor_block_starts(items, count, start);
    return unsigned(start[count]);
  }
  // The items of tensor k (device).
  __device__ int64_t items(int k) const { return vec[k] ? n[k] / 8 : n[k]; }
};
__device__ inline TensorBlock tensor_block(const TensorTable& t) {
  int k = 0;
  while (k + 1 < t.count && int(blockIdx.x) >= t.start[k + 1]) ++k;
  return {k, int64_t(int(blockIdx.x) - t.start[k]) * blockDim.x + threadIdx.x,
          int64_t(t.start[k + 1] - t.start[k]) * blockDim.x};
}

}  // namespace speedrun::cuda
