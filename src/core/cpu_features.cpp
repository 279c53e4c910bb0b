// The extensions SPEEDRUN_CPU_ARCH enables, read from the compiler's predefined macros. This
// file is compiled with the rest of the library's flags, so the macros are the build's;
// it holds constant data only, which no CPU needs an extension to read (cpu_check.cpp,
// compiled for the baseline, reads it).
#include "core/cpu_features.h"

namespace speedrun::detail {

// Constant-initialised: nothing runs to build it.
const char* const kRequiredCpuFeatures[] = {
#if defined(__x86_64__) || defined(__i386__)
#ifdef __SSE4_2__
    "sse4.2",
#endif
#ifdef __POPCNT__
    "popcnt",
#endif
#ifdef __AVX__
    "avx",
#endif
#ifdef __AVX2__
    "avx2",
#endif
#ifdef __FMA__
    "fma",
#endif
#ifdef __BMI__
    "bmi",
#endif
#ifdef __BMI2__
    "bmi2",
#endif
#ifdef __AVX512F__
    "avx512f",
#endif
#ifdef __AVX512BW__
    "avx512bw",
#endif
#ifdef __AVX512DQ__
    "avx512dq",
#endif
#ifdef __AVX512VL__
    "avx512vl",
#endif
#endif
    nullptr};

#ifdef SPEEDRUN_CPU_ARCH_NAME
const char* const kCpuArchName = SPEEDRUN_CPU_ARCH_NAME;
#else
const char* const kCpuArchName = "";
#endif

}  // namespace speedrun::detail
