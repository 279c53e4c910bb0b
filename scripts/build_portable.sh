#!/usr/bin/env bash
# Builds the binaries a GPU machine without the Debian packages can run (CMake option
# SPEEDRUN_PORTABLE, cmake/portable.cmake): everything but glibc and the CUDA libraries
# linked in, one libspeedrun.so beside the executables (RPATH $ORIGIN). The CMake build tree
# goes to build-portable-tree/; what travels is copied flat into build-portable/ with a
# MANIFEST.txt (commit, glibc needed, shared libraries needed, sizes) and GLIBC_REQUIRED,
# the library xz-packed (below). Before packing it checks the copy: only glibc and CUDA
# libraries needed, and, from a copy in another folder, `speedrun train` runs 3 steps on
# the CPU and every test binary lists its tests.
#
#   scripts/build_portable.sh                  # speedrun, the CUDA-facing tests, the bench tool
#   scripts/build_portable.sh speedrun         # named targets only
#   scripts/build_portable.sh --debs .debs --deps-root /tmp/deps --tree /tmp/t --out /tmp/o
#       (bench/cuda_check.sh's fallback on the GPU machine: unpacks the Debian packages that
#        scripts/fetch_debs.sh saved, never into /, and builds against them)
# Options: --jobs N (default: all cores), --no-check, --tree DIR, --out DIR, --pack /
#          --no-pack (libspeedrun.so as libspeedrun.so.xz; default: packed when --out is
#          inside the repository, where the folder travels),
#          --deps-root DIR, --debs DIR, --cmake-arg ARG (repeatable), --deps-only (find
#          the dependencies under --deps-root alone: checks that the packages suffice).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TREE=build-portable-tree
OUT_DIR=build-portable
JOBS=$(nproc)
CHECK=1
PACK=""
DEPS_ROOT=""
DEBS=""
DEPS_ONLY=0
CMAKE_ARGS=()
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) JOBS=$2; shift 2 ;;
    --no-check) CHECK=0; shift ;;
    --pack) PACK=1; shift ;;
    --no-pack) PACK=0; shift ;;
    --tree) TREE=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --deps-root) DEPS_ROOT=$2; shift 2 ;;
    --debs) DEBS=$2; shift 2 ;;
    --cmake-arg) CMAKE_ARGS+=("$2"); shift 2 ;;
    --deps-only) DEPS_ONLY=1; shift ;;
    -h|--help) awk 'NR > 1 && /^set -euo pipefail$/ { exit } NR > 1' "$0"; exit 0 ;;
    -*) echo "build_portable: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done

