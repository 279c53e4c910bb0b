// Finding GPUs and building the CUDA backend on one.
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend.h"
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
  fail("--device cuda: the CUDA backend is being built and cannot run yet; use --device cpu");
}

}  // namespace speedrun::cuda
