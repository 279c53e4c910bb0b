#!/usr/bin/env bash
# The CUDA backend on one GPU in one call of under 6 minutes: the one script to run on a GPU
# machine (docs/PERFORMANCE.md, "Checking the CUDA backend on a GPU"). Each step is timed, runs
# under `timeout`, and may fail without stopping the others:
#   env        GPU, driver, glibc, nvcc, compilers, profiling tools
#   build      the carried build-portable/ (scripts/build_portable.sh) when this machine's
#              glibc is new enough and it runs; else a build here from the carried .debs/
#              (scripts/fetch_debs.sh); finds cuBLASLt/NCCL/libcuda and sets LD_LIBRARY_PATH
#   tests      the CUDA-facing test binaries (test_cuda*, test_conformance)
#   train      100 steps of a small model (head dim 64) on --device cuda, and the same on
#              --device cpu --dtype fp32 (started early, in the background)
#   compare    the two loss curves against the bf16-noise criterion (bench/cuda_check.py)
#   bench      the record step (one 64K-token sequence, windows 64 and 1792): `speedrun
#              bench` if the binary has it, else bench_cuda_step, beside the PyTorch anchor
#   attn-wgmma the bench at windows 64 and 1792 again with SPEEDRUN_ATTENTION_FORWARD=wgmma
#              and SPEEDRUN_ATTENTION_BACKWARD=wgmma (Hopper's warpgroup products for the
#              attention kernels), beside mma.sync's
#   attn-order the bench at window 1792 again with SPEEDRUN_ATTENTION_ORDER=tiles (the
#              attention's work items in (sequence, tile) order, for L2 reuse, instead of
#              longest list first), beside the default's
#   head       the bench at window 64 again with the CPU's smaller head chunks (2^25
#              logits), beside the default's: what the GPU's chunk size is worth
#   gemm-tune  the bench at window 64 again with SPEEDRUN_GEMM_TUNE=8 (the fastest of 8 of
#              cuBLASLt's candidates per GEMM problem), beside the heuristic's first
#   memcheck   compute-sanitizer memcheck, then racecheck, on 2 training steps of a micro
#   racecheck  model (and on test_cuda* with CUDA_CHECK_SANITIZE_FILTER), if the tool works
# Logs go to $OUT (at most 9 files, none deeper than $OUT/); the last thing printed is the
# summary table.
#
#   bash bench/cuda_check.sh              # on the GPU machine, with build-portable (and .debs) copied over
#   bash bench/cuda_check.sh --dry-run    # here, without a GPU: every step, GPU steps skipped
#   bash bench/cuda_check.sh --emulated --build build-emu   # the GPU steps too, on the CPU
#                                         # emulator of CUDA (scripts/emulate.sh's build)
# Options: --dry-run; --emulated (a dry run whose GPU steps run on the emulated build, at
#   dry-run sizes, the tests step one gtest shard of four of each binary less its two
#   slowest tests (scripts/emulate.sh runs them all), no compute-sanitizer: the script's
#   GPU branches exercised before a GPU sees them); --build DIR (the binaries to use); --budget-s S (default 330: the
#   whole script's deadline; each step gets what is left); --fallback (build from .debs/
#   even when the carried build runs).
# Environment: OUT (default out/cuda_check), CUDA_CHECK_TRAIN_FLAGS (the compared run's
#   flags), CUDA_CHECK_BENCH=auto|speedrun|tool|none, CUDA_CHECK_SANITIZE_FILTER (gtest
#   filter for the sanitizers on test_cuda*; default none), CUDA_CHECK_CPU_THREADS,
#   CUDA_CHECK_BUILD_S (the fallback build's time cap, default 240), CUDA_CHECK_DRY_RUN=1
#   (as --dry-run).
set -u
T0=$(date +%s)
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
DRY=0
EMU=0
BUILD=""
BUDGET_S=330
FORCE_FALLBACK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --emulated) DRY=1; EMU=1; shift ;;
    --build) BUILD=$2; shift 2 ;;
    --budget-s) BUDGET_S=$2; shift 2 ;;
    --fallback) FORCE_FALLBACK=1; shift ;;
    -h|--help) awk 'NR > 1 && /^set -u$/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "cuda_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "${CUDA_CHECK_DRY_RUN:-0}" = 1 ] && DRY=1
DEADLINE=$((T0 + BUDGET_S))
BUILD_S=${CUDA_CHECK_BUILD_S:-240}  # the fallback build's cap (16 cores: ~1-2 minutes)

OUT="${OUT:-$ROOT/out/cuda_check}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/cuda_check.XXXXXX)
STEPS="$WORK/steps.tsv"
: >"$STEPS"
for f in cuda_check.log summary.md setup.log tests.log sanitizer.log train.log bench.log results.json; do
  : >"$OUT/$f"
done
exec > >(tee -a "$OUT/cuda_check.log") 2>&1
TEE_PID=$!

