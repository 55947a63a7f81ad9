#!/usr/bin/env bash
# prefix_check.sh BUILD — what `make install PREFIX=...` leaves in BUILD/test-prefix works from
# there, with no environment pointing at it: the CLI, `man hotpatch` and the other pages, the
# bash completion (with a live agent), the pkg-config file's prefix, and an installed program
# that links libhotpatch.so and finds it through its rpath ($ORIGIN/../lib).
set -euo pipefail
BUILD=$(cd "$1" && pwd)
PREFIX=$BUILD/test-prefix
fail() { echo "prefix check: $*" >&2; exit 1; }
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

for f in bin/hotpatch include/hotpatch.h include/hotpatch.hpp include/hotpatch_patch.h \
         lib/cmake/hotpatch/hotpatch_add_patch.cmake lib/cmake/hotpatch/hotpatch_build_id.cmake \
         share/man/man1/hotpatch.1 share/man/man3/libhotpatch.3 share/man/man7/hotpatch-protocol.7 \
         share/bash-completion/completions/hotpatch \
         lib/hotpatch/libhotpatch_preload.so lib/hotpatch/libhotpatch_gflags.so \
         lib/libhotpatch.so.0 lib/libhotpatch.a lib/pkgconfig/hotpatch.pc \
         lib/cmake/hotpatch/hotpatchConfig.cmake lib/cmake/hotpatch/hotpatchConfigVersion.cmake; do
  [ -e "$PREFIX/$f" ] || fail "missing after install: $f"
done
# Nothing without a soname in the loader's directory.
[ ! -e "$PREFIX/lib/libhotpatch_preload.so" ] || fail "the preload agent is in lib/, not lib/hotpatch/"

version=$(env -i "$PREFIX/bin/hotpatch" --version)
[[ $version == "hotpatch $(sed -n 's/^#define HOTPATCH_VERSION "\(.*\)"/\1/p' "$PREFIX/include/hotpatch.h") "* ]] \
  || fail "the CLI says '$version'"

# man finds and renders the pages from the prefix's share/man.
export MANPATH=$PREFIX/share/man MANPAGER=cat MANWIDTH=80
[ "$(man -w hotpatch)" = "$PREFIX/share/man/man1/hotpatch.1" ] || fail "man -w hotpatch: $(man -w hotpatch)"
man 1 hotpatch 2>/dev/null | grep -q 'var set \[TYPE\] NAME VALUE' || fail "man hotpatch lacks var set"
man 3 libhotpatch 2>/dev/null | grep -q 'int hotpatch_start(void);' || fail "man 3 libhotpatch lacks hotpatch_start"
man 7 hotpatch-protocol 2>/dev/null | grep -q 'SO_PEERCRED' || fail "man 7 hotpatch-protocol is not the protocol"

pc_prefix=$(PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig pkg-config --variable=prefix hotpatch)
[ "$pc_prefix" = "$PREFIX" ] || fail "hotpatch.pc names prefix $pc_prefix"

# The installed example links libhotpatch.so.0 and finds it through its rpath alone.
readelf -d "$PREFIX/bin/simple_server" | grep -q 'RUNPATH.*\[\$ORIGIN/\.\./lib\]' \
  || fail "simple_server has no \$ORIGIN/../lib runpath"
env -i "$PREFIX/bin/simple_server" --interval-ms 50 >"$PREFIX/server.out" 2>&1 &
pid=$!
for _ in $(seq 1 500); do
  env -i "$PREFIX/bin/hotpatch" -p $pid var set age 42 >/dev/null 2>&1 && break
  sleep 0.02
done
loaded=$(ldd "$PREFIX/bin/simple_server" | sed -n 's/.*libhotpatch\.so\.0 => \(\S*\).*/\1/p')
[ "$(realpath "$loaded")" = "$(realpath "$PREFIX/lib/libhotpatch.so.0")" ] \
  || fail "simple_server loads libhotpatch from '$loaded'"
for _ in $(seq 1 100); do grep -q 'age=42' "$PREFIX/server.out" && break; sleep 0.02; done
grep -q 'age=42' "$PREFIX/server.out" || fail "the installed program was not changed: $(tail -3 "$PREFIX/server.out")"

# The installed completion, with the installed CLI, knows the live program's variables.
names=$(bash --norc --noprofile -c '
  source "$1/share/bash-completion/completions/hotpatch"
  COMP_WORDS=("$1/bin/hotpatch" -p "$2" var get ""); COMP_CWORD=5
  _hotpatch; echo "${COMPREPLY[*]}"' sh "$PREFIX" $pid)
[[ " $names " == *" user_name "* && " $names " == *" timeout_ms "* ]] \
  || fail "the installed completion offered: $names"
kill $pid
echo "prefix check passed: $PREFIX"
