// Finding GPUs and building the CUDA backend on one.
#include <cuda_runtime.h>

#include <cstdlib>

#include "backend/cuda/backend.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

int visible_devices(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  if (n == 0 && why) *why = "the CUDA driver reports no device";
  return n;
}

std::unique_ptr<Backend> make_backend(int gpu, int visible) {
  const int g = choose_gpu(gpu, visible, std::getenv("OMPI_COMM_WORLD_LOCAL_RANK"),
                           std::getenv("SLURM_LOCALID"));
  return std::make_unique<CudaBackend>(g);
}

}  // namespace speedrun::cuda
