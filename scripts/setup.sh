#!/usr/bin/env bash
# Installs every Debian package that speedrun's build, tests and benchmarks need.
# Idempotent: packages already present are not downloaded again, and when all are
# present it returns in well under a second. Set SPEEDRUN_NO_TORCH=1 to skip PyTorch
# (the parity tests and benchmarks against it then skip themselves, saying so).
set -euo pipefail

pkgs=(build-essential cmake pkg-config libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-openmp-dev libcli11-dev nlohmann-json3-dev libfmt-dev
      libpcre2-dev libzstd-dev)
[ "${SPEEDRUN_NO_TORCH:-0}" = 1 ] || pkgs+=(python3-torch python3-numpy)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
