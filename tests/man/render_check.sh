#!/bin/sh
# render_check.sh GROFF PAGE... — every man page renders without a single troff warning.
#
# groff -ww turns on every warning; -z throws the output away; -k runs preconv (the pages are
# UTF-8, as man-db reads them); -t runs tbl; -rLL=78n is the line length man uses on an
# 80-column terminal, where a word too long for its column would make troff "can't break line".
# A warning is printed, not returned as a status, so any output on stderr fails the page.
# lexgrog (man-db) must also find the NAME line that whatis and apropos show.
set -u
groff=$1
shift
status=0
for page in "$@"; do
  warnings=$("$groff" -k -t -man -ww -z -Tutf8 -rLL=78n "$page" 2>&1) || status=1
  if [ -n "$warnings" ]; then
    printf '%s: troff warnings:\n%s\n' "$page" "$warnings"
    status=1
  fi
  if command -v lexgrog >/dev/null && ! lexgrog "$page" >/dev/null; then
    echo "$page: lexgrog finds no whatis entry (NAME section)"
    status=1
  fi
  [ -s "$page" ] || { echo "$page: empty"; status=1; }
done
[ $# -gt 0 ] || { echo "no pages given"; status=1; }
[ $status -eq 0 ] && echo "rendered cleanly: $*"
exit $status
