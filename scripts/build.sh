#!/usr/bin/env bash
# Configures and builds speedrun (Release) into build/ with all cores. Arguments name the
# targets to build (default: everything, tests and benchmarks included).
# SPEEDRUN_UNITY_BUILD=ON|OFF in the environment sets CMake's option of that name (unity
# batches: a faster clean build, slower edits; scripts/test.sh turns it on).
# SPEEDRUN_CUDA_ARCHITECTURES=89 (a CMake list, as "80;90a") sets the GPUs the CUDA kernels
# are compiled for (default: CMakeLists.txt's). SPEEDRUN_CPU_ARCH=native (or x86-64, or any
# -march) sets the CPU code's instruction set (default: x86-64-v3 on x86-64, the compiler's
# own elsewhere); a CPU that lacks the build's is told so when speedrun starts.
set -euo pipefail
cd "$(dirname "$0")/.."
# A new tree uses Ninja where it is installed (scripts/setup.sh installs it): it builds
# every target's files in one pool of jobs, where Makefiles build the targets named on one
# command line one after another. A tree keeps the generator it was made with.
command -v ninja >/dev/null && export CMAKE_GENERATOR="${CMAKE_GENERATOR:-Ninja}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
  ${SPEEDRUN_UNITY_BUILD:+-DSPEEDRUN_UNITY_BUILD=$SPEEDRUN_UNITY_BUILD} \
  ${SPEEDRUN_CUDA_ARCHITECTURES:+"-DCMAKE_CUDA_ARCHITECTURES=$SPEEDRUN_CUDA_ARCHITECTURES"} \
  ${SPEEDRUN_CPU_ARCH+"-DSPEEDRUN_CPU_ARCH=$SPEEDRUN_CPU_ARCH"} >/dev/null
if [ $# -gt 0 ]; then
  for t in "$@"; do cmake --build build -j"$(nproc)" --target "$t"; done
else
  cmake --build build -j"$(nproc)"
fi
