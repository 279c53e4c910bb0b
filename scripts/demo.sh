#!/usr/bin/env bash
# The main job on its built-in default: installs what is missing, builds, and trains the
# `tiny` preset on CPU for about two minutes (loss falling, window growing, final val
# loss, a sample). Extra arguments go to `speedrun train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh speedrun
exec build/speedrun train "$@"
