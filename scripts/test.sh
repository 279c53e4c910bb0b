#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest). Tests that need what
# this machine lacks (python3-torch, the GPT-2 tokenizer files, a GPU) skip, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 1200
