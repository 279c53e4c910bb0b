#!/usr/bin/env bash
# Runs the CUDA backend's tests without a GPU: builds build-emu/ with the CUDA code compiled
# by the host compiler against the CPU emulator of CUDA (src/backend/cuda/emulator/: every
# CUDA thread a fiber, warp collectives, ldmatrix/mma.sync/cp.async and cuBLASLt as their
# specifications define them), then runs
#   - the emulator's own tests (test_cuda_emulator);
#   - every Backend op of the CUDA backend against the fp64 oracle (test_conformance),
#     its own tests (test_cuda_backend, _ops, _optimizer, _model: memory, GEMMs, each op
#     and the fused ones bit for bit, the optimizer, the model's loss and every gradient,
#     decoding, sampling) and the attention kernels on awkward shapes (test_cuda_attention);
#   - the attention kernels and every other op again under two other schedules (threads
#     and blocks in reverse with cp.async landing at issue; a seeded shuffle), where a race
#     would change results, both with lazy streams (work runs only when waited for), where
#     a missing stream, event or staging-buffer wait would;
#   - with MPI: the NCCL communicator's collectives against MPI's, `mpirun -np 2 speedrun
#     train --device cuda` against one GPU of two micro-batches, the emulator's check on
#     a collective's input, a job whose NCCL loses a link and one whose rank fails
#     (test_mpi), each rank a process with an emulated GPU, NCCL emulated over MPI
#     (emulator/nccl.cpp);
#   - the GPU check (bench/cuda_check.sh --emulated): the script run on a GPU machine, its GPU
#     steps (tests, a training run against the CPU's curve, speedrun bench --device cuda)
#     at dry-run sizes on this build, so that none of its branches first runs on a GPU;
#   - where nvcc is found: bench/head_sass.sh, and scripts/check_wgmma.sh (ptxas serializes
#     none of the attention's warpgroup products).
# Left to a GPU (and to `scripts/emulate.sh --all`): the 100-step training run against the
# CPU curve (~3 minutes here) and the record-shape attention check (over half an hour).
# `--asan` builds build-emu-asan/ instead, with AddressSanitizer + UndefinedBehaviorSanitizer
# (device memory is host memory there, so every kernel's out-of-bounds access, leak or
# undefined arithmetic is a report: compute-sanitizer's memcheck without a GPU), and runs
# the tests once; about 25 minutes on 2 cores, so CI leaves it out.
# Needs the CUDA toolkit's headers (/usr/local/cuda), not a GPU or its driver. About 6
# minutes on 2 cores (docs/TESTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/local/cuda/include/cuda_runtime.h ] && ! command -v nvcc >/dev/null; then
  echo "emulate: no CUDA toolkit headers (/usr/local/cuda): the CUDA backend's tests are skipped"
  exit 0
fi
all=0
asan=0
for a in "$@"; do
  case "$a" in
    --all) all=1 ;;
    --asan) asan=1 ;;
    *) echo "emulate: unknown argument $a (--all, --asan)" >&2; exit 2 ;;
  esac
done
dir=build-emu
flags=()
if [ "$asan" = 1 ]; then
  dir=build-emu-asan
  flags=(-DSPEEDRUN_SANITIZE=address,undefined -DCMAKE_CXX_COMPILER=g++)
  reports="$PWD/$dir/sanitizer-reports"
  rm -rf "$reports"
  mkdir -p "$reports"
  export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:log_path=$reports/asan"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
fi

# Ninja for a new tree, as scripts/build.sh says why.
command -v ninja >/dev/null && export CMAKE_GENERATOR="${CMAKE_GENERATOR:-Ninja}"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DSPEEDRUN_CUDA_EMULATOR=ON \
  ${SPEEDRUN_UNITY_BUILD:+-DSPEEDRUN_UNITY_BUILD=$SPEEDRUN_UNITY_BUILD} \
  ${flags[@]+"${flags[@]}"} >/dev/null
# test_cuda_math too: bench/cuda_check.sh --emulated runs every test_cuda* of the tree, so
# an old copy would otherwise run there (and none on a new tree).
# The CUDA backend's own tests, a binary per family (tests/test_cuda_*.cpp).
backend_tests=(test_cuda_backend test_cuda_ops test_cuda_optimizer test_cuda_model)
targets=(speedrun test_cuda_emulator test_conformance "${backend_tests[@]}" test_cuda_attention
         test_cuda_math)
