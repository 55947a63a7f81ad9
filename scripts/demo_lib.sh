# demo_lib.sh — what the parts of `make demo` that work on a running simple_server share
# (sourced by scripts/demo_func.sh and scripts/demo_patch.sh): how a step and a command are
# shown, how a failed check ends the demo, and the program they work on.
#
# The caller sets BUILD (the build directory) and DEMO_NAME (for the failure message).

bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
[ -t 1 ] || { bold=; dim=; reset=; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run()  { printf '%s$' "$dim"; printf ' %q' "$@"; printf '%s\n' "$reset"; "$@"; }
fail() { echo "$DEMO_NAME failed: $*" >&2; exit 1; }

# Sets PID and LOG: from "PID LOGFILE" when given (demo.sh's running simple_server), else a
# simple_server of its own, stopped and cleaned up when the script exits.
demo_target() {
  if [ $# -ge 2 ]; then
    PID=$1; LOG=$2
    return
  fi
  LOG=$(mktemp)
  "$BUILD/bin/simple_server" --interval-ms 300 >"$LOG" 2>"$LOG.err" &
  PID=$!
  trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -f "$LOG" "$LOG.err"' EXIT
  for _ in $(seq 1 50); do [ -S "/tmp/$PID.socket" ] && break; sleep 0.1; done
  [ -S "/tmp/$PID.socket" ] || fail "simple_server's agent socket did not appear"
}
