#!/usr/bin/env bash
# Downloads the speedrun record's data: FineWeb-10B tokenized with GPT-2, as the record's
# data/cached_fineweb10B.py fetches it from the Hugging Face dataset kjj0/fineweb10B-gpt2:
# fineweb_val_000000.bin and fineweb_train_000001.bin .. fineweb_train_N.bin, into
# data/fineweb10B/ (or $FINEWEB_DIR). Each file is a shard in SPEC.md's format
# (~100M GPT-2 tokens, ~200 MB).
#
# Usage: scripts/fineweb.sh [N]     N train shards; default 103 (all of FineWeb-10B).
#        scripts/fineweb.sh 8       the first 800M tokens, as the record's README suggests
#
# Resumable: a file is downloaded to NAME.part (continued with HTTP ranges if interrupted),
# checked with `speedrun shards info` (header magic and version, size = 1024 + 2 x tokens,
# every id < 50257), and only then renamed to NAME; files already present are checked and
# skipped. Needs curl (or wget) and the speedrun binary ($SPEEDRUN, else build/speedrun,
# else speedrun on PATH). Set HF_TOKEN to send a Hugging Face token.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-103}"
[[ "$n" =~ ^[0-9]+$ ]] || { echo "fineweb: N must be a number of train shards, got '$n'" >&2; exit 1; }
dest="${FINEWEB_DIR:-data/fineweb10B}"
base="${FINEWEB_URL:-https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main}"

speedrun="${SPEEDRUN:-}"
if [ -z "$speedrun" ]; then
  if [ -x build/speedrun ]; then speedrun=build/speedrun
  elif command -v speedrun >/dev/null; then speedrun="$(command -v speedrun)"
  else
    echo "fineweb: no speedrun binary to check the shards with: run scripts/build.sh" \
         "or set SPEEDRUN=/path/to/speedrun" >&2
    exit 1
  fi
fi

auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(--header "Authorization: Bearer $HF_TOKEN")

fetch() {  # fetch URL FILE: download or continue FILE
  if command -v curl >/dev/null; then
    curl --location --fail --retry 5 --retry-delay 2 --continue-at - "${auth[@]}" \
         --output "$2" "$1"
  elif command -v wget >/dev/null; then
    wget --continue --tries=5 "${auth[@]}" --output-document="$2" "$1"
  else
    echo "fineweb: needs curl or wget (apt-get install curl)" >&2
    return 1
  fi
}

check() {  # check FILE: a valid GPT-2 shard
  "$speedrun" shards info --vocab 50257 "$1" >/dev/null
}

get() {
  local name="$1" file="$dest/$1"
  if [ -f "$file" ]; then
    if check "$file"; then echo "fineweb: $name present"; return 0; fi
    echo "fineweb: $file is damaged; downloading it again" >&2
    mv "$file" "$file.part"
  fi
  echo "fineweb: downloading $name"
  if ! fetch "$base/$name" "$file.part"; then
    # A .part that is already complete makes the server refuse the range: check it.
    check "$file.part" 2>/dev/null || {
      echo "fineweb: downloading $base/$name failed; run the script again to continue" >&2
      return 1
    }
  fi
  if ! check "$file.part"; then
    echo "fineweb: $file.part is not a valid shard (see the error above); removed it," \
         "run the script again" >&2
    rm -f "$file.part"
    return 1
  fi
  mv "$file.part" "$file"
}

mkdir -p "$dest"
get "$(printf 'fineweb_val_%06d.bin' 0)"
for ((i = 1; i <= n; i++)); do
  get "$(printf 'fineweb_train_%06d.bin' "$i")"
done
"$speedrun" shards info --eot 50256 "$dest/fineweb_*.bin" | tail -1
echo "fineweb: done. Train the record with:"
echo "  build/speedrun train --preset record --train '$dest/fineweb_train_*.bin'" \
     "--val '$dest/fineweb_val_*.bin'"
