#!/usr/bin/env bash
# Configures build-asan/: every C++ target with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DSPEEDRUN_SANITIZE=address,undefined), CPU only (no CUDA, no MPI). With clang (and its
# libFuzzer) it also gets libFuzzer's instrumentation and the fuzz/ targets, so one build
# serves scripts/sanitize.sh and scripts/fuzz.sh; without clang, g++ builds the sanitized
# tests alone. Prints which. Used by those two scripts. The settings are CMakePresets.json's
# `asan` (clang) and `asan-gcc` presets: `cmake --preset asan` configures the same tree.
# SPEEDRUN_UNITY_BUILD=ON|OFF in the environment sets CMake's option of that name.
set -euo pipefail
cd "$(dirname "$0")/.."

cxx=g++
fuzz=OFF
preset=asan-gcc
if command -v clang++ >/dev/null; then
  probe="$(mktemp -d)"
  printf '#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' >"$probe/p.cpp"
  if clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>/dev/null; then
    cxx=clang++
    fuzz=ON
    preset=asan
  fi
  rm -rf "$probe"
fi
# A tree configured with another compiler cannot be switched: start it again.
if [ -f build-asan/CMakeCache.txt ] &&
   ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=\(.*/\)\?$cxx\$" build-asan/CMakeCache.txt; then
  rm -rf build-asan
fi
# Ninja for a new tree, as scripts/build.sh says why.
command -v ninja >/dev/null && export CMAKE_GENERATOR="${CMAKE_GENERATOR:-Ninja}"
cmake --preset "$preset" ${SPEEDRUN_UNITY_BUILD:+-DSPEEDRUN_UNITY_BUILD=$SPEEDRUN_UNITY_BUILD} >/dev/null
echo "build-asan: $cxx, sanitizers address,undefined, fuzz targets $fuzz"
