#!/bin/sh
# build_shapes.sh GCC OBJCOPY SRC_DIR OUT_DIR — builds the branch-proof test objects with gcc
# itself (the shapes under test are gcc's, whatever compiler builds the project):
#   libhp_hotcold_O2.so, _O3.so, _cet.so   gcc's hot/cold split of a retry loop (hotcold.c)
#   libhp_hotcold_O2_stripped.so           the -O2 one without .symtab (a linear sweep's case)
#   libhp_asm_shapes.so, _stripped.so      entries into a function's first bytes (asm_shapes.c)
#   libhp_tiny.so                          functions shorter than the jump (tiny.c, -O2 CET)
set -e
gcc=$1 objcopy=$2 src=$3 out=$4
mkdir -p "$out"
build() { # name flags... sources...
  name=$1; shift
  "$gcc" -shared -fPIC -o "$out/$name" "$@"
}
build libhp_hotcold_O2.so -O2 "$src/hotcold.c" "$src/hotcold_helpers.c"
build libhp_hotcold_O3.so -O3 "$src/hotcold.c" "$src/hotcold_helpers.c"
build libhp_hotcold_cet.so -O2 -fcf-protection=full "$src/hotcold.c" "$src/hotcold_helpers.c"
"$objcopy" --strip-all "$out/libhp_hotcold_O2.so" "$out/libhp_hotcold_O2_stripped.so"
build libhp_asm_shapes.so -O2 "$src/asm_shapes.c"
"$objcopy" --strip-all "$out/libhp_asm_shapes.so" "$out/libhp_asm_shapes_stripped.so"
build libhp_tiny.so -O2 -fcf-protection=full "$src/tiny.c"
