// Finding GPUs and building the CUDA backend on one.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "backend/cuda/attention/plan.h"
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
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

int process_gpu(int gpu, int visible) {
  return choose_gpu(gpu, visible, std::getenv("OMPI_COMM_WORLD_LOCAL_RANK"),
                    std::getenv("SLURM_LOCALID"));
}

std::unique_ptr<Backend> make_backend(int gpu, int visible) {
  return std::make_unique<CudaBackend>(process_gpu(gpu, visible));
}

std::vector<std::string> describe_gpus(int visible) {
  std::vector<std::string> lines;
  for (int g = 0; g < visible; ++g) {
    cudaDeviceProp p{};
    check_cuda(cudaGetDeviceProperties(&p, g), "devices", "reading a GPU's properties");
    const double gib = double(size_t(1) << 30);
    char head[512];
    std::snprintf(head, sizeof head, "GPU %d: %s, sm_%d%d, %d SMs, %.1f GiB, %zu bytes of shared memory per block",
                  g, p.name, p.major, p.minor, p.multiProcessorCount, double(p.totalGlobalMem) / gib,
                  size_t(p.sharedMemPerBlockOptin));
    std::string line = head;
    const std::string why = gpu_problem(g);
    if (!why.empty()) {
      line += "\n  cannot run the CUDA backend: " + why;
    } else {
      std::string chunks;
      try {
        const std::string name = "GPU " + std::to_string(g);
        chunks = attn::tiling_name(attn::tiling_for(size_t(p.sharedMemPerBlockOptin), name.c_str()));
        chunks += " attention chunks";
      } catch (const Error& e) {
        chunks = e.what();
      }
      line += "\n  runs the CUDA backend (" + chunks + ")";
    }
    lines.push_back(line);
  }
  return lines;
}

}  // namespace speedrun::cuda
