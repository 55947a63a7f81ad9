#!/usr/bin/env bash
# make install works: headers, libraries and the CLI land under PREFIX, and a C and a C++
# program build against the installed copy alone and serve a working agent.
set -euo pipefail
BUILD=$1
PREFIX=$(mktemp -d)
trap 'rm -rf "$PREFIX"' EXIT
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in include/hotpatch.h include/hotpatch.hpp bin/hotpatch; do
  [ -e "$PREFIX/$f" ] || { echo "missing after install: $f"; exit 1; }
done
LIBDIR=$(dirname "$(find "$PREFIX" -name libhotpatch.so -print -quit)")
[ -e "$LIBDIR/libhotpatch.a" ] || { echo "missing after install: libhotpatch.a"; exit 1; }

cat >"$PREFIX/prog.c" <<'C'
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <unistd.h>
#include "hotpatch.h"
static int answer = 41;
int main(void) {
    hotpatch_register_variable("answer", &answer);
    if (hotpatch_start() != 0) return 1;
    for (int i = 0; i < 200 && __atomic_load_n(&answer, __ATOMIC_RELAXED) == 41; i++) usleep(10000);
    hotpatch_stop();
    printf("answer=%d\n", answer);
    return answer == 42 ? 0 : 1;
}
C
cat >"$PREFIX/prog.cc" <<'CC'
#include <string>
#include "hotpatch.hpp"
static std::string name = "x";
int main() { return hotpatch::RegisterVariable("name", &name) == 0 ? 0 : 1; }
CC
cc -std=c17 -Wall -Werror -I"$PREFIX/include" "$PREFIX/prog.c" -L"$LIBDIR" -lhotpatch -lpthread -ldl \
   -Wl,-rpath,"$LIBDIR" -o "$PREFIX/prog"
# The static archive needs no -lcapstone: the patch engine dlopens its decoder on first use.
cc -std=c17 -Wall -Werror -I"$PREFIX/include" "$PREFIX/prog.c" "$LIBDIR/libhotpatch.a" -lpthread -ldl \
   -o "$PREFIX/prog_static"
c++ -std=c++17 -Wall -Werror -I"$PREFIX/include" "$PREFIX/prog.cc" -L"$LIBDIR" -lhotpatch \
   -Wl,-rpath,"$LIBDIR" -o "$PREFIX/prog_cpp"
"$PREFIX/prog_cpp"
for prog in prog prog_static; do
  "$PREFIX/$prog" > "$PREFIX/out" &
  pid=$!
  for _ in $(seq 1 100); do "$PREFIX/bin/hotpatch" -p $pid var set answer 42 >/dev/null 2>&1 && break; sleep 0.02; done
  wait $pid
  grep -qx 'answer=42' "$PREFIX/out"
done
echo "install check passed: $PREFIX"
