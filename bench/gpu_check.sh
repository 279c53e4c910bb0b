#!/usr/bin/env bash
# The GPU anchor in one call: environment, then bench/gpu_anchor.py (the reference PyTorch
# model at the record config: bf16, FlexAttention, torch.compile) under a hard timeout
# (GPU_CHECK_BUDGET_S, default 370 s, plus 25), after a torch probe of at most 60 s, so the
# whole script ends in about 7 minutes; logs and JSON go to $OUT (default ./out); the last
# thing printed is one markdown table.
#   bash bench/gpu_check.sh                       # on the GPU machine
#   PYTHON=/usr/bin/python3 bash bench/gpu_check.sh --smoke   # CPU plumbing check
# Extra arguments go to gpu_anchor.py.
set -u
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-./out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-370}"   # gpu_anchor's own deadline (watchdog)
HARD_S=$((BUDGET_S + 25))               # then `timeout` kills it regardless
LOG="$OUT/gpu_check.log"
: >"$LOG"

{
  echo "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used,memory.total --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  timeout 60 "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" \
    || echo "torch: import failed"
  echo "== gpu_anchor.py (budget ${BUDGET_S}s, hard limit ${HARD_S}s)"
} 2>&1 | tee -a "$LOG"

PYTHONUNBUFFERED=1 timeout -k 5 "$HARD_S" "$PY" bench/gpu_anchor.py --out "$OUT" \
  --budget-s "$BUDGET_S" --no-table "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}

{
  echo "== gpu_anchor.py exit status $rc (124/137: killed by timeout)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw,memory.used --format=csv
  fi
  echo
} 2>&1 | tee -a "$LOG"

if [ -f "$OUT/gpu_anchor.json" ]; then
  "$PY" bench/gpu_anchor.py --table "$OUT/gpu_anchor.json" 2>&1 | tee -a "$LOG"
else
  echo "| gpu_check | no $OUT/gpu_anchor.json: see $LOG |" | tee -a "$LOG"
fi
exit "$rc"
