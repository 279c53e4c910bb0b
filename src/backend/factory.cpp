#include "backend/factory.h"

#include <omp.h>

#include <cstdio>
#include <cstdlib>

#include "backend/cpu/cpu_backend.h"
#ifdef SPEEDRUN_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/plan.h"
#endif
#include "core/build_info.h"

namespace speedrun {

bool cuda_built() {
#ifdef SPEEDRUN_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count(std::string* why) {
#ifdef SPEEDRUN_HAVE_CUDA
  return cuda::visible_devices(why);
#else
  if (why) *why = "this build has no CUDA backend (the CUDA toolkit was not found when it was built)";
  return 0;
#endif
}

std::unique_ptr<Backend> make_backend(const BackendOptions& o) {
  check(o.threads >= 0, "--threads ", o.threads, ": must be >= 0 (0: all cores)");
  DeviceChoice d = o.device;
  if (d == DeviceChoice::Auto) {
    d = DeviceChoice::CPU;
#ifdef SPEEDRUN_HAVE_CUDA
    // A GPU, where this build runs on the one the process would take; else the CPU, saying
    // why, where --device cuda would stop with that reason.
    if (const int n = cuda_device_count(); n > 0) {
      const std::string why = cuda::gpu_problem(cuda::process_gpu(o.gpu, n));
      if (why.empty())
        d = DeviceChoice::CUDA;
      else
        std::fprintf(stderr, "note: --device auto takes the CPU: %s\n", why.c_str());
    }
#endif
  }
  switch (d) {
    case DeviceChoice::CPU: {
      // More threads than the cores this process may use take turns on them, and every
      // parallel region waits for the slowest: a typo (--threads 1000) slows every step
      // many times over without a word otherwise.
      const int cores = omp_get_num_procs();
      if (o.threads > cores)
        std::fprintf(stderr, "warning: --threads %d on %d cores: threads beyond the cores take "
                     "turns and slow every step (0: all cores)\n", o.threads, cores);
      return std::make_unique<CpuBackend>(o.threads);
    }
    case DeviceChoice::CUDA: {
      std::string why;
      if (!cuda_built())
        fail("--device cuda: this build of speedrun has no CUDA backend: install the CUDA "
             "toolkit (nvcc) and rebuild (scripts/build.sh), or use --device cpu");
      const int n = cuda_device_count(&why);
      check(n > 0, "--device cuda: no CUDA GPU is visible: ", why, "; or use --device cpu");
#ifdef SPEEDRUN_HAVE_CUDA
      const char* env = std::getenv("SPEEDRUN_GEMM_ALGOS");
      return cuda::make_backend(o.gpu, n, o.gemm_algos ? *o.gemm_algos : env ? env : "");
#endif
      break;
    }
    case DeviceChoice::Auto:
      break;
  }
  fail("make_backend: unreachable device choice");
}

std::string devices_report() {
  std::string out = "speedrun: CPU backend";
#ifdef SPEEDRUN_HAVE_CUDA
  out += "; CUDA backend";
#ifdef SPEEDRUN_CUDA_EMULATED
  out += " on the CPU emulator of CUDA (a test build)";
#endif
#else
  out += "; no CUDA backend (the CUDA toolkit was not found when this build was configured)";
#endif
#ifdef SPEEDRUN_HAVE_MPI
  out += "; MPI";
#endif
#ifdef SPEEDRUN_HAVE_NCCL
  out += "; NCCL";
#endif
  out += "\n";
  out += "build: " + build_summary() + "\n";
#ifdef SPEEDRUN_HAVE_CUDA
  const std::string archs = cuda::build_cuda_architectures();
  if (!archs.empty()) out += "CUDA kernels compiled for " + archs + "\n";
  std::string why;
  const int n = cuda_device_count(&why);
  if (n == 0) return out + "no CUDA GPU visible: " + why + "\n";
  for (const std::string& line : cuda::describe_gpus(n)) out += line + "\n";
  const int own = cuda::process_gpu(-1, n);
  out += "this process would take GPU " + std::to_string(own) +
         " (the local rank modulo the GPUs; CUDA_VISIBLE_DEVICES narrows them)\n";
#endif
  return out;
}

Precision resolve_precision(const Backend& be, PrecisionChoice choice) {
  const Precision p =
      choice == PrecisionChoice::Auto ? be.default_precision() : named_precision(choice);
  be.check_precision(p);
  return p;
}

}  // namespace speedrun