# The folder is packed (below) where it travels: inside the repository, unless told.
if [ -z "$PACK" ]; then [[ "$OUT_DIR" != /* ]] && PACK=1 || PACK=0; fi

# What a GPU check runs: speedrun, the tests that exercise a backend through the interface
# or the CUDA code itself, and the step benchmark.
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(speedrun)
  for f in tests/test_cuda*.cpp tests/test_conformance.cpp tests/test_model.cpp \
           bench/bench_cuda_step.cpp; do
    [ "$f" = tests/test_cuda_emulator.cpp ] && continue  # runs in the emulated build only
    [ -f "$f" ] && TARGETS+=("$(basename "${f%.cpp}")")
  done
fi

if [ -n "$DEBS" ]; then
  DEPS_ROOT=${DEPS_ROOT:-/tmp/speedrun-deps}
  case "$(cd "$(dirname "$DEPS_ROOT")" 2>/dev/null && pwd)/$(basename "$DEPS_ROOT")" in
    /|/usr|/usr/*|/lib*|/etc*) echo "build_portable: refusing to unpack into $DEPS_ROOT" >&2; exit 2 ;;
  esac
  mkdir -p "$DEPS_ROOT"
  n=0
  for deb in "$DEBS"/*.deb; do
    [ -f "$deb" ] || continue
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$deb" "$DEPS_ROOT"
    else  # a .deb is an ar archive holding data.tar.*
      tmp=$(mktemp -d)
      (cd "$tmp" && ar x "$(realpath "$ROOT/$deb" 2>/dev/null || realpath "$deb")") &&
        tar -xf "$tmp"/data.tar.* -C "$DEPS_ROOT"
      rm -rf "$tmp"
    fi
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "build_portable: no .deb files in $DEBS (run scripts/fetch_debs.sh)" >&2; exit 2; }
  echo "build_portable: unpacked $n packages from $DEBS into $DEPS_ROOT"
fi
[ -n "$DEPS_ROOT" ] && CMAKE_ARGS+=("-DSPEEDRUN_DEPS_ROOT=$(cd "$DEPS_ROOT" && pwd)")
if [ "$DEPS_ONLY" = 1 ]; then
  # Prove the unpacked packages suffice: every find_package/find_path/find_library looks
  # under the deps root only, and CUDA through a shim root that holds just the toolkit.
  [ -n "$DEPS_ROOT" ] || { echo "build_portable: --deps-only needs --deps-root" >&2; exit 2; }
  shim=$(mktemp -d /tmp/speedrun-cuda-shim.XXXXXX)
  mkdir -p "$shim/usr/local"
  ln -s "$(readlink -f /usr/local/cuda)" "$shim/usr/local/cuda"
  CMAKE_ARGS+=(-DSPEEDRUN_DEPS_ONLY=ON "-DCMAKE_FIND_ROOT_PATH=$(cd "$DEPS_ROOT" && pwd);$shim"
               -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY
               -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER)
fi

GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
[ -f "$TREE/CMakeCache.txt" ] && GEN=()  # keep the generator the tree was made with
# SPEEDRUN_CUDA_ARCHITECTURES=90a (a CMake list) narrows the GPUs, as for scripts/build.sh:
# the default's two architectures take ~4.5 MiB of libspeedrun.so.
cmake -S . -B "$TREE" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DSPEEDRUN_PORTABLE=ON \
  ${SPEEDRUN_CUDA_ARCHITECTURES:+"-DCMAKE_CUDA_ARCHITECTURES=$SPEEDRUN_CUDA_ARCHITECTURES"} \
  ${CMAKE_ARGS[@]+"${CMAKE_ARGS[@]}"} >"$TREE.configure.log" 2>&1 \
  || { cat "$TREE.configure.log" >&2; exit 1; }
mv "$TREE.configure.log" "$TREE/configure.log"
echo "build_portable: building ${TARGETS[*]} in $TREE (-j$JOBS)"
cmake --build "$TREE" -j"$JOBS" --target "${TARGETS[@]}"

# The carried folder: the shared library and the executables, nothing of the build tree.
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
cp -L "$TREE/libspeedrun.so" "$OUT_DIR/"
for t in "${TARGETS[@]}"; do cp "$TREE/$t" "$OUT_DIR/"; done
if command -v strip >/dev/null; then
  for f in "$OUT_DIR"/*; do strip --strip-unneeded "$f"; done
fi

# What the binaries need from the machine: glibc (and which version) and CUDA libraries.
GLIBC_OK='^(libc\.so\.6|libm\.so\.6|libmvec\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2)$'
CUDA_OK='^(libcudart\.so\.[0-9]+|libcublasLt\.so\.[0-9]+|libcublas\.so\.[0-9]+|libnccl\.so\.[0-9]+|libcuda\.so\.1)$'
needed=$(for f in "$OUT_DIR"/*; do
  readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; done | sort -u)
bad=$(echo "$needed" | grep -Ev "$GLIBC_OK" | grep -Ev "$CUDA_OK" | grep -v '^libspeedrun\.so$' || true)
glibc_req=$(for f in "$OUT_DIR"/*; do objdump -T "$f"; done | grep -o 'GLIBC_[0-9][0-9.]*' |
            sed 's/GLIBC_//' | sort -uV | tail -1)
echo "$glibc_req" >"$OUT_DIR/GLIBC_REQUIRED"
{
  echo "speedrun portable build"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%FT%TZ) on $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  nvcc=$(sed -n 's/^set(CMAKE_CUDA_COMPILER "\(.*\)")/\1/p' "$TREE"/CMakeFiles/*/CMakeCUDACompiler.cmake 2>/dev/null | head -1)
  echo "compilers: $(c++ --version | head -1); $([ -n "$nvcc" ] && "$nvcc" --version | tail -1 || echo 'no nvcc: CPU only')"
  echo "glibc required: >= $glibc_req (highest GLIBC_ symbol version of the binaries)"
  echo "glibc symbols of the two newest versions: $(for f in "$OUT_DIR"/*; do objdump -T "$f"; done 2>/dev/null |
    awk '/GLIBC_[0-9]/ {for (i = 1; i <= NF; i++) if ($i ~ /GLIBC_/) {v = $i; gsub(/[()]/, "", v); print v, $NF}}' |
    sort -u | sort -k1,1V | awk '{a[$1] = a[$1] " " $2} END {for (v in a) print v ":" a[v]}' | sort -V | tail -2 | tr '\n' ';')"
  echo "shared libraries needed: $(echo $needed)"
  echo "files:"
  (cd "$OUT_DIR" && ls -l --time-style=+ | awk 'NR>1 {printf "  %-24s %10d\n", $NF, $5}')
  echo "total: $(du -cb "$OUT_DIR"/* | tail -1 | cut -f1) bytes"
} >"$OUT_DIR/MANIFEST.txt"
cat "$OUT_DIR/MANIFEST.txt"

