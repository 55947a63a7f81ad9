#!/usr/bin/env bash
# run.sh WAY BUILD — builds the consumer project of WAY (find_package, pkg_config or
# subdirectory) the way a user of hotpatch would, and runs each of its programs against a real
# agent: the program registers variables and starts the agent, the CLI sets them, and the
# program exits 0 only if it saw the change. Then the preload agent that WAY reports is put into
# a program that has gflags (BUILD's prebuilt_server) and must answer there.
#
# find_package and pkg_config use the install prefix BUILD/test-prefix (the CTest fixture
# prefix_install makes it), or $HOTPATCH_PREFIX (/usr for the installed Debian packages), and
# its CLI; subdirectory builds hotpatch from this source tree as part of the consumer and uses
# the CLI built there.
set -euo pipefail
WAY=$1
BUILD=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SOURCE=$(cd "$HERE/../.." && pwd)
PREFIX=${HOTPATCH_PREFIX:-$BUILD/test-prefix}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
fail() { echo "consumer $WAY: $*" >&2; exit 1; }

build_consumer() {
  case $WAY in
  find_package)
    cmake -S "$HERE/find_package" -B "$WORK" -DCMAKE_PREFIX_PATH="$PREFIX" >"$WORK.log" 2>&1 \
      && cmake --build "$WORK" -j2 >>"$WORK.log" 2>&1 || { cat "$WORK.log"; fail "build failed"; }
    CLI=$PREFIX/bin/hotpatch ;;
  pkg_config)
    pc=$(find "$PREFIX/lib" -maxdepth 3 -name hotpatch.pc -print -quit)
    [ -n "$pc" ] || fail "no hotpatch.pc under $PREFIX/lib"
    export PKG_CONFIG_PATH=${pc%/*}
    make -C "$HERE/pkg_config" OUT="$WORK" >"$WORK.log" 2>&1 || { cat "$WORK.log"; fail "build failed"; }
    CLI=$PREFIX/bin/hotpatch ;;
  subdirectory)
    cmake -S "$HERE/subdirectory" -B "$WORK" -DHOTPATCH_SOURCE_DIR="$SOURCE" >"$WORK.log" 2>&1 \
      && cmake --build "$WORK" -j2 >>"$WORK.log" 2>&1 || { cat "$WORK.log"; fail "build failed"; }
    grep -q 'warning: unused variable' "$WORK.log" || fail "the parent's warning was not shown"
    ;;
  *) fail "unknown way (find_package, pkg_config, subdirectory)" ;;
  esac
  # shellcheck disable=SC1091
  source "$WORK/consumer.env"
  CLI=${CLI:-}
}

# Runs program $1, sets each NAME=VALUE of the rest through the CLI, and checks its exit status.
drive() {
  local program=$1
  shift
  "$program" >"$WORK/out" 2>"$WORK/err" &
  local pid=$! set ok
  for set in "$@"; do
    ok=
    for _ in $(seq 1 500); do
      "$CLI" -p $pid var set "${set%%=*}" "${set#*=}" >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.02
    done
    [ -n "$ok" ] || fail "$(basename "$program"): the agent did not take ${set}: $(cat "$WORK/err")"
  done
  wait $pid || fail "$(basename "$program") exited $?: $(cat "$WORK/out" "$WORK/err")"
  local version
  version=$(sed -n 's/^version //p' "$WORK/out")
  [ -z "${VERSION:-}" ] || [ "$version" = "$VERSION" ] \
    || fail "$(basename "$program") was compiled against $version, the build system said $VERSION"
  echo "ok: $(basename "$program") ($(tail -n 1 "$WORK/out"))"
}

# The patch file the project built with hotpatch_add_patch, for its own program: applied with the
# CLI, it must make the program see the new answer_of(); its embedded build-id must be the
# program's.
check_patch() {
  local want have
  want=$(readelf -n "$PATCH_TARGET" | sed -n 's/.*Build ID: //p')
  have=$(strings -a "$PATCH_FILE" | grep -x "$want" || true)
  [ -n "$want" ] && [ "$have" = "$want" ] || fail "the patch does not carry the build-id $want"
  "$PATCH_TARGET" >"$WORK/out" 2>"$WORK/err" &
  local pid=$! ok=
  for _ in $(seq 1 500); do
    "$CLI" -p $pid patch apply "$PATCH_FILE" >/dev/null 2>"$WORK/apply" && { ok=1; break; }
    sleep 0.02
  done
  [ -n "$ok" ] || fail "patch apply failed: $(cat "$WORK/apply")"
  wait $pid || fail "patch_target exited $?: $(cat "$WORK/out" "$WORK/err")"
  echo "ok: patch file built by hotpatch_add_patch ($(cat "$WORK/out"))"
}

# The preload agent named by the build system, in a gflags program without hotpatch code.
check_preload() {
  [ -f "$PRELOAD" ] || fail "no preload agent at '$PRELOAD'"
  LD_PRELOAD=$PRELOAD "$BUILD/bin/prebuilt_server" --interval_ms 100 >/dev/null 2>&1 &
  local pid=$! value=
  for _ in $(seq 1 500); do
    value=$("$CLI" -p $pid gflags get interval_ms 2>/dev/null) || true
    [ "$value" = 100 ] && break   # until main has parsed the command line
    sleep 0.02
  done
  kill $pid
  [ "$value" = 100 ] || fail "the preload agent $PRELOAD did not answer gflags get (got '$value')"
  echo "ok: preload agent $PRELOAD"
}

# A program linking the shared library finds the gflags adapter (LIBDIR/hotpatch/).
check_gflags_adapter() {
  "$GFLAGS_PROGRAM" >/dev/null 2>&1 &
  local pid=$! value=
  for _ in $(seq 1 500); do
    value=$("$CLI" -p $pid gflags get consumer_flag 2>&1) && break
    sleep 0.02
  done
  kill $pid
  [ "$value" = 5 ] || fail "libhotpatch.so did not find its gflags adapter: $value"
  echo "ok: libhotpatch.so found its gflags adapter"
}

build_consumer
drive "$C_PROGRAM" answer=42
drive "$CXX_STATIC_PROGRAM" name=set level=7 port=65000
[ -z "${CXX_PROGRAM:-}" ] || drive "$CXX_PROGRAM" name=set level=7 port=65000
[ -z "${GFLAGS_PROGRAM:-}" ] || check_gflags_adapter
[ -z "${PATCH_TARGET:-}" ] || check_patch
check_preload
echo "consumer $WAY passed"
