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
bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
[ -t 1 ] || { bold=; dim=; reset=; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run()  { printf '%s$' "$dim"; printf ' %q' "$@"; printf '%s\n' "$reset"; "$@"; }
fail() { echo "demo_patch failed: $*" >&2; exit 1; }

if [ $# -ge 3 ]; then
  PID=$2; LOG=$3
else
  LOG=$(mktemp)
  "$BUILD/bin/simple_server" --interval-ms 300 >"$LOG" 2>"$LOG.err" &
  PID=$!
  trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -f "$LOG" "$LOG.err"' EXIT
  for _ in $(seq 1 50); do [ -S "/tmp/$PID.socket" ] && break; sleep 0.1; done
  [ -S "/tmp/$PID.socket" ] || fail "simple_server's agent socket did not appear"
fi
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
