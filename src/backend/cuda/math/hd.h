// SR_HD marks arithmetic shared by the CUDA kernels and the host: under nvcc it is
// __host__ __device__, under a plain C++ compiler it is nothing, so tests/test_cuda_math.cpp
// checks these functions with g++ against the CPU backend, without a GPU or CUDA runtime.
#pragma once

#ifdef __CUDACC__
#define SR_HD __host__ __device__
#else
#define SR_HD
#endif