[ -z "$bad" ] || { echo "build_portable: FAIL: needs libraries a GPU machine may lack: $bad" >&2; exit 1; }
check_copy() {
  # Run from a copy elsewhere, so nothing may depend on the build tree or the sources.
  tmp=$(mktemp -d /tmp/speedrun-portable-check.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  cp -r "$OUT_DIR" "$tmp/bin"
  fail=0
  for f in "$tmp"/bin/*; do
    [ -x "$f" ] && [ "${f##*.}" != so ] || continue
    if ldd "$f" | grep -q 'not found'; then
      echo "check: $(basename "$f"): unresolved libraries:"; ldd "$f" | grep 'not found'; fail=1
    fi
    while read -r name path; do  # every library it loads, directly or not
      if [[ "$name" =~ $GLIBC_OK || "$name" =~ $CUDA_OK ]]; then continue; fi
      # The CUDA libraries' own needs (NCCL: libstdc++), there wherever they are; the
      # binaries themselves do not need them (NEEDED is checked above).
      [[ "$name" =~ ^(libgcc_s\.so\.1|libstdc\+\+\.so\.6)$ ]] && continue
      [ "$name" = libspeedrun.so ] && [ "$path" = "$tmp/bin/libspeedrun.so" ] && continue
      echo "check: $(basename "$f") loads $name from $path: a GPU machine may lack it"; fail=1
    done < <(ldd "$f" | awk '/=>/ {print $1, $3}')
  done
  (cd "$tmp" && timeout 300 ./bin/speedrun train --steps 3 --cooldown 1 --seq-len 256 --batch 2 \
     --window-start 64 --window-end 128 --val-every 0 --val-tokens 4096 --no-sample --out "$tmp/run" \
     --device cpu --threads 2 >"$tmp/train.log" 2>&1) \
    && grep -q '"step":2' "$tmp/run/metrics.jsonl" \
    && echo "check: speedrun train (3 CPU steps) from a copy: ok" \
    || { echo "check: speedrun train from a copy FAILED:"; tail -20 "$tmp/train.log"; fail=1; }
  for f in "$tmp"/bin/test_*; do
    [ -x "$f" ] || continue
    n=$(cd "$tmp" && "$f" --gtest_list_tests 2>/dev/null | grep -c '^  ' || true)
    if [ "${n:-0}" -gt 0 ]; then echo "check: $(basename "$f") lists $n tests"
    else echo "check: $(basename "$f") --gtest_list_tests FAILED"; fail=1; fi
  done
  [ "$fail" = 0 ] && echo "build_portable: ok" || { echo "build_portable: FAILED checks" >&2; exit 1; }
}
[ "$CHECK" = 0 ] || check_copy

# Packing: the shared library is most of the folder (static OpenBLAS's kernels for every
# x86 CPU, the kernels' cubins), and everything the GPU machine gets travels in 64 MiB
# with the tree and .debs/. xz takes it from ~44 to ~5 MiB; bench/cuda_check.sh unpacks
# every NAME.xz of a carried folder (xz, else Python's lzma) before it runs anything.
if [ "$PACK" = 1 ]; then
  command -v xz >/dev/null || { echo "build_portable: xz is missing (apt-get install xz-utils; or --no-pack)" >&2; exit 1; }
  xz -T0 -6 -f "$OUT_DIR/libspeedrun.so"
  echo "packed: libspeedrun.so.xz $(du -b "$OUT_DIR/libspeedrun.so.xz" | cut -f1) bytes (bench/cuda_check.sh unpacks it)" \
    | tee -a "$OUT_DIR/MANIFEST.txt"
fi

if [[ "$OUT_DIR" != /* ]]; then  # inside the repository: it travels with the tree
tree_bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } |
              xargs -0 -r du -cb 2>/dev/null | awk '$2=="total"{s+=$1} END{print s+0}')
out_bytes=$(du -cb "$OUT_DIR" | tail -1 | cut -f1)
debs_bytes=0
[ -d .debs ] && debs_bytes=$(du -cb .debs | tail -1 | cut -f1)
echo "travels to the GPU machine: working tree $((tree_bytes / 1048576)) MiB + $OUT_DIR $((out_bytes / 1048576)) MiB + .debs $((debs_bytes / 1048576)) MiB = $(((tree_bytes + out_bytes + debs_bytes) / 1048576)) MiB (limit 64 MiB)"
out_bytes=$((out_bytes + debs_bytes))
[ $((tree_bytes + out_bytes)) -lt $((60 * 1048576)) ] || echo "build_portable: WARNING: over 60 MiB with the working tree" >&2
fi

