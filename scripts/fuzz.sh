#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (one per parser of outside input; fuzz/README.md),
# each for a bounded time, as many at once as there are cores, and prints the executions
# of each.
#
#   scripts/fuzz.sh [-t SECONDS] [TARGET ...]      # default: 20 s each, every target
#
# Builds them into build-asan/ (clang, AddressSanitizer + UndefinedBehaviorSanitizer +
# libFuzzer; the tree scripts/sanitize.sh also uses). Each target starts from its committed
# seeds, fuzz/corpus/<target>/, and keeps what it finds in build-asan/fuzz/corpus/<target>/
# (so a later run goes on from there). A finding (crash, hang over 10 s, leak, sanitizer
# report, broken invariant) stops with status 1 and the input saved as
# build-asan/fuzz/artifacts/<target>-crash-<sha1>: fix the code, then copy that file into
# fuzz/corpus/<target>/ as a regression seed (named after what it found).
# Without clang or libFuzzer (Debian: clang, libclang-rt-14-dev) it says so and exits 0.
# SPEEDRUN_FUZZ_ARGS adds libFuzzer flags (e.g. "-jobs=2 -workers=2").
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20
if [ "${1:-}" = "-t" ]; then
  seconds="$2"
  shift 2
fi

probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
printf '#include <cstdint>\n#include <cstddef>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' >"$probe/p.cpp"
if ! command -v clang++ >/dev/null; then
  echo "fuzz: skipped: clang++ not found (apt-get install clang libclang-rt-14-dev)"
  exit 0
fi
if ! clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err"; then
  echo "fuzz: skipped: clang++ cannot link libFuzzer ($(head -1 "$probe/err")); apt-get install libclang-rt-14-dev"
  exit 0
fi

scripts/configure_asan.sh
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp | sed 's/^fuzz_//')"); done
fi
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_$t.cpp" ] || { echo "fuzz: no target '$t' (fuzz/fuzz_$t.cpp)" >&2; exit 2; }
done
build_targets=()
for t in "${targets[@]}"; do build_targets+=(--target "fuzz_$t"); done
cmake --build build-asan -j"$(nproc)" "${build_targets[@]}"

# Dictionaries: JSON syntax for the JSON formats, plus each format's own words.
declare -A dicts=(
  [shard]=""
  [safetensors]="json safetensors"
  [weights]="json safetensors"
  [checkpoint_meta]="json checkpoint_meta"
  [tokenizer_files]="json tokenizer_files"
  [bpe_train]="utf8"
  [jsonl]="json documents"
  [text_documents]="documents"
  [metrics]="json metrics"
  [sweep_spec]="json sweep_spec"
  [gemm_record]="gemm_record"
  [utf8]="utf8"
)

work=build-asan/fuzz
mkdir -p "$work/artifacts" "$work/logs"
# A finding stops the target at once; leaks are findings; reports name lines.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:symbolize=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export OMP_NUM_THREADS=1  # one core per target; the document reader's threads would share it

# One target per core at a time (each is single-threaded), reported in order.
fuzz_one() {  # fuzz_one <target>: runs it, leaves its exit status in $work/logs/<target>.rc
  local t="$1" rc=0 dict_args=()
  mkdir -p "$work/corpus/$t"
  if [ -n "${dicts[$t]:-}" ]; then
    : >"$work/$t.dict"
    for d in ${dicts[$t]}; do cat "fuzz/dict/$d.dict" >>"$work/$t.dict"; done
    dict_args=(-dict="$work/$t.dict")
  fi
  # shellcheck disable=SC2086
  "build-asan/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 -artifact_prefix="$work/artifacts/$t-" \
    "${dict_args[@]}" ${SPEEDRUN_FUZZ_ARGS:-} "$work/corpus/$t" "fuzz/corpus/$t" \
    >"$work/logs/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$work/logs/$t.rc"
}
jobs_max=$(nproc)
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs_max" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait

total=0
failed=()
for t in "${targets[@]}"; do
  log="$work/logs/$t.log"
  rc=$(cat "$work/logs/$t.rc" 2>/dev/null || echo 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(ls "$work/corpus/$t" | wc -l)
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t: FINDING after ${runs:-?} runs (status $rc); the input and report:"
    grep -h -E "runtime error|ERROR|SUMMARY|^fuzz finding|Test unit written|^terminate|^  what|^ *#[0-9]+ 0x" "$log" |
      cut -c1-240 | head -30
    failed+=("$t")
  else
    echo "fuzz: $t: ${runs:-?} runs in ${seconds} s, no finding (corpus: $corpus generated inputs)"
  fi
  total=$((total + ${runs:-0}))
done
echo "fuzz: ${#targets[@]} targets, $total runs in all; logs in $work/logs/"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]} (inputs under $work/artifacts/; see the header of scripts/fuzz.sh)" >&2
  exit 1
fi
