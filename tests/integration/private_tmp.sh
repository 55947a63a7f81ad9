#!/bin/sh
# private_tmp.sh DIR... -- COMMAND...: runs COMMAND with an empty private /tmp, keeping each DIR
# that lies under /tmp (the source and build trees, when a checkout lives there) visible at its
# own path. For tests that list or prune everything in /tmp: run inside `unshare --mount`, so
# nothing here is seen outside.
set -e
keep=/run/hotpatch-private-tmp
mkdir -p "$keep"
mount --rbind /tmp "$keep"
mount -t tmpfs -o mode=1777 none /tmp
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    /tmp/*)
      rel=${1#/tmp/}
      mkdir -p "/tmp/$rel"
      mount --rbind "$keep/$rel" "/tmp/$rel"
      ;;
  esac
  shift
done
shift
exec "$@"
