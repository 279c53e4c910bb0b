#include "backend/factory.h"

#include "backend/cpu/cpu_backend.h"
#ifdef SPEEDRUN_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

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
  if (d == DeviceChoice::Auto) d = cuda_device_count() > 0 ? DeviceChoice::CUDA : DeviceChoice::CPU;
  switch (d) {
    case DeviceChoice::CPU:
      return std::make_unique<CpuBackend>(o.threads);
    case DeviceChoice::CUDA: {
      std::string why;
      if (!cuda_built())
        fail("--device cuda: this build of speedrun has no CUDA backend: install the CUDA "
             "toolkit (nvcc) and rebuild (scripts/build.sh), or use --device cpu");
      const int n = cuda_device_count(&why);
      check(n > 0, "--device cuda: no CUDA GPU is visible (", why,
            "): check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu");
#ifdef SPEEDRUN_HAVE_CUDA
      return cuda::make_backend(o.gpu, n);
#endif
      break;
    }
    case DeviceChoice::Auto:
      break;
  }
  fail("make_backend: unreachable device choice");
}

Precision resolve_precision(const Backend& be, PrecisionChoice choice) {
  const Precision p =
      choice == PrecisionChoice::Auto ? be.default_precision() : named_precision(choice);
  be.check_precision(p);
  return p;
}

}  // namespace speedrun
