#!/usr/bin/env bash
# Builds the CPU tests into build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer
# (scripts/configure_asan.sh: clang when present, else g++; no CUDA, no MPI) and runs them.
# Any sanitizer report fails the run: the sanitizers stop the process at the first one
# (-fno-sanitize-recover=all, halt_on_error), leaks count (detect_leaks=1), and every
# process's reports, the speedrun commands the tests start included, are collected in
# build-asan/sanitizer-reports/ and printed.
#
#   scripts/sanitize.sh          # the families below (what CI runs)
#   scripts/sanitize.sh --all    # every test family that runs on a CPU
#   scripts/sanitize.sh test_data test_report    # these families
#
# The families CI runs, chosen by measurement (docs/TESTING.md) to fit its time: every
# parser of outside input (shards and the loader: test_data; tokenizer files and BPE:
# test_tokenizer, test_bpe_train; documents and prepare: test_prepare; checkpoints, meta.json
# and metrics.jsonl on resume: test_resume; metrics.jsonl in the report: test_report; flags:
# test_settings, test_cli) and every kernel family (test_conformance: each Backend op
# against the fp64 oracle; test_ops and test_attention: the CPU kernels forward and
# backward; test_optimizer, test_schedule), plus sampling's KV cache (test_sample), the
# model's forward and backward (test_model) and the distributed optimizer's per-reduction
# waits and rank ordering (test_dist), the run directory's guarantees under signals and
# failed writes (test_reliability), the stall watchdog's thread (test_stall), the sweep runner (test_sweep), the benchmark
# (test_bench) and a training run to a low loss (test_train). Left to --all: test_parity
# (its time goes to the PyTorch reference, 32 s).
set -euo pipefail
cd "$(dirname "$0")/.."

ci=(test_data test_tokenizer test_bpe_train test_prepare test_resume test_report test_settings
    test_cli test_conformance test_ops test_attention test_optimizer test_schedule test_sample
    test_model test_dist test_reliability test_stall test_sweep test_bench test_train)
families=()
if [ "${1:-}" = "--all" ]; then
  for f in tests/test_*.cpp; do
    n="$(basename "$f" .cpp)"
    case "$n" in test_cuda_*|test_mpi) continue ;; esac  # no GPU code or MPI in this build
    families+=("$n")
  done
elif [ $# -gt 0 ]; then
  families=("$@")
else
  families=("${ci[@]}")
fi

scripts/configure_asan.sh
t0=$(date +%s)
build_targets=(--target speedrun)
for f in "${families[@]}"; do build_targets+=(--target "$f"); done
cmake --build build-asan -j"$(nproc)" "${build_targets[@]}" | grep -v -E "^\[ *[0-9]+(%|/[0-9]+)\] (Built target|Building|Linking)" || true
[ -x build-asan/speedrun ] || { echo "sanitize: the build failed" >&2; exit 1; }
t1=$(date +%s)

reports="$PWD/build-asan/sanitizer-reports"
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:log_path=$reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
labels="^($(IFS='|'; echo "${families[*]}"))\$"
rc=0
ctest --test-dir build-asan -L "$labels" -j"$(nproc)" --timeout 1200 --output-on-failure \
  >build-asan/sanitize.log 2>&1 || rc=$?
t2=$(date +%s)
grep -E "tests passed|tests failed|\*\*\*Failed|Timeout|Not Run" build-asan/sanitize.log | tail -20 || true
summary=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" build-asan/sanitize.log | tail -1 || true)
skipped=$(grep -c "\*\*\*Skipped" build-asan/sanitize.log || true)

if compgen -G "$reports/*" >/dev/null; then
  echo "sanitize: sanitizer reports (each is a finding: fix the code):" >&2
  for f in "$reports"/*; do
    echo "--- $f" >&2
    head -60 "$f" >&2
  done
  rc=1
fi
echo "sanitize: ${#families[@]} families (${families[*]}): ${summary:-no test ran}; $skipped skipped;" \
     "build $((t1 - t0)) s, tests $((t2 - t1)) s; log in build-asan/sanitize.log"
exit "$rc"
