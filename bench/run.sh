#!/bin/sh
# bench/run.sh — `make bench`: builds what is needed and runs the patch benchmark, then the
# attach benchmark (bench/attach.py: the whole CLI's attach time and the longest pause).
#   bench/run.sh           full run (medians of 11 rounds x 20M calls, 200 upgrade pairs)
#   bench/run.sh --smoke   a short run used by CTest: proves it works, the numbers mean little
# BUILD_DIR overrides the build directory (default: build/ next to this script's parent).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
if [ ! -x "$build/bin/bench_patch" ] || [ ! -x "$build/bin/attach_target" ]; then
    cmake -S "$root" -B "$build" >/dev/null
    cmake --build "$build" -j2 --target bench_patch hotpatch_cli hotpatch_preload attach_target \
        >/dev/null
fi
"$build/bin/bench_patch" "$@"
if [ "${1:-}" = "--smoke" ]; then
    HOTPATCH_PRELOAD_LIBRARY="$build/lib/libhotpatch_preload.so" \
        /usr/bin/python3 "$root/bench/attach.py" "$build" 3
else
    HOTPATCH_PRELOAD_LIBRARY="$build/lib/libhotpatch_preload.so" \
        /usr/bin/python3 "$root/bench/attach.py" "$build" 21
fi
