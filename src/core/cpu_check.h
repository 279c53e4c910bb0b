// The x86 instruction-set extensions this build's C++ code was compiled to use
// (SPEEDRUN_CPU_ARCH, CMakeLists.txt: x86-64-v3, i.e. AVX2 and FMA, by default on x86-64),
// and the check that the running CPU has them. Without it a CPU that lacks one (an x86 CPU
// from before 2013, some low-power ones) dies of an illegal instruction wherever the
// compiler first used it; with it the process ends before any such code runs (a
// constructor that runs first, compiled for the baseline x86-64) with a message naming the
// missing extensions and the rebuild that fixes it. Elsewhere (aarch64: NEON is its
// baseline) nothing is required.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace speedrun {

// The extensions the build requires, by __builtin_cpu_supports' names ("avx2", "fma", ...),
// from the compiler's predefined macros of SPEEDRUN_CPU_ARCH; empty off x86.
const std::vector<std::string>& required_cpu_features();
// SPEEDRUN_CPU_ARCH as the build was configured ("x86-64-v3"; "" for the compiler's default).
const char* cpu_arch_name();

// Whether the running CPU has the extension (__builtin_cpu_supports' name; false for a
// name the check does not know).
bool cpu_supports(const std::string& name);
// Those of `required` that `supports` says the CPU lacks, in order.
std::vector<std::string> missing_cpu_features(const std::vector<std::string>& required,
                                              const std::function<bool(const std::string&)>& supports);
// The message for a CPU that lacks `missing` (non-empty).
std::string cpu_features_message(const std::vector<std::string>& missing);

// Ends the process (status 1) with cpu_features_message when the running CPU lacks a
// required extension. It runs by itself before other static initialisers; calling it from
// main keeps its object file linked from a static library.
void require_cpu_features();

}  // namespace speedrun
