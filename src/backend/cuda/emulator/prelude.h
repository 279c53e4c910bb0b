// Included first (the compiler's -include) into every CUDA source of an emulated build
// (cmake -DSPEEDRUN_CUDA_EMULATOR=ON): the .cu files are then compiled by the host C++
// compiler, and their kernels run on the CPU through simt.h (one fiber per CUDA thread,
// barriers and warp collectives as the hardware defines them) so that the thread mapping,
// shared-memory use and warp-level code of every kernel is tested without a GPU.
//
// What this makes of CUDA C++:
//  - __global__, __device__, __host__ say nothing; __launch_bounds__ is dropped (CUDA's
//    own headers do this for a host compiler);
//  - __shared__ variables are `static thread_local`: one copy per OS thread, and one OS
//    thread runs a whole block at a time, so every CUDA thread of the block shares it;
//    dynamic shared memory comes from SR_DYNAMIC_SMEM (launch.h);
//  - threadIdx, blockIdx, blockDim, gridDim, __syncthreads, __syncwarp, the shuffles and
//    __any_sync are the running fiber's (simt.h).
#pragma once

#define __host__
#define __device__
#define __global__
#define __shared__ static thread_local
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstring>

#include "backend/cuda/emulator/simt.h"

// Device intrinsics the kernels call, as their host equivalents.
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

#define threadIdx (::speedrun::cuda::emu::thread_idx())
#define blockIdx (::speedrun::cuda::emu::block_idx())
#define blockDim (::speedrun::cuda::emu::block_dim())
#define gridDim (::speedrun::cuda::emu::grid_dim())
#define __syncthreads() ::speedrun::cuda::emu::sync_threads(__FILE__, __LINE__)
#define __syncwarp(...) ::speedrun::cuda::emu::sync_warp(__VA_ARGS__)
#define __shfl_sync(mask, v, src) ::speedrun::cuda::emu::shfl(mask, v, src)
#define __shfl_xor_sync(mask, v, m) ::speedrun::cuda::emu::shfl_xor(mask, v, m)
#define __shfl_down_sync(mask, v, d) ::speedrun::cuda::emu::shfl_down(mask, v, d)
#define __any_sync(mask, pred) ::speedrun::cuda::emu::vote_any(mask, pred)

// nvcc's cuda_runtime.h takes a kernel itself here; a host compiler's does not.
template <class T>
cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}
