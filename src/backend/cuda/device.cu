// Finding GPUs, telling whether this build runs on one, building the CUDA backend on one
// (and naming the GEMM algorithm record a run's backend reads), and describing them
// (speedrun devices).
#include <cuda_runtime.h>

#include <cstdlib>
#include <filesystem>

#include "backend/cuda/attention/kernels.h"
#include "backend/cuda/attention/plan.h"
#include "backend/cuda/backend.cuh"
#include "backend/cuda/check.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/plan.h"
#include "core/error.h"

namespace speedrun::cuda {

namespace {
// Looked up (never launched) when a backend starts: the driver finds code for the GPU in
// the build, or says why not, before any real kernel would fail mid-step.
__global__ void probe_kernel() {}
}  // namespace

int visible_devices(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) {
      int driver = 0, runtime = 0;
      if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
      if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = CUDART_VERSION;
      *why = device_count_problem(cudaGetErrorString(e), e == cudaErrorInsufficientDriver,
                                  driver, runtime);
    }
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  if (n == 0 && why) *why = "the CUDA driver reports no device";
  return n;
}

std::string gpu_problem(int gpu) {
  cudaDeviceProp p{};
  check_cuda(cudaGetDeviceProperties(&p, gpu), "init", "reading the GPU's properties");
  const int cc = 10 * p.major + p.minor;
  std::string probe;
  if (cc >= kMinComputeCapability) {
    // The lookup runs on the current device. It stays `gpu` afterwards: setting another
    // back would give that GPU a context too (CUDA 12 and later create one there), on GPU 0
    // from every rank of a job.
    check_cuda(cudaSetDevice(gpu), "init", ("cudaSetDevice(" + std::to_string(gpu) + ")").c_str());
    cudaFuncAttributes fa{};
    const cudaError_t e = cudaFuncGetAttributes(&fa, probe_kernel);
    if (e != cudaSuccess) {
      probe = std::string("cudaFuncGetAttributes: ") + cudaGetErrorString(e);
      cudaGetLastError();  // not sticky; clear it for whoever calls next
    }
  }
  return gpu_support_problem(gpu, p.name, cc, build_cuda_architectures(), probe);
}

int process_gpu(int gpu, int visible) {
  return choose_gpu(gpu, visible, std::getenv("OMPI_COMM_WORLD_LOCAL_RANK"),
                    std::getenv("SLURM_LOCALID"), std::getenv("MPI_LOCALRANKID"));
}

std::unique_ptr<Backend> make_backend(int gpu, int visible, const std::string& gemm_algos) {
  return std::make_unique<CudaBackend>(process_gpu(gpu, visible), gemm_algos);
}

std::vector<std::string> describe_gpus(int visible) {
  std::vector<std::string> lines;
  for (int g = 0; g < visible; ++g) {
    cudaDeviceProp p{};
    check_cuda(cudaGetDeviceProperties(&p, g), "devices", "reading a GPU's properties");
    std::string line = "GPU " + std::to_string(g) + ": " + p.name + ", sm_" +
                       std::to_string(10 * p.major + p.minor) + ", " +
                       std::to_string(p.multiProcessorCount) + " SMs, " +
                       format_bytes(double(p.totalGlobalMem)) + ", " +
                       std::to_string(p.sharedMemPerBlockOptin) +
                       " bytes of shared memory per block";
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
      // gpu_problem left GPU g current, where the kernels' SASS versions are looked up.
      // As the attention runner decides whether it may run them (runner.cpp).
      if (p.major == 9 && build_has_wgmma() && attn::forward_wgmma_binary_version() >= 90 &&
          attn::backward_wgmma_binary_version() >= 90)
        chunks += "; Hopper's wgmma attention too, with SPEEDRUN_ATTENTION_FORWARD=wgmma and "
                  "SPEEDRUN_ATTENTION_BACKWARD=wgmma";
      line += "\n  runs the CUDA backend (" + chunks + ")";
    }
    lines.push_back(line);
  }
  return lines;
}

std::string run_gemm_record(const std::string& run_dir, int rank, int world) {
  const char* given = std::getenv("SPEEDRUN_GEMM_ALGOS");
  if (given != nullptr && *given == 0) return "";  // set empty: no record
  std::filesystem::path p = given != nullptr ? std::filesystem::path(given)
                                             : std::filesystem::path(run_dir) / "gemm_algos.tsv";
  if (world > 1)
    p.replace_filename(p.stem().string() + ".rank" + std::to_string(rank) + p.extension().string());
  std::error_code ec;
  if (given != nullptr || gemm_tune_candidates() > 1 || std::filesystem::exists(p, ec))
    return p.string();
  return "";
}

}  // namespace speedrun::cuda
