#!/usr/bin/env bash
# The preload part of `make demo`: change the logging of a prebuilt program live.
#
# build/bin/prebuilt_server uses gflags and glog and contains no hotpatch code. It is started
# with LD_PRELOAD=build/lib/libhotpatch_preload.so, and its glog output (stderr) is shown
# changing as the operator turns minloglevel, v and vmodule. Then a plain C program (sleep)
# is preloaded to show that it answers "no gflags" and gains no C++ runtime.
# Every step checks its effect on the program's real output; the script exits non-zero if one
# does not do what it shows. Usage: scripts/demo_preload.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
export PATH="$BUILD/bin:$PATH"
HOTPATCH=hotpatch
PRELOAD="$BUILD/lib/libhotpatch_preload.so"
OUT=$(mktemp)
ERR=$(mktemp)
bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
[ -t 1 ] || { bold=; dim=; reset=; }

step() { printf '\n%s== %s%s\n' "$bold" "$*" "$reset"; }
run()  { printf '%s$' "$dim"; printf ' %q' "$@"; printf '%s\n' "$reset"; "$@" 2>&1; }
fail() { echo "demo failed: $*" >&2; exit 1; }

# The number of the last tick the program printed on stdout.
last_tick() { awk '/^tick [0-9]+$/ { t = $2 } END { print t + 0 }' "$OUT"; }

# Shows the glog lines of two ticks that began after the change just made, and checks that
# the kinds seen there are exactly those named (e.g. "ERROR" or "INFO WARNING ERROR VLOG1").
show_ticks() {
  local want=$1 first
  first=$(( $(last_tick) + 2 ))
  for _ in $(seq 1 100); do
    [ "$(last_tick)" -ge $(( first + 2 )) ] && break
    sleep 0.05
  done
  [ "$(last_tick)" -ge $(( first + 2 )) ] || fail "the program stopped ticking"
  local lines kinds
  lines=$(grep -E "tick ($first|$(( first + 1 ))) [A-Z0-9]+$" "$ERR" || true)
  printf '%s  program logs (ticks %d-%d):%s\n' "$dim" "$first" $(( first + 1 )) "$reset"
  printf '%s\n' "$lines" | sed "s/^/    /"
  kinds=$(printf '%s\n' "$lines" | awk 'NF { print $NF }' | sort -u | tr '\n' ' ')
  [ "$kinds" = "$(printf '%s\n' $want | sort -u | tr '\n' ' ')" ] ||
    fail "expected log kinds '$want', the program logged '$kinds'"
}

LD_PRELOAD="$PRELOAD" "$BUILD/bin/prebuilt_server" --interval_ms 300 >"$OUT" 2>"$ERR" &
PID=$!
SLEEPER=
cleanup() {
  kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true
  if [ -n "$SLEEPER" ]; then
    kill "$SLEEPER" 2>/dev/null || true; wait "$SLEEPER" 2>/dev/null || true
    rm -f "/tmp/$SLEEPER.socket"    # sleep dies by the signal: its socket stays behind
  fi
  rm -f "$OUT" "$ERR"
}
trap cleanup EXIT
for _ in $(seq 1 50); do echo version | nc -U "/tmp/$PID.socket" >/dev/null 2>&1 && break; sleep 0.1; done
[ -S "/tmp/$PID.socket" ] || fail "the preload agent's socket did not appear"

step "prebuilt_server (gflags + glog, no hotpatch code) runs under the preload agent, pid $PID"
printf '%s$ readelf -d prebuilt_server | grep NEEDED%s\n' "$dim" "$reset"
readelf -d "$BUILD/bin/prebuilt_server" | awk '/NEEDED/ { print "    " $NF }'
printf '%s$ LD_PRELOAD=%s prebuilt_server --interval_ms 300 &%s\n' "$dim" "$PRELOAD" "$reset"
show_ticks "INFO WARNING ERROR"

step "Its own gflags, read live"
run "$HOTPATCH" -p "$PID" gflags get minloglevel
"$HOTPATCH" -p "$PID" gflags list | grep -E '^(NAME|interval_ms|greeting|minloglevel|v) '

step "Quiet it down: only ERROR and above"
run "$HOTPATCH" -p "$PID" gflags set minloglevel 2
show_ticks "ERROR"

step "glog's own words, through nc"
printf '%s$ echo "glog set minloglevel WARNING" | nc -U /tmp/%s.socket%s\n' "$dim" "$PID" "$reset"
echo "glog set minloglevel WARNING" | nc -U "/tmp/$PID.socket"
show_ticks "WARNING ERROR"
run "$HOTPATCH" -p "$PID" glog set minloglevel INFO

step "More detail: VLOG(1) everywhere, VLOG(2) for one source file"
run "$HOTPATCH" -p "$PID" glog set v 1
show_ticks "INFO WARNING ERROR VLOG1"
run "$HOTPATCH" -p "$PID" glog vmodule prebuilt_server 2
show_ticks "INFO WARNING ERROR VLOG1 VLOG2"
run "$HOTPATCH" -p "$PID" glog get vmodule

step "Refusals name the reason and change nothing"
set +e
run "$HOTPATCH" -p "$PID" gflags set interval_ms 5;   rc1=$?
run "$HOTPATCH" -p "$PID" gflags set interval_ms fast; rc2=$?
run "$HOTPATCH" -p "$PID" glog set minloglevel LOUD;  rc3=$?
set -e
[ "$rc1$rc2$rc3" = "111" ] || fail "a bad value was not refused (exits $rc1 $rc2 $rc3)"
run "$HOTPATCH" -p "$PID" gflags get interval_ms
[ "$("$HOTPATCH" -p "$PID" gflags get interval_ms)" = 300 ] || fail "interval_ms changed"

step "A plain C program (sleep) under the same agent"
LD_PRELOAD="$PRELOAD" sleep 30 &
SLEEPER=$!
for _ in $(seq 1 50); do echo version | nc -U "/tmp/$SLEEPER.socket" >/dev/null 2>&1 && break; sleep 0.1; done
set +e
run "$HOTPATCH" -p "$SLEEPER" gflags list; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "sleep did not answer 'no gflags'"
printf '%s$ grep -cE "libstdc|gflags|glog" /proc/%s/maps%s\n' "$dim" "$SLEEPER" "$reset"
count=$(grep -cE 'libstdc|gflags|glog' "/proc/$SLEEPER/maps" || true)
echo "$count"
[ "$count" -eq 0 ] || fail "the C program gained C++ or gflags in its memory map"

step "Done: prebuilt_server's logging changed live, with no restart and no hotpatch code in it"
