#!/bin/sh
# bench/idle_rss.sh — what the preload agent costs an idle program (issue 11: under 512 KiB
# until the first patch needs the decoder).
#
# Runs coreutils' `sleep` with and without build/lib/libhotpatch_preload.so and reads
# /proc/PID/smaps_rollup after the agent is up: private memory (Private_Clean + Private_Dirty:
# private anonymous plus private file pages) and Rss, median of 5 runs each. Then patches one
# function (libc's llabs -> libm's fabs) to show what loading the decoder adds.
# BUILD_DIR overrides the build directory.
set -eu
after_file=$(mktemp)
trap 'rm -f "$after_file"' EXIT
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
preload=$build/lib/libhotpatch_preload.so
runs=5

field() { # pid -> "private rss" in KiB
  awk '/^Private_(Clean|Dirty):/ {p += $2} /^Rss:/ {r = $2} END {print p, r}' "/proc/$1/smaps_rollup"
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

measure() { # with_agent(0|1) -> "private rss" medians
  out=$(mktemp)
  for i in $(seq $runs); do
    sock=$(mktemp -u /tmp/hp_idle.XXXXXX)
    if [ "$1" = 1 ]; then
      HOTPATCH_SOCKET=$sock HOTPATCH_AUDIT=off LD_PRELOAD=$preload sleep 30 2>/dev/null &
      pid=$!
      for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.02; done
    else
      sleep 30 &
      pid=$!
    fi
    sleep 0.5
    field $pid >>"$out"
    if [ "$1" = 1 ] && [ "$i" = 1 ]; then
      "$build/bin/hotpatch" -s "$sock" lib load m /lib/x86_64-linux-gnu/libm.so.6 >/dev/null
      "$build/bin/hotpatch" -s "$sock" func upgrade m libc.so.6:llabs fabs >/dev/null
      field $pid >"$after_file"
    fi
    kill $pid; wait $pid 2>/dev/null || true
    rm -f "$sock"
  done
  echo "$(cut -d' ' -f1 "$out" | median) $(cut -d' ' -f2 "$out" | median)"
  rm -f "$out"
}

set -- $(measure 0); base_p=$1 base_r=$2
set -- $(measure 1); agent_p=$1 agent_r=$2
echo "sleep, private (Private_Clean+Private_Dirty) and Rss, median of $runs runs, KiB:"
printf '  %-28s private %6d  rss %6d\n' "without the agent" "$base_p" "$base_r"
printf '  %-28s private %6d  rss %6d\n' "with the agent, idle" "$agent_p" "$agent_r"
printf '  %-28s private %6d  rss %6d\n' "agent's idle cost" $((agent_p - base_p)) $((agent_r - base_r))
set -- $(cat "$after_file")
printf '  %-28s private %6d  rss %6d   (decoder loaded)\n' "after the first patch" "$1" "$2"
