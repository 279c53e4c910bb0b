// Between cpu_features.cpp (compiled with the build's CPU flags, so its macros name the
// extensions they enable) and cpu_check.cpp (compiled for the baseline, which checks them).
#pragma once

namespace speedrun::detail {

extern const char* const kRequiredCpuFeatures[];  // __builtin_cpu_supports names; nullptr-ended
extern const char* const kCpuArchName;            // SPEEDRUN_CPU_ARCH

}  // namespace speedrun::detail
