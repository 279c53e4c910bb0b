#include "backend/cuda/emulator/gpu_profile.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace speedrun::cuda::emu {

namespace {

// Each limit as the vendor's tables give it (the CUDA C++ Programming Guide's compute
// capability table: 227 KiB per block on sm_90, 163 KiB on sm_80, 99 KiB on sm_86/89,
// 96 KiB on sm_70).
constexpr GpuProfile kProfiles[] = {
    {"h200", "speedrun CUDA emulator (H200 limits)", 9, 0, 132, 232448, 233472, size_t(60) << 20},
    {"a100", "speedrun CUDA emulator (A100 limits)", 8, 0, 108, 166912, 167936, size_t(40) << 20},
    {"rtx4090", "speedrun CUDA emulator (RTX 4090 limits)", 8, 9, 128, 101376, 102400,
     size_t(72) << 20},
    {"v100", "speedrun CUDA emulator (V100 limits)", 7, 0, 80, 98304, 98304, size_t(6) << 20},
};

const GpuProfile* find(const std::string& key) {
  for (const GpuProfile& p : kProfiles)
    if (key == p.key) return &p;
  return nullptr;
}

std::atomic<const GpuProfile*> g_profile{nullptr};

}  // namespace

const GpuProfile& gpu_profile() {
  const GpuProfile* p = g_profile.load();
  if (p) return *p;
  const char* e = std::getenv("SPEEDRUN_CUDA_EMULATOR_GPU");
  p = e && *e ? find(e) : &kProfiles[0];
  if (!p) {
    std::fprintf(stderr,
                 "speedrun CUDA emulator: SPEEDRUN_CUDA_EMULATOR_GPU=%s is not one of h200, a100, "
                 "rtx4090, v100\n",
                 e);
    std::abort();
  }
  const GpuProfile* expected = nullptr;
  g_profile.compare_exchange_strong(expected, p);
  return *g_profile.load();
}

bool set_gpu_profile(const std::string& key) {
  const GpuProfile* p = find(key);
  if (!p) return false;
  g_profile.store(p);
  return true;
}

}  // namespace speedrun::cuda::emu
