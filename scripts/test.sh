#!/usr/bin/env bash
# Second README command: install, build, and run every test — unit (cmocka), integration
# (real binary, real clients, real brokers), the same again under ASan+UBSan, and every
# libFuzzer target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
jobs=$(nproc)
# Test slots: the integration files mostly wait (sockets, brokers, timers), so twice the cores
# run at once; a file's `# ctest:` line makes it serial or puts it under a lock (docs/testing.md).
slots=$((2 * jobs))
phase_start=$start
phase() { # prints how long the previous phase took, then the next phase's title
  local now
  now=$(date +%s)
  [ -n "${phase_name:-}" ] && echo "== ${phase_name}: $((now - phase_start))s"
  phase_start=$now
  phase_name=$1
  [ -n "$1" ] && echo "== $1"
  return 0
}

phase "setup"
bash scripts/setup.sh

phase "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"

phase "asan+ubsan build"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWSB_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"

phase "tsan build"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DWSB_TSAN=ON >/dev/null
cmake --build build-tsan -j"$jobs"

phase "fuzz build (clang, libFuzzer)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSB_FUZZ=ON \
  -DWSB_FUZZ_SECONDS="${WSB_FUZZ_SECONDS:-15}" >/dev/null
cmake --build build-fuzz -j"$jobs"

status=0
phase "format check (clang-format, .clang-format)"
if ! git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror; then
  echo "format check failed: run 'cmake --build build --target format'"
  status=1
fi
phase "tests: release"
(cd build && ctest --output-on-failure -j"$slots") || status=1
phase "tests: asan+ubsan"
(cd build-asan && WSB_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j"$slots") || status=1
# librdkafka 2.0.2 crashes under TSan (its threads start outside TSan's interceptors), so the
# TSan pass covers the unit tests, the integration tests that use the memory connector and the
# AMQP connector's (rabbitmq-c runs under TSan; amqps too), and TLS (certificate swap on reload).
phase "tests: tsan"
(cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --output-on-failure -j"$slots" -R 'unit\.|integration\.test_(40|41|54|55|61|80|82|83)_') || status=1
phase "fuzz targets"
(cd build-fuzz && ctest --output-on-failure -j"$jobs") || status=1

phase ""
echo "== done in $(( $(date +%s) - start ))s, status $status"
exit $status
