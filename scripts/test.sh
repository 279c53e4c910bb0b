#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest). Tests that need what
# this machine lacks (python3-torch, the GPT-2 tokenizer files, a GPU) skip, saying so.
# Then the CUDA backend's tests on the CPU emulator of CUDA (scripts/emulate.sh, where the
# toolkit's headers exist), the CPU tests again under AddressSanitizer +
# UndefinedBehaviorSanitizer (scripts/sanitize.sh) and every fuzz target for 15 s
# (scripts/fuzz.sh): about 15 minutes more on 2 cores (docs/TESTING.md).
# SPEEDRUN_EMULATE=0 and SPEEDRUN_SANITIZE=0 leave those parts out. The three trees are
# built as unity batches (SPEEDRUN_UNITY_BUILD, CMakeLists.txt): a clean build is the case
# to make fast here; SPEEDRUN_UNITY_BUILD=OFF builds them file by file.
set -euo pipefail
cd "$(dirname "$0")/.."
export SPEEDRUN_UNITY_BUILD="${SPEEDRUN_UNITY_BUILD:-ON}"
# ctest runs one test per core, and each computes with OpenMP threads: threads that spin
# while they wait (OpenMP's default) take the cores from the ones computing. Sleeping
# waits cost nothing to a test alone; what they save on a loaded host is within its noise
# so far (docs/TESTING.md).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
scripts/setup.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 1200)
if [ "${SPEEDRUN_EMULATE:-1}" != 0 ]; then
  scripts/emulate.sh
fi
if [ "${SPEEDRUN_SANITIZE:-1}" != 0 ]; then
  scripts/sanitize.sh
  scripts/fuzz.sh -t "${SPEEDRUN_FUZZ_SECONDS:-15}"
fi
