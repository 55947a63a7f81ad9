#!/usr/bin/env bash
# make demo: the main job end to end on a real running process.
#
# Starts build/bin/simple_server (it prints its variables and add_func(1, 2) every 500 ms),
# changes it live with the hotpatch CLI, nc and JSON, upgrades and rolls back add_func
# (scripts/demo_func.sh), applies and reverts a two-function patch file (scripts/
# demo_patch.sh), and shows the program's own output changing; then the preload agent
# (scripts/demo_preload.sh) and attach (scripts/demo_attach.sh). Exits non-zero if any step
# does not do what it shows.
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
export PATH="$BUILD/bin:$PATH"
HOTPATCH=hotpatch
LOG=$(mktemp)
bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
[ -t 1 ] || { bold=; dim=; reset=; }

step()  { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run()   { printf '%s$' "$dim"; printf ' %q' "$@"; printf '%s\n' "$reset"; "$@"; }
fail()  { echo "demo failed: $*" >&2; exit 1; }
# Waits until the program prints a line matching $1 (its output shows the change took effect).
await() {
  for _ in $(seq 1 50); do
    if line=$(grep -E "$1" "$LOG" | tail -n 1) && [ -n "$line" ]; then
      printf '%s  program prints: %s%s\n' "$dim" "$line" "$reset"; return 0
    fi
    sleep 0.1
  done
  fail "the program never printed a line matching: $1"
}

"$BUILD/bin/simple_server" --interval-ms 500 >"$LOG" 2>"$LOG.err" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG" "$LOG.err"; }
trap cleanup EXIT
for _ in $(seq 1 50); do [ -S "/tmp/$PID.socket" ] && break; sleep 0.1; done
[ -S "/tmp/$PID.socket" ] || fail "simple_server's agent socket did not appear"

step "simple_server is running as pid $PID; its agent listens on /tmp/$PID.socket"
await 'user_name=myname age=10'

step "List and read its variables"
run "$HOTPATCH" -p "$PID" var list
run "$HOTPATCH" -p "$PID" var get int age

step "Change them while it runs"
run "$HOTPATCH" -p "$PID" var set age 42
await 'age=42'
run "$HOTPATCH" -p "$PID" var set string user_name "hot patched"
await 'user_name=hot patched age=42'

step "The same through nc, and in JSON for scripts"
printf '%s$ echo "var get string user_name" | nc -U /tmp/%s.socket%s\n' "$dim" "$PID" "$reset"
echo "var get string user_name" | nc -U "/tmp/$PID.socket"
run "$HOTPATCH" -p "$PID" --json var get age

step "Bad input is refused with a reason, and changes nothing"
set +e
run "$HOTPATCH" -p "$PID" var set age 99999999999; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "an out-of-range value was not refused (exit $rc)"
run "$HOTPATCH" -p "$PID" var get age

step "Load a shared library into it, and unload it"
LIBM=$(ldconfig -p | awk '/libm\.so\.6 .*x86-64/ {print $NF; exit}')
run "$HOTPATCH" -p "$PID" lib load m "$LIBM"
run "$HOTPATCH" -p "$PID" lib list
run "$HOTPATCH" -p "$PID" lib unload m

# Function upgrade and rollback on the same running process.
"$(dirname "$0")/demo_func.sh" "$BUILD" "$PID" "$LOG"
# A patch file: two functions applied, listed and reverted together.
"$(dirname "$0")/demo_patch.sh" "$BUILD" "$PID" "$LOG"

step "Stop the program: the agent removes its socket"
kill -TERM "$PID"; wait "$PID" || true
[ ! -e "/tmp/$PID.socket" ] || fail "the socket was left behind"
echo "socket /tmp/$PID.socket removed"

# A prebuilt gflags + glog program that contains no hotpatch code, under the preload agent.
"$(dirname "$0")/demo_preload.sh" "$BUILD"
# Attach: the agent for processes started with nothing.
"$(dirname "$0")/demo_attach.sh" "$BUILD"
echo
echo "${bold}demo complete${reset}"
