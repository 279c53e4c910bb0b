#!/usr/bin/env bash
# Saves the Debian packages that the portable build (scripts/build_portable.sh) needs into
# .debs/ (ignored by git), for building on a machine that has a compiler, CMake and CUDA but
# none of these packages and no network: carry .debs there and run
#   scripts/build_portable.sh --debs .debs --deps-root /tmp/deps ...
# which unpacks them into /tmp/deps (never into /). bench/cuda_check.sh does that by itself
# when the carried build-portable/ cannot run. About 10 MB; needs apt (no root).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.debs}
# Static OpenBLAS (OpenMP build) and what it needs from gcc 12 (libgfortran.a, libquadmath.a,
# libgomp.a), static PCRE2, GoogleTest (its CMake files also name gmock), header-only CLI11,
# nlohmann-json and fmt (fmt's CMake files name the shared library, so it comes too).
pkgs=(libopenblas-openmp-dev libpcre2-dev libgtest-dev libgmock-dev libcli11-dev
      nlohmann-json3-dev libfmt-dev libfmt9 libgfortran-12-dev libgcc-12-dev)
mkdir -p "$DEST"
rm -f "$DEST"/*.deb
(cd "$DEST" && apt-get download "${pkgs[@]}")
ls -l "$DEST"
echo "fetch_debs: $(ls "$DEST"/*.deb | wc -l) packages, $(du -sh "$DEST" | cut -f1) in $DEST"
