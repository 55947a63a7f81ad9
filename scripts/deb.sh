#!/usr/bin/env bash
# make deb: builds the Debian packages (libhotpatch0, libhotpatch-dev, hotpatch,
# python3-hotpatch) with debhelper into OUT (default build/deb), then runs lintian on them.
#
# The build runs in a copy of the tree under OUT, so debhelper's files (debian/tmp,
# debian/.debhelper, obj-*/) never land in the sources and the .debs are not written next to
# the checkout (dpkg-buildpackage puts them in the parent directory). The copy holds what git
# knows plus new files not ignored (or everything but build directories outside git).
# lintian must report no error; warnings and notes are shown. No -dbgsym packages: the four
# packages are what users install. Exit status non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/deb}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
version=$(dpkg-parsechangelog -S Version)
src=$OUT/hotpatch-$version
rm -rf "$src" "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo
mkdir -p "$src"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -xf - -C "$src"
else
  tar -cf - --exclude='./build*' --exclude=./.git . | tar -xf - -C "$src"
fi

echo "Building the Debian packages in $src (log: $OUT/build.log)"
(cd "$src" && DEB_BUILD_OPTIONS="nocheck noautodbgsym parallel=$(nproc)" dpkg-buildpackage -b -us -uc) \
  >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; echo "dpkg-buildpackage failed"; exit 1; }
rm -rf "$src"

changes=$(ls "$OUT"/hotpatch_"${version}"_*.changes)
echo "lintian $(basename "$changes")"
lintian --fail-on error --display-info "$changes" | tee "$OUT/lintian.log"
ls -1 "$OUT"/*.deb
