#!/usr/bin/env bash
# The benchmark suite (issue 14): wsbridge, a Node.js `ws` broadcast server and nginx + nchan
# under the same load generator, interleaved, median of 3. Loopback only. Needs the release
# build (build/wsbridge, build/wsb-load) and bench/setup.sh (nginx-light, nchan, gnuplot, npm
# ws). Results: docs/bench/ (results.json, results.md, *.dat, *.png; WSB_BENCH_OUT elsewhere); see
# docs/benchmarks.md. Extra arguments go to bench/suite.py (--reps, --seconds, --only S1,S4,
# --servers wsbridge,node, --idle N).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${WSB_BENCH_OUT:-$here/../docs/bench}"
mkdir -p "$out"
# 10,000 connections per side plus the server's own files
ulimit -n "$(ulimit -Hn)"
/usr/bin/python3 "$here/suite.py" --out "$out" "$@"
if command -v gnuplot >/dev/null 2>&1; then
  for dat in "$out"/S*.dat; do
    [ -f "$dat" ] || continue
    name="$(basename "$dat" .dat)"
    metric="$(head -1 "$dat" | sed 's/.*(\(.*\))/\1/')"
    gnuplot <<GP
set terminal pngcairo size 720,400 noenhanced
set output "$out/$name.png"
set title "$name: $metric (median of runs, bars: min-max)"
set style data histograms
set style histogram errorbars gap 2 lw 1
set style fill solid 0.6 border -1
set boxwidth 0.8
set yrange [0:*]
set xtics rotate by -20
set grid ytics
unset key
plot "$dat" using 2:3:4:xtic(1) lc rgb "#3b6ea8"
GP
  done
fi
echo "bench: results in ${out#"$here/../"}"
