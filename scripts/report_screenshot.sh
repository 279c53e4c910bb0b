#!/usr/bin/env bash
# Renders `speedrun report` in headless Chromium and saves a screenshot: checks that the
# page draws in a real browser (self-contained HTML + SVG, no script) and makes the
# picture in the README (docs/report.png).
#
#   scripts/report_screenshot.sh [-o OUT.png] [RUN_DIR ...]
#   scripts/report_screenshot.sh --sweep [-o OUT.png] [--title TITLE] [--loss-max L] [SWEEP_DIR]
#
# Without RUN_DIR it first trains two small runs on the default corpus, the paper's main
# ablation at toy scale: attention-window warmup (the record) against a fixed window,
# into runs/report_demo/ (about 3 minutes each on 2 cores; reused when already there).
# --sweep renders a sweep's report instead (one band per variant under the summary table,
# docs/report_sweep.png); without SWEEP_DIR it first runs the sweep of
# docs/sweep_example.json (the same two variants, 3 seeds each, into runs/sweep_example/:
# 5 to 10 minutes on 2 cores; finished runs are kept and skipped). --title and --loss-max
# are passed to `speedrun report` (--loss-max zooms the loss charts on the end of the runs).
# The screenshot is as tall as the page's tables need, so every chart is in it.
# Needs Debian's chromium (apt-get install chromium). SPEEDRUN_BIN overrides the binary
# (default: build/speedrun).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
sweep=0
if [ "${1:-}" = "--sweep" ]; then
  sweep=1
  shift
fi
out="$root/docs/report.png"
[ $sweep -eq 1 ] && out="$root/docs/report_sweep.png"
title=""
report_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$(realpath -m "$2")"; shift 2 ;;
    --title) title="$2"; shift 2 ;;
    --loss-max) report_opts+=(--loss-max "$2"); shift 2 ;;
    *) break ;;
  esac
done
bin="${SPEEDRUN_BIN:-$root/build/speedrun}"
[ -x "$bin" ] || { echo "report_screenshot: no speedrun binary at $bin: build it (cmake --build build) or set SPEEDRUN_BIN" >&2; exit 1; }
chrome="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$chrome" ] || { echo "report_screenshot: chromium not found: apt-get install chromium" >&2; exit 1; }

runs=("$@")
given_title="$title"
title="speedrun: window warmup vs fixed window (tiny preset)"
if [ $sweep -eq 1 ]; then
  if [ ${#runs[@]} -eq 0 ]; then
    echo "report_screenshot: running the sweep of docs/sweep_example.json (runs/sweep_example)"
    (cd "$root" && "$bin" sweep docs/sweep_example.json | grep -vE '^sweep: runs ')
    runs=("$root/runs/sweep_example")
    title="speedrun sweep: window warmup vs fixed window, 3 seeds each (tiny preset, 150 steps)"
  else
    title="speedrun sweep $(basename "$(realpath "${runs[0]}")")"
  fi
elif [ ${#runs[@]} -eq 0 ]; then
  demo="$root/runs/report_demo"
  common=(--preset tiny --steps 200 --cooldown 70 --val-every 25 --no-sample)
  for name in window_warmup fixed_window; do
    if [ ! -s "$demo/$name/metrics.jsonl" ] || ! grep -q '"step":200,"val_loss"' "$demo/$name/metrics.jsonl"; then
      extra=()
      [ "$name" = fixed_window ] && extra=(--window-schedule fixed)
      echo "report_screenshot: training $name (runs/report_demo/$name)"
      (cd "$root" && "$bin" train "${common[@]}" "${extra[@]}" --out "$demo/$name" | grep -E '^(step:[0-9]+/[0-9]+ val|data:|model:)' )
    fi
    runs+=("$demo/$name")
  done
fi

[ -n "$given_title" ] && title="$given_title"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" report "${runs[@]}" --title "$title" ${report_opts[@]+"${report_opts[@]}"} -o "$tmp/report.html"
# The window holds the tables (about 22 px a row) above the charts: 1110 px for two runs,
# 1370 for a sweep of 2 variants x 3 seeds (10 rows with the summary's), more per row.
rows=$(grep -o '<tr>' "$tmp/report.html" | wc -l)
if [ $sweep -eq 1 ]; then
  size=1180,$((1370 + 22 * (rows > 10 ? rows - 10 : 0)))
else
  size=1180,$((1110 + 22 * (rows > 3 ? rows - 3 : 0)))
fi

# Headless, no network, no profile left behind; the page has no script, so it is complete
# as soon as it is parsed.
"$chrome" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$tmp/profile" --window-size="$size" \
  --screenshot="$tmp/shot.png" "file://$tmp/report.html" >"$tmp/chromium.log" 2>&1 || {
  cat "$tmp/chromium.log" >&2
  echo "report_screenshot: chromium failed" >&2
  exit 1
}
[ -s "$tmp/shot.png" ] || { cat "$tmp/chromium.log" >&2; echo "report_screenshot: no screenshot written" >&2; exit 1; }
# The DOM Chromium built must hold every chart: 5 SVGs, a val_loss path per run (for a
# sweep: the summary table, and a mean line and a band per variant).
"$chrome" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run \
  --user-data-dir="$tmp/profile2" --dump-dom "file://$tmp/report.html" >"$tmp/dom.html" 2>/dev/null
svgs=$(grep -o '<svg' "$tmp/dom.html" | wc -l)
if [ $sweep -eq 1 ]; then
  lines=$(grep -o 'data-series="val_loss" d=' "$tmp/dom.html" | wc -l)
  bands=$(grep -o 'data-series="val_loss" data-band="min-max"' "$tmp/dom.html" | wc -l)
  tables=$(grep -o '<table class="summary">' "$tmp/dom.html" | wc -l)
  if [ "$svgs" -ne 5 ] || [ "$bands" -lt 1 ] || [ "$bands" -ne "$lines" ] || [ "$tables" -ne 1 ]; then
    echo "report_screenshot: chromium's DOM has $svgs charts, $lines val_loss lines, $bands val_loss bands, $tables summary tables; expected 5, one line and one band per variant, 1" >&2
    exit 1
  fi
  what="$bands variants as bands"
else
  vals=$(grep -o 'data-series="val_loss"' "$tmp/dom.html" | wc -l)
  if [ "$svgs" -ne 5 ] || [ "$vals" -ne ${#runs[@]} ]; then
    echo "report_screenshot: chromium's DOM has $svgs charts and $vals val_loss paths; expected 5 and ${#runs[@]}" >&2
    exit 1
  fi
  what="${#runs[@]} runs"
fi
mkdir -p "$(dirname "$out")"
cp "$tmp/shot.png" "$out"
echo "report_screenshot: $out ($(stat -c %s "$out") bytes; $svgs charts, $what, rendered by $("$chrome" --version 2>/dev/null | head -1))"
