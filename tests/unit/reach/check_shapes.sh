#!/bin/sh
# check_shapes.sh OUT_DIR — the test objects have the shapes the branch-proof tests rely on,
# read with objdump (an independent decoder): retry.cold ends by jumping to retry+N with N
# inside the jump's bytes (0 < N < 5, or 4 < N < 9 after an endbr64), and twice is shorter than
# the jump and followed by padding. Run by CTest (reach_shapes) before unit_branch_proof.
set -e
out=$1
fail() { echo "shape check failed: $*"; exit 1; }
for variant in O2 O3 cet; do
  lib="$out/libhp_hotcold_$variant.so"
  jump=$(objdump -d --no-show-raw-insn "$lib" | sed -n '/<retry.cold>:/,/^$/p' |
         grep -Eo 'jmp +[0-9a-f]+ <retry\+0x[0-9a-f]+>' | head -1)
  [ -n "$jump" ] || fail "$lib: retry.cold has no jmp back into retry"
  n=$(printf '%d' "$(echo "$jump" | sed -E 's/.*<retry\+(0x[0-9a-f]+)>/\1/')")
  skip=0
  objdump -d "$lib" | sed -n '/<retry>:/,/^$/p' | grep -q endbr64 && skip=4
  [ "$n" -gt "$skip" ] && [ "$n" -lt $((skip + 5)) ] ||
    fail "$lib: retry.cold jumps to retry+$n, not inside the jump's bytes (skip $skip)"
  echo "$lib: retry.cold: $jump (inside the 5 bytes after +$skip)"
done
objdump -d "$out/libhp_tiny.so" | sed -n '/<twice>:/,/^$/p' | grep -q 'nop' ||
  fail "libhp_tiny.so: twice is not followed by padding"
size=$(readelf -sW "$out/libhp_tiny.so" | awk '$8 == "twice" {print $3; exit}')
[ "$size" -lt 9 ] || fail "libhp_tiny.so: twice is $size bytes, not shorter than endbr64 + jump"
echo "libhp_tiny.so: twice is $size bytes, then padding"
