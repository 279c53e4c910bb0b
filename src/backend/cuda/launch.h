// How the kernels of this folder are launched and get their dynamic shared memory, in one
// place so that an emulated build (emulator/prelude.h, cmake -DSPEEDRUN_CUDA_EMULATOR=ON)
// can run the same code on the CPU:
//   SR_LAUNCH(grid, block, smem_bytes, stream, kernel)(args...);
//   SR_DYNAMIC_SMEM(name);  // inside a kernel: unsigned char name[], 16-byte aligned
// `kernel` (last, so a template's argument list may hold commas) names one function, its
// template arguments given, so that its address is the one cudaFuncSetAttribute was given.
#pragma once

#ifdef SPEEDRUN_CUDA_EMULATED
#include "backend/cuda/emulator/simt.h"

#define SR_LAUNCH(grid, block, smem, stream, ...)                                          \
  ::speedrun::cuda::emu::make_launcher(#__VA_ARGS__, reinterpret_cast<const void*>(&__VA_ARGS__), \
                                       dim3(grid), dim3(block), size_t(smem), stream,      \
                                       [](auto&&... sr_args) { __VA_ARGS__(sr_args...); })
#define SR_DYNAMIC_SMEM(name) unsigned char* const name = ::speedrun::cuda::emu::dynamic_smem()

#else

#define SR_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define SR_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]

#endif