now() { date +%s; }
left() { echo $((DEADLINE - $(now))); }
elapsed() { echo $(($(now) - T0)); }
# A step's time limit: its own cap, or what is left minus a reserve for the steps after it.
limit() {
  local cap=$1 reserve=${2:-0} l
  l=$(($(left) - reserve))
  [ "$l" -lt "$cap" ] && echo "$l" || echo "$cap"
}
say() { echo "[$(printf '%4d' "$(elapsed)")s] $*"; }

STEP_NAME=""
STEP_T=0
begin() { STEP_NAME=$1; STEP_T=$(now); say "== $1: $2"; }
# end STATUS NOTE: STATUS is pass, fail, timeout, no-time, partial (tests skipped on a GPU)
# or skip (no GPU: counted as fine).
end() {
  local secs=$(($(now) - STEP_T))
  printf '%s\t%s\t%s\t%s\n' "$STEP_NAME" "$1" "$secs" "${2:-}" >>"$STEPS"
  say "   $STEP_NAME: $1 (${secs}s) ${2:-}"
  write_summary
}
# status_of RC: pass, timeout (124/137 from timeout), no-time (run's 200: the budget was
# spent before the step could start) or fail.
status_of() { case "$1" in 0) echo pass ;; 124|137) echo timeout ;; 200) echo no-time ;; *) echo fail ;; esac; }
# run LOG SECONDS CMD...: CMD under timeout, its output appended to LOG; returns its status.
run() {
  local log=$1 secs=$2
  shift 2
  if [ "$secs" -lt 5 ]; then
    echo "(not run: ${secs}s left of the budget) $*" >>"$log"
    return 200
  fi
  echo "\$ $*" >>"$log"
  timeout -k 5 "$secs" "$@" >>"$log" 2>&1
}
show_tail() { say "   last lines of $(basename "$1"):"; tail -n "${2:-15}" "$1" | sed 's/^/      /'; }

write_summary() {
  {
    echo "| step | result | seconds | note |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r n s t note; do echo "| $n | $s | $t | $note |"; done <"$STEPS"
  } >"$OUT/summary.md"
}

finish() {
  trap - EXIT INT TERM
  [ -n "${CPU_PID:-}" ] && kill "$CPU_PID" 2>/dev/null
  if command -v python3 >/dev/null; then
    python3 bench/cuda_check.py results "$STEPS" --json "$OUT/results.json" \
      --part "compare=$WORK/compare.json" --part "bench=$WORK/bench.json" \
      --part "head=$WORK/bench_head.json" --part "gemm_tune=$WORK/bench_gemm.json" >/dev/null 2>&1
  fi
  write_summary
  echo
  say "cuda_check done ($( [ "$DRY" = 1 ] && echo 'dry run, ')$(elapsed)s of ${BUDGET_S}s); logs in $OUT"
  [ -s "$WORK/compare.txt" ] && { echo; cat "$WORK/compare.txt"; }
  [ -s "$WORK/bench_table.md" ] && { echo; cat "$WORK/bench_table.md"; }
  [ -s "$WORK/head.md" ] && { echo; cat "$WORK/head.md"; }
  [ -s "$WORK/gemm.md" ] && { echo; cat "$WORK/gemm.md"; }
  echo
  cat "$OUT/summary.md"
  local bad
  bad=$(awk -F'\t' '$2!="pass" && $2!="skip"' "$STEPS" | wc -l)
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  rm -rf "$WORK"
  [ "$bad" -eq 0 ]
  exit $?
}
trap finish EXIT
trap 'say "interrupted"; exit 130' INT TERM

PY=python3
command -v python3 >/dev/null || PY=""
GPU=0
SETUP="$OUT/setup.log"

