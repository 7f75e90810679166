#!/usr/bin/env bash
# Bench-only dependencies (not needed to build or test wsbridge): the peers of bench/run.sh
# (Debian nginx-light + libnginx-mod-nchan; npm `ws`, pinned by bench/peers/package-lock.json,
# installed under bench/peers/node_modules), gnuplot for the plots, linux-perf and heaptrack
# (bench/heap_idle.py) for the profiles quoted in docs/benchmarks.md. Idempotent; run as root.
set -euo pipefail
PKGS=(nginx-light libnginx-mod-nchan gnuplot-nox nodejs npm python3-jwt python3-cryptography linux-perf heaptrack)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# the machine image may bring its own node/npm
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs/}"); missing=("${missing[@]/npm/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
dir="$(cd "$(dirname "$0")" && pwd)/peers"
if [ ! -f "$dir/node_modules/.wsb-stamp" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.wsb-stamp" ]; then
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$dir/node_modules/.wsb-stamp"
fi
