#!/usr/bin/env bash
# The attach part of `make demo`: a process started with nothing gets the agent.
#
# Starts `sleep 600` and build/bin/prebuilt_server (gflags + glog, no hotpatch code) plainly,
# attaches the agent to each (hotpatch -p PID attach), uses it, detaches, attaches again, and
# shows a refusal (a process under strace). Every step checks what it shows; the script exits
# non-zero if one does not. Usage: scripts/demo_attach.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
export PATH="$BUILD/bin:$PATH"
export HOTPATCH_PRELOAD_LIBRARY="$BUILD/lib/libhotpatch_preload.so"
bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
[ -t 1 ] || { bold=; dim=; reset=; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run()  { printf '%s$' "$dim"; printf ' %q' "$@"; printf '%s\n' "$reset"; "$@" 2>&1; }
fail() { echo "demo failed: $*" >&2; exit 1; }

ERR=$(mktemp)
sleep 600 2>/dev/null & SLEEPER=$!
prebuilt_server --interval_ms 200 >/dev/null 2>"$ERR" & SERVER=$!
TRACER=
cleanup() {
  for p in $TRACER $SLEEPER $SERVER; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -f "$ERR"
}
trap cleanup EXIT
sleep 0.3

step "A process started with nothing: sleep 600 (pid $SLEEPER). Attach the agent to it"
run hotpatch -p "$SLEEPER" attach || fail "attach to sleep failed"
run hotpatch -p "$SLEEPER" status
step "Attaching again says so (exit 1)"
set +e; run hotpatch -p "$SLEEPER" attach; rc=$?; set -e
[ "$rc" -eq 1 ] || fail "a second attach was not refused (exit $rc)"
step "Detach: the socket goes, the library stays; attach restarts the same agent"
run hotpatch -p "$SLEEPER" detach
[ ! -e "/tmp/$SLEEPER.socket" ] || fail "detach left the socket"
run hotpatch -p "$SLEEPER" attach | grep -q "restarted the agent" || fail "no restart"
echo "  restarted; copies of the agent mapped: $(grep -c 'r-xp.*libhotpatch_preload' /proc/$SLEEPER/maps)"

step "A prebuilt gflags/glog server started plainly (pid $SERVER): attach, then change a flag"
run hotpatch -p "$SERVER" attach || fail "attach to prebuilt_server failed"
run hotpatch -p "$SERVER" gflags set greeting "attached hello"
for _ in $(seq 1 50); do grep -q "attached hello tick" "$ERR" && break; sleep 0.1; done
line=$(grep "attached hello tick" "$ERR" | tail -n 1) || fail "the new greeting never showed"
printf '%s  program logs: %s%s\n' "$dim" "$line" "$reset"

if command -v strace >/dev/null; then
  step "A process under a debugger is refused, naming the tracer"
  strace -q -o /dev/null -p "$SLEEPER" & TRACER=$!
  for _ in $(seq 1 50); do grep -q "TracerPid:.[1-9]" /proc/$SLEEPER/status && break; sleep 0.05; done
  run hotpatch -p "$SLEEPER" detach >/dev/null
  set +e; run hotpatch -p "$SLEEPER" attach; rc=$?; set -e
  [ "$rc" -eq 1 ] || fail "attach under strace was not refused (exit $rc)"
fi
