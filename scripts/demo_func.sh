#!/usr/bin/env bash
# demo_func.sh — the function upgrade part of `make demo`, on a running simple_server:
# load two patch libraries, upgrade add_func, stack a second version, roll back twice, see
# each result in the program's own output, and unload (refused while installed, then done).
#
#   scripts/demo_func.sh [BUILD_DIR [PID LOGFILE]]
# With PID and LOGFILE (the program's stdout), it works on that running simple_server;
# otherwise it starts its own. Exits non-zero if any step does not do what it shows.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
export PATH="$BUILD/bin:$PATH"
HOTPATCH=hotpatch
DEMO_NAME=demo_func
# shellcheck source=scripts/demo_lib.sh
. "$(dirname "$0")/demo_lib.sh"
demo_target "${@:2}"

# Waits until a line printed from now on shows add_func(1, 2)=$1.
await_result() {
  local from; from=$(wc -l <"$LOG")
  for _ in $(seq 1 50); do
    if line=$(tail -n +"$((from + 1))" "$LOG" | grep -E "add_func\(1, 2\)=$1\$" | tail -n 1) &&
       [ -n "$line" ]; then
      printf '%s  program prints: %s%s\n' "$dim" "$line" "$reset"; return 0
    fi
    sleep 0.1
  done
  fail "the program never printed add_func(1, 2)=$1"
}
refused() { if "$@"; then fail "expected a refusal: $*"; fi; }

step "simple_server (pid $PID) computes add_func(1, 2) = 1 + 2"
await_result 3
step "Load two patch libraries: patch1 returns a*b+100, patch2 a*b+200"
run "$HOTPATCH" -p "$PID" lib load p1 "$BUILD/lib/libadd_func_patch1.so"
run "$HOTPATCH" -p "$PID" lib load p2 "$BUILD/lib/libadd_func_patch2.so"
step "Upgrade add_func to patch1 while the program runs it"
run "$HOTPATCH" -p "$PID" func upgrade p1 add_func
await_result 102
step "Stack patch2 on top"
run "$HOTPATCH" -p "$PID" func upgrade p2 add_func
await_result 202
run "$HOTPATCH" -p "$PID" func list
step "A library with an installed version cannot be unloaded"
refused run "$HOTPATCH" -p "$PID" lib unload p2
step "Roll back one version: patch1 again"
run "$HOTPATCH" -p "$PID" func rollback add_func
await_result 102
step "Roll back again: the original code, byte for byte"
run "$HOTPATCH" -p "$PID" func rollback add_func
await_result 3
step "Nothing of the libraries runs any more: unload them"
run "$HOTPATCH" -p "$PID" lib unload p2
run "$HOTPATCH" -p "$PID" lib unload p1
await_result 3
printf '\n%sfunction upgrade demo: done%s\n' "$bold" "$reset"
