#!/bin/sh
# bench/run.sh — `make bench`: builds what is needed and runs the patch benchmark.
#   bench/run.sh           full run (medians of 11 rounds x 20M calls, 200 upgrade pairs)
#   bench/run.sh --smoke   a short run used by CTest: proves it works, the numbers mean little
# BUILD_DIR overrides the build directory (default: build/ next to this script's parent).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
if [ ! -x "$build/bin/bench_patch" ]; then
    cmake -S "$root" -B "$build" >/dev/null
    cmake --build "$build" -j2 --target bench_patch >/dev/null
fi
exec "$build/bin/bench_patch" "$@"
