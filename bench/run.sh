#!/bin/sh
# bench/run.sh — `make bench`: builds what is needed and runs the patch benchmark, then the
# attach benchmark (bench/attach.py: the whole CLI's attach time and the longest pause).
#   bench/run.sh           full run (medians of 11 rounds x 20M calls, 200 upgrade pairs)
#   bench/run.sh --smoke   a short run used by CTest: proves it works, the numbers mean little
# BUILD_DIR overrides the build directory (default: build/ next to this script's parent).
# A sanitizer build (HOTPATCH_SANITIZE set in its cache) has no attach target: attach is not
# run under a sanitizer runtime, so there only the patch benchmark runs.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" >/dev/null
sanitize=$(sed -n 's/^HOTPATCH_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt")
targets="bench_patch hotpatch_cli hotpatch_preload"
[ -n "$sanitize" ] || targets="$targets attach_target"
# shellcheck disable=SC2086 # the target list is split on purpose
cmake --build "$build" -j2 --target $targets >/dev/null
"$build/bin/bench_patch" "$@"
if [ -n "$sanitize" ]; then
    echo "attach benchmark skipped: a $sanitize sanitizer build does not attach"
    exit 0
fi
if [ "${1:-}" = "--smoke" ]; then
    HOTPATCH_PRELOAD_LIBRARY="$build/lib/libhotpatch_preload.so" \
        /usr/bin/python3 "$root/bench/attach.py" "$build" 3
else
    HOTPATCH_PRELOAD_LIBRARY="$build/lib/libhotpatch_preload.so" \
        /usr/bin/python3 "$root/bench/attach.py" "$build" 21
fi
