// Which GPU the CPU emulator of CUDA stands for: its name, compute capability and the limits
// the CUDA backend reads or is held to (SMs, shared memory per block and per SM, L2). The
// H200 by default; SPEEDRUN_CUDA_EMULATOR_GPU=a100|rtx4090|v100 (or set_gpu_profile, in a
// test) picks another, so that the backend's choices by GPU (attention's chunk sizes, the
// refusal of a GPU older than sm_80) run on the CPU too. Memory is not part of a profile
// (SPEEDRUN_CUDA_EMULATOR_MEMORY caps it, runtime.cpp).
#pragma once
#include <cstddef>
#include <string>

namespace speedrun::cuda::emu {

struct GpuProfile {
  const char* key;   // as SPEEDRUN_CUDA_EMULATOR_GPU names it
  const char* name;  // cudaDeviceProp::name
  int major, minor;
  int sms;
  size_t smem_per_block_optin;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  size_t smem_per_sm;
  size_t l2_bytes;
};

// The profile in force: the environment's at first use, or set_gpu_profile's since.
const GpuProfile& gpu_profile();
// Switches the profile (tests; each emulated device is alike). Returns false for an
// unknown key, leaving the profile as it was.
bool set_gpu_profile(const std::string& key);

// The profile `key` for a scope (a test), the one before it afterwards, however the scope
// ends. ok(): the key was known.
class ScopedGpuProfile {
 public:
  explicit ScopedGpuProfile(const std::string& key)
      : was_(gpu_profile().key), ok_(set_gpu_profile(key)) {}
  ~ScopedGpuProfile() { set_gpu_profile(was_); }
  ScopedGpuProfile(const ScopedGpuProfile&) = delete;
  ScopedGpuProfile& operator=(const ScopedGpuProfile&) = delete;
  bool ok() const { return ok_; }

 private:
  std::string was_;
  bool ok_;
};

}  // namespace speedrun::cuda::emu
