#!/usr/bin/env bash
# demo_patch.sh — the patch-file part of `make demo`, on a running simple_server: check and
# apply build/lib/simple_server_fix.so (examples/simple_server_fix.c: add_func and shown_age
# together, built by hotpatch_add_patch with simple_server's build-id), show `patch list`, and
# revert it; each step is checked in the program's own output.
#
#   scripts/demo_patch.sh [BUILD_DIR [PID LOGFILE]]
# With PID and LOGFILE (the program's stdout), it works on that running simple_server;
# otherwise it starts its own. Exits non-zero if any step does not do what it shows.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
export PATH="$BUILD/bin:$PATH"
HOTPATCH=hotpatch
PATCH=$BUILD/lib/simple_server_fix.so
DEMO_NAME=demo_patch
# shellcheck source=scripts/demo_lib.sh
. "$(dirname "$0")/demo_lib.sh"
demo_target "${@:2}"
[ -f "$PATCH" ] || fail "no $PATCH (build first: make)"

# Waits until a line printed from now on ends with "age=$1 add_func(1, 2)=$2".
await_line() {
  local from; from=$(wc -l <"$LOG")
  for _ in $(seq 1 50); do
    if line=$(tail -n +"$((from + 1))" "$LOG" | grep -E "age=$1 add_func\(1, 2\)=$2\$" | tail -n 1) &&
       [ -n "$line" ]; then
      printf '%s  program prints: %s%s\n' "$dim" "$line" "$reset"; return 0
    fi
    sleep 0.1
  done
  fail "the program never printed age=$1 add_func(1, 2)=$2"
}

AGE=$("$HOTPATCH" -p "$PID" var get int age)
step "A patch file replaces two functions of simple_server (pid $PID) at once"
await_line "$AGE" 3
run "$HOTPATCH" -p "$PID" patch apply --check "$PATCH"
run "$HOTPATCH" -p "$PID" patch apply "$PATCH"
await_line "$((AGE * 12))" 103
run "$HOTPATCH" -p "$PID" patch list
step "Revert it: both functions go back together"
run "$HOTPATCH" -p "$PID" patch revert demo-fix
await_line "$AGE" 3