# ---- env -------------------------------------------------------------------------------
begin env "machine, GPU, driver, glibc, toolchain, tools"
GLIBC_HERE=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
[ -n "$GLIBC_HERE" ] || GLIBC_HERE=$(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')
{
  echo "date: $(date -u +%FT%TZ); host $(hostname); $(uname -srm); $(nproc) CPUs;" \
       "$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
  [ -r /etc/os-release ] && (. /etc/os-release; echo "os: $PRETTY_NAME")
  echo "glibc: ${GLIBC_HERE:-unknown} ($(ldd --version 2>/dev/null | head -1))"
  if command -v nvidia-smi >/dev/null; then
    timeout 30 nvidia-smi
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  [ -r /proc/driver/nvidia/version ] && head -1 /proc/driver/nvidia/version
  for t in nvcc compute-sanitizer ncu cuobjdump nsys cmake ninja gcc g++ python3 dpkg-deb objdump readelf; do
    p=$(command -v $t || ls /usr/local/cuda/bin/$t 2>/dev/null || true)
    if [ -n "$p" ]; then
      v=$("$p" --version 2>&1 | grep -m1 -iE 'release|version|[0-9]+\.[0-9]+' | head -c 100)
      echo "tool $t: $p ($v)"
    else
      echo "tool $t: absent"
    fi
  done
} >>"$SETUP" 2>&1
note="glibc ${GLIBC_HERE:-?}"
if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  GPU=1
  note="$note; $(timeout 30 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
elif [ "$EMU" = 1 ]; then
  GPU=1  # the GPU steps, on the emulator
  note="$note; no GPU: the CUDA emulator (--emulated), dry-run sizes"
else
  note="$note; no GPU$( [ "$DRY" = 1 ] && echo ' (dry run)')"
fi
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
note="$note; compute-sanitizer $( [ -n "$SANITIZER" ] && echo yes || echo no), ncu $(command -v ncu >/dev/null || ls /usr/local/cuda/bin/ncu >/dev/null 2>&1 && echo yes || echo no)"
grep -E '^(glibc|os|tool nvcc|tool compute|tool ncu)' "$SETUP" | sed 's/^/      /'
end pass "$note"

# ---- build -----------------------------------------------------------------------------
# A binary folder is usable when this machine's glibc is at least the one it needs, every
# library it needs resolves, and speedrun starts.
glibc_needed() {  # $1: folder
  if [ -s "$1/GLIBC_REQUIRED" ]; then cat "$1/GLIBC_REQUIRED"; return; fi
  command -v objdump >/dev/null || { echo 0; return; }
  for f in "$1"/speedrun "$1"/*.so; do [ -f "$f" ] && objdump -T "$f"; done 2>/dev/null |
    grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1
}
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$2" ]; }

# The CUDA libraries the binaries may need, where the loader does not find them itself:
# the toolkit's folders, the driver's, and PyTorch's nvidia-* wheels.
find_cuda_libs() {
  local dirs=() sp lib d found
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
           /usr/local/cuda-*/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -d "$d" ] && dirs+=("$d")
  done
  if [ -n "$PY" ]; then
    for sp in $($PY -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null) \
              /opt/torch/.venv/lib/python3*/site-packages; do
      for d in "$sp"/nvidia/*/lib "$sp"/nvidia/*/lib64; do [ -d "$d" ] && dirs+=("$d"); done
    done
  fi
  for lib in libcuda.so.1 libcudart.so.13 libcublasLt.so.13 libcublas.so.13 libnccl.so.2; do
    # Every copy, with its version in the real file name, for the log.
    for d in "${dirs[@]}"; do [ -e "$d/$lib" ] && readlink -f "$d/$lib"; done | sort -u |
      sed "s|^|   copy of $lib: |"
    found=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1==l {print $NF; exit}')
    if [ -n "$found" ]; then
      echo "lib $lib: $(readlink -f "$found") (loader cache)"
      continue
    fi
    found=""
    for d in "${dirs[@]}"; do
      if [ -e "$d/$lib" ]; then found="$d/$lib"; break; fi
    done
    if [ -n "$found" ]; then
      echo "lib $lib: $(readlink -f "$found") (added to LD_LIBRARY_PATH)"
      d=$(dirname "$found")
      case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *)
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;; esac
    else
      echo "lib $lib: not found"
    fi
  done
}

