#!/usr/bin/env bash
# What bench/cuda_check.sh does with the numbers and files a GPU machine gives it, checked
# here (a ctest): the bench table's verdicts on made-up runs (cuda_check.py selftest), and a
# carried folder whose binaries travel xz-packed (scripts/build_portable.sh packs the
# library) unpacked and run, by xz and, on a PATH without xz, by Python's lzma.
#
#   bash bench/cuda_check_selftest.sh BIN_DIR     # BIN_DIR holds a built speedrun
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
python3 bench/cuda_check.py selftest

work=$(mktemp -d /tmp/cuda_check_selftest.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/carried"
cp "$BIN/speedrun" "$work/carried/"
xz -T1 -1 "$work/carried/speedrun"  # speedrun.xz alone: it must be unpacked to start
# A PATH holding every tool but xz's family, for the Python path.
mkdir "$work/path"
for d in /usr/local/bin /usr/bin /bin; do
  for f in "$d"/*; do
    n=$(basename "$f")
    case "$n" in xz|unxz|xzcat|xzdec|lzma|unlzma|lzmadec|lzcat) continue ;; esac
    [ -e "$work/path/$n" ] || ln -s "$f" "$work/path/$n"
  done
done
for how in xz python; do
  path=$PATH
  [ "$how" = python ] && path=$work/path
  PATH=$path OUT="$work/out_$how" bash bench/cuda_check.sh --dry-run --build "$work/carried" \
    >"$work/log_$how" 2>&1 || { cat "$work/log_$how"; echo "FAIL: the dry run ($how) failed"; exit 1; }
  if ! grep -q '^| build | pass | .*unpacked from' "$work/out_$how/summary.md"; then
    cat "$work/out_$how/summary.md"
    echo "FAIL: the packed folder was not unpacked and used ($how)"
    exit 1
  fi
  echo "unpacked and ran ($how): ok"
done
[ -f "$work/carried/speedrun.xz" ] && [ ! -e "$work/carried/speedrun" ] ||
  { echo "FAIL: the carried folder was changed"; exit 1; }
echo "PASS"