# With MPI (scripts/setup.sh installs it): NCCL emulated over MPI, and the multi-GPU tests.
mpi=0
grep -q '^SPEEDRUN_HAVE_NCCL_EMULATED:INTERNAL=ON' "$dir/CMakeCache.txt" 2>/dev/null && mpi=1
[ "$mpi" = 1 ] && targets+=(test_mpi mpi_selftest)
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"

cd "$dir"
slow='CudaBackendTest.TrainingTracksTheCpuLossCurve:CudaAttention.RecordShapeIsFiniteAndMatchesSampledRows'
filter="-$slow"
[ "$all" = 1 ] && filter='*'
reports_found() {  # prints the sanitizer reports, if any; true when there were some
  [ "$asan" = 1 ] && compgen -G "$reports/*" >/dev/null || return 1
  for f in "$reports"/*; do echo "--- $f"; head -60 "$f"; done
  echo "emulate: sanitizer reports (each is a finding: fix the code)"
}
run() {  # run <schedule> <binary> [gtest filter]
  echo "== $2 (schedule: $1)"
  SPEEDRUN_CUDA_EMULATOR_ORDER="$1" ./"$2" --gtest_brief=1 --gtest_filter="${3:-*}" || {
    rc=$?
    reports_found || true
    echo "emulate: $2 failed (exit $rc)"
    exit "$rc"
  }
}
forward_runs() {
  run forward test_cuda_emulator
  run forward test_conformance '*cuda*'
  for t in "${backend_tests[@]}"; do run forward "$t" "$filter"; done
  run forward test_cuda_attention "$filter"
}
other_runs() {  # other_runs <schedule>
  run "$1" test_cuda_attention "$filter"
  run "$1" test_conformance '*cuda*'
  for t in "${backend_tests[@]}"; do run "$1" "$t" "$filter"; done
}
if [ "$asan" = 1 ]; then
  forward_runs
  reports_found && exit 1
  echo "emulate: the CUDA backend's tests passed on the emulator under ASan + UBSan"
  exit 0
fi
# Two schedules at a time: the emulator runs a process on one core (OpenBLAS's sgemm
# aside), and their processes share nothing. Each one's output is printed whole, in order.
side_by_side() {  # side_by_side CMD1 CMD2: both at once; stops when either failed
  local l1 l2 p1 p2 r1=0 r2=0
  l1=$(mktemp) l2=$(mktemp)
  $1 >"$l1" 2>&1 &
  p1=$!
  $2 >"$l2" 2>&1 &
  p2=$!
  wait "$p1" || r1=$?
  wait "$p2" || r2=$?
  cat "$l1" "$l2"
  rm -f "$l1" "$l2"
  [ "$r1" = 0 ] && [ "$r2" = 0 ] || exit 1
}
side_by_side forward_runs "other_runs reverse,early,lazy"
# The third schedule as two processes too: its attention tests (the longest binary) beside
# the rest of it and the multi-GPU tests.
shuffled_attention() { run 1234,lazy test_cuda_attention "$filter"; }
shuffled_rest() {
  run 1234,lazy test_conformance '*cuda*'
  for t in "${backend_tests[@]}"; do run 1234,lazy "$t" "$filter"; done
  if [ "$mpi" = 1 ]; then
    # Lazy streams only: eager ones run every collective at issue, which proves nothing more.
    run 1234,lazy test_mpi 'Mpi.Nccl*:Mpi.TwoGpu*:Mpi.EmulatedNccl*:Mpi.ALostNccl*:Mpi.AFailingGpu*'
  else
    echo "== no MPI in this build: the multi-GPU tests (test_mpi on the emulated NCCL) are skipped"
  fi
}
side_by_side shuffled_attention shuffled_rest
cd ..
echo "== bench/cuda_check.sh --emulated"
OUT="$PWD/build-emu/cuda_check" bash bench/cuda_check.sh --emulated --build build-emu >/dev/null ||
  { cat build-emu/cuda_check/summary.md; echo "emulate: bench/cuda_check.sh --emulated failed (logs in build-emu/cuda_check/)"; exit 1; }
cat build-emu/cuda_check/summary.md
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "== bench/head_sass.sh: machine instructions per logit of the head's cross entropy"
  bench/head_sass.sh
  echo "== scripts/check_wgmma.sh: ptxas keeps the attention's warpgroup products asynchronous"
  scripts/check_wgmma.sh
fi
echo "emulate: the CUDA backend's tests passed on the emulator"