# usable DIR: prints why not, or nothing.
usable() {
  local dir=$1 need f
  [ -x "$dir/speedrun" ] || { echo "no $dir/speedrun"; return 1; }
  need=$(glibc_needed "$dir")
  if [ -n "$GLIBC_HERE" ] && [ -n "$need" ] && ! version_ge "$GLIBC_HERE" "$need"; then
    echo "needs glibc >= $need, this machine has $GLIBC_HERE"; return 1
  fi
  for f in "$dir"/*; do
    [ -x "$f" ] && [ -f "$f" ] || continue
    # A missing library, or a missing symbol version (an older glibc). cuBLASLt is opened
    # on first use, not linked (docs/CUDA.md): the tests that open it name what is missing.
    if ldd "$f" 2>&1 | grep -q 'not found'; then
      echo "$(basename "$f"): $(ldd "$f" 2>&1 | grep 'not found' | head -3 | tr -s ' \t\n' ' ')"; return 1
    fi
  done
  timeout 30 "$dir/speedrun" --help >/dev/null 2>&1 || { echo "speedrun --help fails"; return 1; }
}

# unpacked DIR: prints the folder to run from. scripts/build_portable.sh packs the library
# (libspeedrun.so.xz: the whole carry must fit 64 MiB); a folder with NAME.xz files is
# copied under $WORK and each unpacked to NAME (xz, else Python's lzma) beside the
# executables, which find libspeedrun.so there (RPATH $ORIGIN).
unpacked() {
  local dir=$1 f
  ls "$dir"/*.xz >/dev/null 2>&1 || { echo "$dir"; return 0; }
  rm -rf "$WORK/carried" && cp -r "$dir" "$WORK/carried" || return 1
  for f in "$WORK/carried"/*.xz; do
    if command -v xz >/dev/null; then
      xz -d -f "$f" || return 1
    elif [ -n "$PY" ]; then
      $PY -c 'import lzma, os, shutil, sys
src = sys.argv[1]
with lzma.open(src) as i, open(src[:-3], "wb") as o:
    shutil.copyfileobj(i, o)
os.chmod(src[:-3], 0o755)
os.remove(src)' "$f" || return 1
    else
      return 1
    fi
  done
  echo "$WORK/carried"
}

begin build "choose the binaries (carried build-portable/, else build from .debs/)"
{
  echo "== CUDA libraries"
  find_cuda_libs
} >>"$SETUP" 2>&1
grep '^lib ' "$SETUP" | sed 's/^/      /'
BIN=""
why=""
carried=""
if [ -n "$BUILD" ]; then
  carried=$BUILD
elif [ "$FORCE_FALLBACK" = 0 ]; then
  carried=build-portable
fi
if [ -n "$carried" ]; then
  if dir=$(unpacked "$carried"); then
    why=$(usable "$dir") && BIN=$dir
  else
    why="could not unpack the .xz files of $carried (neither xz nor python3 here)"
  fi
fi
if [ -n "$BIN" ]; then
  BIN=$(cd "$BIN" && pwd)
  {
    echo "== binaries: $BIN"
    [ -f "$BIN/MANIFEST.txt" ] && cat "$BIN/MANIFEST.txt"
    for f in "$BIN"/*; do [ -x "$f" ] && [ -f "$f" ] && { echo "-- ldd $(basename "$f")"; ldd "$f"; }; done
  } >>"$SETUP" 2>&1
  made=$(sed -n 's/^commit: //p' "$BIN/MANIFEST.txt" 2>/dev/null | awk '{print $1}')
  head=$(git rev-parse --short HEAD 2>/dev/null || true)
  note="$BIN ($(du -sh "$BIN" | cut -f1); built at ${made:-?}; needs glibc $(glibc_needed "$BIN"))"
  [ "$BIN" = "$WORK/carried" ] && note="$note, unpacked from $carried"
  [ -n "$made" ] && [ -n "$head" ] && [ "$made" != "$head" ] && note="$note; WARNING: tree is at $head"
  end pass "$note"
else
  say "   not using the carried build: ${why:-forced}"
  echo "carried build not used: ${why:-forced by --fallback}" >>"$SETUP"
  if [ "$DRY" = 1 ]; then
    end skip "dry run builds nothing (${why:-forced}); would run: scripts/build_portable.sh --debs .debs --deps-root $WORK/deps --tree $WORK/tree --out $WORK/bin --no-check"
  elif ! ls .debs/*.deb >/dev/null 2>&1; then
    end fail "${why:-forced}; and no .debs/ to build from (scripts/fetch_debs.sh, carry .debs)"
  else
    say "   building from .debs/ (timeout $(limit "$BUILD_S" 90)s)"
    run "$SETUP" "$(limit "$BUILD_S" 90)" bash scripts/build_portable.sh --debs .debs \
      --deps-root "$WORK/deps" --tree "$WORK/tree" --out "$WORK/bin" --no-check
    rc=$?
    if [ $rc = 0 ] && why2=$(usable "$WORK/bin"); then
      BIN=$WORK/bin
      end pass "built here from .debs ($(du -sh "$BIN" | cut -f1)); carried build: ${why:-forced}"
    else
      show_tail "$SETUP" 20
      end "$(status_of $rc)" "fallback build failed: ${why2:-see setup.log}"
    fi
  fi
fi

# What the binaries make of this machine: the GPU, whether the build runs on it, the
# attention chunks there (speedrun devices; a build without the command says nothing).
if [ -n "$BIN" ] && timeout 60 "$BIN/speedrun" devices >"$WORK/devices.txt" 2>&1; then
  { echo "== speedrun devices"; cat "$WORK/devices.txt"; } >>"$SETUP"
  sed -n 's/^\(GPU [0-9]*: .*\|  .*\)$/      \1/p' "$WORK/devices.txt" | head -4
fi

# ---- the CPU reference run starts now, in the background ---------------------------------
# The compared run: the tiny preset at head dim 64 (the CUDA attention supports 64 and 128),
# 100 steps, on the synthetic corpus (the same here and on any machine).
if [ "$DRY" = 1 ]; then
  TRAIN_FLAGS=${CUDA_CHECK_TRAIN_FLAGS:-"--preset tiny --layers 2 --heads 2 --head-dim 64 --seq-len 256 --batch 2 --steps 4 --cooldown 1 --window-end 128 --val-every 0 --val-tokens 4096 --seed 0 --no-sample"}
else
  TRAIN_FLAGS=${CUDA_CHECK_TRAIN_FLAGS:-"--preset tiny --head-dim 64 --steps 100 --cooldown 30 --val-every 50 --val-tokens 32768 --seed 0 --no-sample"}
fi
# Half the cores (the GPU run and the tests use the rest); one in a dry run, where the
# machine may be shared and OpenMP threads that wait on each other stall.
CPU_THREADS=${CUDA_CHECK_CPU_THREADS:-$(( DRY ? 1 : ($(nproc) > 4 ? $(nproc) / 2 : $(nproc)) ))}
mkdir -p "$WORK/empty" "$WORK/cpu" "$WORK/cuda"
export SPEEDRUN_FORTUNES_DIR="$WORK/empty"  # the synthetic corpus, never the fortunes
CPU_PID=""
CPU_T0=0
if [ -n "$BIN" ]; then
  CPU_T0=$(now)
  # shellcheck disable=SC2086
  # Passive waiting: its OpenMP threads share the cores with the tests and the GPU run.
  (cd "$WORK/cpu" && OMP_WAIT_POLICY=PASSIVE exec timeout -k 5 "$(limit 300 10)" "$BIN/speedrun" train $TRAIN_FLAGS \
     --device cpu --dtype fp32 --threads "$CPU_THREADS" --out "$WORK/cpu/run") >"$WORK/cpu.log" 2>&1 &
  CPU_PID=$!
  say "   started the CPU fp32 reference run ($CPU_THREADS threads) in the background"
fi

# ---- tests -----------------------------------------------------------------------------
# Minutes each on the emulator (scripts/emulate.sh --all runs them).
EMU_SLOW_TESTS='CudaBackendTest.TrainingTracksTheCpuLossCurve:CudaAttention.RecordShapeIsFiniteAndMatchesSampledRows'

TESTS=()
if [ -n "$BIN" ]; then
  for f in "$BIN"/test_cuda* "$BIN"/test_conformance; do
    # The emulator's own tests run only in the emulated build (elsewhere they skip).
    [ "$EMU" = 0 ] && [ "$(basename "$f")" = test_cuda_emulator ] && continue
    [ -x "$f" ] && TESTS+=("$f")
  done
fi
begin tests "${#TESTS[@]} test binaries: $(for t in ${TESTS[@]+"${TESTS[@]}"}; do printf '%s ' "$(basename "$t")"; done)"
if [ -z "$BIN" ]; then
  end skip "no binaries"
elif [ ${#TESTS[@]} = 0 ]; then
  end skip "no test binaries in $BIN"
elif [ "$GPU" = 0 ]; then
  n=0
  for t in "${TESTS[@]}"; do
    c=$(cd "$WORK" && timeout 30 "$t" --gtest_list_tests 2>>"$OUT/tests.log" | grep -c '^  ')
    echo "$(basename "$t"): lists ${c:-0} tests (not run: no GPU)" >>"$OUT/tests.log"
    n=$((n + ${c:-0}))
  done
  end skip "no GPU: the binaries load and list $n tests; not run"
else
  st=pass
  notes=""
  for t in "${TESTS[@]}"; do
    name=$(basename "$t")
    t1=$(now)
    # The cores the background CPU run leaves.
    filter='*'
    shards=1
    # On the emulator scripts/emulate.sh has run every test already, three times: here a
    # quarter of them shows that the step runs and reads test binaries.
    [ "$EMU" = 1 ] && filter="-$EMU_SLOW_TESTS" && shards=4
    (cd "$WORK" && OMP_NUM_THREADS=$(( $(nproc) - CPU_THREADS > 0 ? $(nproc) - CPU_THREADS : 1 )) \
       GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=0 \
       run "$WORK/$name.log" "$(limit 150 150)" "$t" --gtest_brief=1 --gtest_filter="$filter")
    rc=$?
    { echo "==== $name (exit $rc)"; cat "$WORK/$name.log"; } >>"$OUT/tests.log"
    p=$(grep -m1 -oE '\[  PASSED  \] [0-9]+' "$WORK/$name.log" | grep -oE '[0-9]+$')
    s=$(grep -m1 -oE '\[  SKIPPED \] [0-9]+' "$WORK/$name.log" | grep -oE '[0-9]+$')
    fl=$(grep -m1 -oE '\[  FAILED  \] [0-9]+ test' "$WORK/$name.log" | grep -oE '[0-9]+ ' | tr -d ' ')
    r=$(status_of $rc)
    # With a GPU, a skipped test is a check that did not happen. On the emulator some skip
    # by design (test_cuda_math's checks of the real cuBLASLt and NCCL), and scripts/emulate.sh runs
    # the GPU families itself: skips are counted, not failed.
    [ "$EMU" = 0 ] && [ "$r" = pass ] && [ "${s:-0}" -gt 0 ] && r=partial
    say "   $name: $r in $(($(now) - t1))s (passed ${p:-0}, skipped ${s:-0}, failed ${fl:-0})"
    notes="$notes$name ${r}${fl:+ $fl failed}${s:+ $s skipped}; "
    [ "$r" = pass ] || { [ "$st" = pass ] && st=$r; show_tail "$WORK/$name.log" 25; }
  done
  end "$st" "$notes"
fi

# ---- train on the GPU, then compare with the CPU ---------------------------------------
begin train "cuda bf16 vs cpu fp32: $TRAIN_FLAGS"
TRAIN_LOG="$OUT/train.log"
if [ -z "$BIN" ]; then
  end skip "no binaries"
elif [ "$GPU" = 0 ]; then
  echo "cuda run: skipped (no GPU)" >>"$TRAIN_LOG"
  end skip "no GPU: the CPU reference run alone (compared with itself below)"
else
  echo "==== speedrun train --device cuda" >>"$TRAIN_LOG"
  # A step that never ends (a kernel that hangs) ends the run after 60 s, naming the step,
  # well within the step's own time limit.
  # shellcheck disable=SC2086
  (cd "$WORK/cuda" && run "$TRAIN_LOG" "$(limit 120 150)" "$BIN/speedrun" train $TRAIN_FLAGS \
     --device cuda --stall-timeout 60 --out "$WORK/cuda/run")
  rc=$?
  grep -E '^step:' "$TRAIN_LOG" | tail -2 | sed 's/^/      /'
  r=$(status_of $rc)
  [ "$r" = pass ] || show_tail "$TRAIN_LOG" 20
  ms=$(grep -oE 'step_avg:[0-9.]+ms' "$TRAIN_LOG" | tail -1)
  end "$r" "cuda run: ${ms:-no steps}"
fi

begin compare "loss curves: $( [ "$GPU" = 1 ] && echo 'cuda bf16 vs cpu fp32' || echo 'cpu vs itself (plumbing only)')"
if [ -n "$CPU_PID" ]; then
  # Wait for it while the bench and the sanitizers keep 120 s.
  while kill -0 "$CPU_PID" 2>/dev/null && [ "$(left)" -gt 120 ]; do sleep 1; done
  kill -0 "$CPU_PID" 2>/dev/null && { say "   the CPU run is too slow: stopping it"; kill "$CPU_PID"; }
  wait "$CPU_PID"
  cpu_rc=$?
  CPU_PID=""
  { echo "==== speedrun train --device cpu --dtype fp32 (background)"; cat "$WORK/cpu.log"; } >>"$TRAIN_LOG"
  say "   cpu run: exit $cpu_rc after $(($(now) - CPU_T0))s; $(grep -oE 'step_avg:[0-9.]+ms' "$WORK/cpu.log" | tail -1)"
fi
A="$WORK/cuda/run/metrics.jsonl"
B="$WORK/cpu/run/metrics.jsonl"
[ "$GPU" = 0 ] && A=$B
if [ -z "$PY" ]; then
  end skip "no python3"
elif [ ! -s "$A" ] || [ ! -s "$B" ]; then
  end fail "missing metrics: $( [ -s "$A" ] || echo "$A ")$( [ -s "$B" ] || echo "$B")"
else
  label_a="cuda bf16"
  [ "$GPU" = 0 ] && label_a="cpu fp32 (no GPU)"
  $PY bench/cuda_check.py compare "$A" "$B" --json "$WORK/compare.json" --label-a "$label_a" \
    >"$WORK/compare.txt" 2>&1
  rc=$?
  cat "$WORK/compare.txt" >>"$TRAIN_LOG"
  sed 's/^/      /' "$WORK/compare.txt"
  first=$(head -1 "$WORK/compare.txt" | cut -c1-160)
  if [ "$GPU" = 0 ] && [ $rc = 0 ]; then
    end skip "no GPU: the comparison ran on the CPU curve against itself"
  elif [ "$GPU" = 0 ]; then
    end fail "no GPU, and the comparison of the CPU curve with itself failed"
  else
    end "$(status_of $rc)" "$first"
  fi
fi

# ---- bench -----------------------------------------------------------------------------
BENCH_LOG="$OUT/bench.log"
mode=${CUDA_CHECK_BENCH:-auto}
if [ -n "$BIN" ] && [ "$mode" = auto ]; then
  if timeout 30 "$BIN/speedrun" --help 2>/dev/null | grep -qE '^ +bench( |$)'; then mode=speedrun
  elif [ -x "$BIN/bench_cuda_step" ]; then mode=tool
  else mode=none; fi
fi
begin bench "the record step (1 x 65,536 tokens, windows 64 and 1792) by ${mode/tool/bench_cuda_step}"
if [ -z "$BIN" ] || [ "$mode" = none ]; then
  end skip "no benchmark binary"
else
  if [ "$GPU" = 1 ] && [ "$EMU" = 1 ]; then  # the GPU path at a size the emulator runs
    dev=(--device cuda --preset tiny --seq-len 256 --windows 64 --reps 1 --warmup 0)
    [ "$mode" = speedrun ] && extra=(--batch 1 --micro-batch 1 --gemm-size 256 --copy-mib 8) || extra=()
  elif [ "$GPU" = 1 ]; then
    dev=(--device cuda --preset record --windows "64,1792")
    [ "$mode" = speedrun ] && extra=(--batch 1 --micro-batch 1) || extra=(--reps 10 --warmup 2)
  else  # the same code path on the CPU, at a size that takes seconds
    dev=(--device cpu --threads "$CPU_THREADS" --preset tiny --seq-len 256 --windows 64 --reps 1 --warmup 0)
    [ "$mode" = speedrun ] && extra=(--batch 1 --micro-batch 1 --gemm-size 256 --copy-mib 8) || extra=()
  fi
  if [ "$mode" = speedrun ]; then cmd=("$BIN/speedrun" bench); else cmd=("$BIN/bench_cuda_step"); fi
  (cd "$WORK" && run "$BENCH_LOG" "$(limit 150 60)" "${cmd[@]}" "${dev[@]}" "${extra[@]}" --json "$WORK/bench.json")
  rc=$?
  if [ "$mode" = speedrun ] && [ ! -s "$WORK/bench.json" ] && [ $rc != 124 ] && [ $rc != 137 ] &&
     [ -x "$BIN/bench_cuda_step" ]; then
    say "   speedrun bench failed (exit $rc): bench_cuda_step instead"
    [ "$GPU" = 1 ] && extra=(--reps 10 --warmup 2) || extra=()
    (cd "$WORK" && run "$BENCH_LOG" "$(limit 150 60)" "$BIN/bench_cuda_step" "${dev[@]}" "${extra[@]}" \
       --json "$WORK/bench.json")
    rc=$?
  fi
  r=$(status_of $rc)
  if [ -s "$WORK/bench.json" ] && [ -n "$PY" ]; then
    $PY bench/cuda_check.py bench "$WORK/bench.json" >"$WORK/bench_table.md" 2>&1
    { echo; cat "$WORK/bench_table.md"; echo; echo "---- JSON"; cat "$WORK/bench.json"; } >>"$BENCH_LOG"
    sed 's/^/      /' "$WORK/bench_table.md"
  else
    show_tail "$BENCH_LOG" 20
  fi
  if [ "$GPU" = 0 ] && [ "$r" = pass ]; then
    end skip "no GPU: the same code ran on the CPU at tiny size"
  elif [ "$GPU" = 0 ]; then
    end "$r" "no GPU, and the CPU run of the same code failed (bench.log)"
  elif [ "$EMU" = 1 ]; then
    end "$r" "emulated: the GPU path ran at tiny size (its times are the emulator's, not a GPU's)"
  elif [ -s "$WORK/bench_table.md" ]; then
    met=$(sed -n 's/^\(targets met: [0-9]* of [0-9]*\).*/\1/p' "$WORK/bench_table.md")
    end "$r" "$(basename "${cmd[0]}")$( [ "$mode" = speedrun ] && echo ' bench'): the table below${met:+; $met}"
  else
    end "$r" "no results: see bench.log"
  fi
fi

# ---- variants of the bench ------------------------------------------------------------
# bench_variant STEP JSON TITLE CMD...: the bench again (one sequence per micro-batch) as
# CMD, compared with the bench step's by `cuda_check.py STEP` into $WORK/STEP.md. A
# measurement beside the check, not part of it: the budget's end skips it.
bench_variant() {
  local step=$1 json=$2 title=$3 r md="$WORK/$1.md"
  shift 3
  if [ "$GPU" = 0 ]; then
    end skip "no GPU"
    return
  elif [ "$mode" != speedrun ] || [ ! -s "$WORK/bench.json" ] || [ -z "$PY" ]; then
    end skip "needs the bench step's speedrun bench JSON and python3"
    return
  fi
  (cd "$WORK" && run "$BENCH_LOG" "$(limit 60 60)" "$@" --batch 1 --micro-batch 1 --json "$json")
  r=$(status_of $?)
  if [ "$r" = no-time ] || [ "$r" = timeout ]; then
    end skip "the budget ran out before it finished (bench.log)"
  elif [ -s "$json" ]; then
    $PY bench/cuda_check.py "$step" "$WORK/bench.json" "$json" ${py_args[@]+"${py_args[@]}"} \
      >"$md" 2>&1
    { echo; echo "---- $title"; cat "$md"; } >>"$BENCH_LOG"
    sed 's/^/      /' "$md"
    end "$r" "$(tail -n 1 "$md")"
  else
    show_tail "$BENCH_LOG" 10
    end "$r" "no results: see bench.log"
  fi
}
# The emulator runs each variant at the tiny preset's size: the code path, not a timing.
if [ "$EMU" = 1 ]; then
  vdev=(--device cuda --preset tiny --seq-len 256 --windows 64 --reps 1 --warmup 0 --gemm-size 256
        --copy-mib 8)
  adev=("${vdev[@]}")
  odev=("${vdev[@]}")
  head_logits=8192  # 16 rows of the tiny preset's 512-token vocabulary
else
  vdev=(--device cuda --preset record --windows 64 --reps 3 --warmup 1 --gemm-size 4096
        --copy-mib 256)
  adev=(--device cuda --preset record --windows 64,1792 --reps 3 --warmup 1 --gemm-size 4096
        --copy-mib 256)
  odev=(--device cuda --preset record --windows 1792 --reps 3 --warmup 1 --gemm-size 4096
        --copy-mib 256)
  head_logits=33554432  # the CPU's 2^25
fi

# The attention kernels run on mma.sync (every GPU of sm_80 or newer) unless
# SPEEDRUN_ATTENTION_FORWARD=wgmma and SPEEDRUN_ATTENTION_BACKWARD=wgmma pick Hopper's
# warpgroup products (forward_wgmma.cu, backward_wgmma.cu): the bench again with both, at
# both windows, shows which is faster here, op by op. The tests step has held them to the
# CPU oracle already (CudaAttention.WgmmaForwardMatchesTheCpuOracleAndTheMmaForward,
# CudaAttention.WgmmaBackwardMatchesTheCpuOracleAndTheMmaBackward).
py_args=()
begin attn-wgmma "the attention kernels by wgmma against mma.sync, windows 64 and 1792"
bench_variant attn "$WORK/bench_attn.json" "the attention kernels by wgmma" \
  env SPEEDRUN_ATTENTION_FORWARD=wgmma SPEEDRUN_ATTENTION_BACKWARD=wgmma "$BIN/speedrun" bench "${adev[@]}"

# The attention's CTAs start longest tile list first (a short tail); in (sequence, tile)
# order the CTAs running at once are neighbours whose windows read the same key/value tiles
# (L2 reuse). The order changes no result (CudaAttention.IsDeterministicAcrossCallsPlans-
# AndRunners); at window 1792 the bench's documents (lognormal lengths) give lists of every
# length, so the bench again with SPEEDRUN_ATTENTION_ORDER=tiles shows which wins here.
py_args=()
begin attn-order "the attention's work items in tile order against longest first, window 1792"
bench_variant order "$WORK/bench_order.json" "the attention's work items in tile order" \
  env SPEEDRUN_ATTENTION_ORDER=tiles "$BIN/speedrun" bench "${odev[@]}"

# The GPU's head chunks (2^28 logits) follow a count of memory traffic, not a timing: the
# same bench at window 64 with the CPU's 2^25 shows what the choice is worth.
py_args=()  # bench_variant's extra arguments to cuda_check.py
begin head "forward+backward at window 64 with 2^25-logit head chunks against the default's"
bench_variant head "$WORK/bench_head.json" "head chunk sizes" "$BIN/speedrun" bench "${vdev[@]}" \
  --head-logits "$head_logits"

# Every GEMM takes the heuristic's first algorithm; SPEEDRUN_GEMM_TUNE=8 times eight of its
# candidates on each problem's first call and keeps the fastest (src/backend/cuda/matmul.cu):
# the same bench with it shows what that is worth, and what the timing costs at start-up.
# The choices come back in $OUT/gemm_algos.tsv (the GEMM algorithm record, made afresh).
begin gemm-tune "forward+backward at window 64 and the optimizer with SPEEDRUN_GEMM_TUNE=8 against the heuristic's first"
rm -f "$OUT/gemm_algos.tsv"
py_args=(--record "$OUT/gemm_algos.tsv")  # which problems changed algorithm, by how much
bench_variant gemm "$WORK/bench_gemm.json" "cuBLASLt's algorithms timed" env SPEEDRUN_GEMM_TUNE=8 \
  SPEEDRUN_GEMM_ALGOS="$OUT/gemm_algos.tsv" "$BIN/speedrun" bench "${vdev[@]}"

# ---- compute-sanitizer -----------------------------------------------------------------
MICRO="--preset tiny --layers 2 --heads 2 --head-dim 64 --seq-len 256 --batch 2 --steps 2 --cooldown 1 --window-start 64 --window-end 128 --val-every 0 --val-tokens 2048 --seed 0 --no-sample"
SAN_LOG="$OUT/sanitizer.log"
for tool in memcheck racecheck; do
  begin "$tool" "compute-sanitizer --tool $tool on 2 training steps of a micro model"
  if [ "$GPU" = 0 ]; then
    end skip "no GPU"
    continue
  elif [ "$EMU" = 1 ]; then
    end skip "emulated: compute-sanitizer needs a GPU (the emulator checks barriers, collectives and shared-memory addresses itself)"
    continue
  elif [ -z "$SANITIZER" ]; then
    end skip "compute-sanitizer not found"
    continue
  elif [ -z "$BIN" ]; then
    end skip "no binaries"
    continue
  fi
  mkdir -p "$WORK/san_$tool"
  log="$WORK/san_$tool.log"
  echo "==== $tool: speedrun train (micro)" >>"$log"
  # shellcheck disable=SC2086
  reserve=5
  [ "$tool" = memcheck ] && reserve=45  # racecheck's share
  (cd "$WORK/san_$tool" && run "$log" "$(limit 90 "$reserve")" \
     "$SANITIZER" --tool "$tool" --error-exitcode 99 --print-limit 30 \
     "$BIN/speedrun" train $MICRO --device cuda --out "$WORK/san_$tool/run")
  rc=$?
  r=$(status_of $rc)
  summ=$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | sed 's/^=* *//')
  if [ -n "${CUDA_CHECK_SANITIZE_FILTER:-}" ]; then
    for t in "$BIN"/test_cuda*; do
      [ -x "$t" ] || continue
      echo "==== $tool: $(basename "$t") --gtest_filter=$CUDA_CHECK_SANITIZE_FILTER" >>"$log"
      (cd "$WORK" && run "$log" "$(limit 60 10)" "$SANITIZER" --tool "$tool" --error-exitcode 99 \
         --print-limit 30 "$t" --gtest_brief=1 "--gtest_filter=$CUDA_CHECK_SANITIZE_FILTER") || r=$(status_of $?)
    done
  fi
  cat "$log" >>"$SAN_LOG"
  [ "$r" = pass ] || show_tail "$log" 20
  end "$r" "${summ:-no summary line (see sanitizer.log)}"
done
# finish (the EXIT trap) prints the comparison, the bench table and the summary.
