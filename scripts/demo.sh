#!/usr/bin/env bash
# First README command: install, build, run `wsbridge --demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec ./build/wsbridge --demo "$@"
