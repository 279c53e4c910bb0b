#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest). Tests that need what
# this machine lacks (python3-torch, the GPT-2 tokenizer files, a GPU) skip, saying so.
# Then the CPU tests again under AddressSanitizer + UndefinedBehaviorSanitizer
# (scripts/sanitize.sh) and every fuzz target for 15 s (scripts/fuzz.sh), about 8 minutes
# on 2 cores (docs/TESTING.md); SPEEDRUN_SANITIZE=0 leaves those two out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)" --timeout 1200)
if [ "${SPEEDRUN_SANITIZE:-1}" != 0 ]; then
  scripts/sanitize.sh
  scripts/fuzz.sh -t "${SPEEDRUN_FUZZ_SECONDS:-15}"
fi
