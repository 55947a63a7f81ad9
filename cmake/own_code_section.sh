#!/bin/sh
# own_code_section.sh — compiler launcher for hotpatch's own sources: compiles, then moves the
# object's code into the section `hotpatch_text`.
#
# The patch engine must refuse to patch hotpatch itself (a jump written into the code that
# stops threads or writes code would wedge every later patch). In libhotpatch.so and the
# preload agent that code is a whole object, but a program linked with libhotpatch.a carries it
# inside its own executable, mixed with the program's code. Renaming the code sections here
# makes the final linker gather all of hotpatch's code into one output section, whose bounds it
# publishes as __start_hotpatch_text and __stop_hotpatch_text, in a shared object and in an
# executable alike. Only the name changes: flags, contents and relocations stay as compiled.
# (The code that runs while other threads are stopped has a section of its own,
# hotpatch_stopped, chosen in the source; it is left as it is.)
set -e
"$@"
out=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
  esac
  shift
done
case "$out" in
  *.o|*.obj) ;;
  *) exit 0 ;;     # not a compile to an object (a dependency scan, a preprocess)
esac
${HOTPATCH_OBJCOPY:-objcopy} \
  --rename-section .text=hotpatch_text \
  --rename-section .text.unlikely=hotpatch_text \
  --rename-section .text.hot=hotpatch_text \
  --rename-section .text.startup=hotpatch_text \
  --rename-section .text.exit=hotpatch_text \
  "$out"
