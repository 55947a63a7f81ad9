#!/usr/bin/env bash
# deb_smoke.sh BUILD — installs the packages `make deb` left in BUILD/deb with apt-get, checks
# that the installed files work with nothing from the build tree but two plain programs, and
# purges them again. Root only (CI runs it after the test suite; it changes the machine).
#
#   hotpatch          the CLI answers, `man hotpatch` and the protocol page are there, the
#                     completion is installed, nothing carries an rpath
#   libhotpatch0/-dev the consumer projects (tests/consumers/run.sh) build against /usr through
#                     find_package and pkg-config, run against the agent, and the installed
#                     preload agent answers gflags commands in BUILD's prebuilt_server
#   python3-hotpatch  python3 -m hotpatch, from dist-packages, talks to an agent
# After the purge no file of the packages may remain.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PACKAGES=(libhotpatch0 libhotpatch-dev hotpatch python3-hotpatch)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
fail() { echo "deb smoke test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root: it installs and purges packages"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

debs=()
for p in "${PACKAGES[@]}"; do
  debs+=("$(ls "$BUILD"/deb/"${p}"_*.deb)") || fail "no package $p in $BUILD/deb (make deb)"
done
echo "== apt-get install ${debs[*]##*/}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null

echo "== the CLI, its man pages and completion"
[ "$(command -v hotpatch)" = /usr/bin/hotpatch ] || fail "hotpatch is $(command -v hotpatch)"
[[ $(env -i /usr/bin/hotpatch --version) == "hotpatch $(dpkg-query -W -f='${Version}' hotpatch) "* ]] \
  || fail "hotpatch --version: $(/usr/bin/hotpatch --version)"
MANPAGER=cat MANWIDTH=80 man hotpatch 2>/dev/null | grep -q 'func upgrade LIB FUNC \[SYMBOL\]' \
  || fail "man hotpatch"
MANPAGER=cat man 7 hotpatch-protocol 2>/dev/null | grep -q 'SO_PEERCRED' || fail "man 7 hotpatch-protocol"
MANPAGER=cat man 3 libhotpatch 2>/dev/null | grep -q 'hotpatch_register_string' || fail "man 3 libhotpatch"
[ -f /usr/share/bash-completion/completions/hotpatch ] || fail "no bash completion"
elves=0
for f in $(dpkg -L "${PACKAGES[@]}"); do
  [ -f "$f" ] && [[ $(head -c 4 "$f" | od -An -c | tr -d ' ') == 177ELF ]] || continue
  elves=$((elves + 1))
  ! readelf -d "$f" | grep -qE 'RPATH|RUNPATH' || fail "$f has an rpath"
done
[ $elves -ge 4 ] || fail "only $elves ELF files in the packages"   # CLI, library, agent, adapter

echo "== libhotpatch through /usr: find_package, pkg-config, the preload agent"
HOTPATCH_PREFIX=/usr "$HERE/../consumers/run.sh" find_package "$BUILD"
HOTPATCH_PREFIX=/usr "$HERE/../consumers/run.sh" pkg_config "$BUILD"
[ -f "/usr/lib/$MULTIARCH/hotpatch/libhotpatch_preload.so" ] || fail "no preload agent in the private directory"

echo "== the Python client from dist-packages"
LD_PRELOAD=/usr/lib/$MULTIARCH/hotpatch/libhotpatch_preload.so "$BUILD/bin/prebuilt_server" \
  --interval_ms 100 >/dev/null 2>&1 &
pid=$!
cd /
where=$(env -u PYTHONPATH /usr/bin/python3 -c 'import hotpatch; print(hotpatch.__file__)')
[ "$where" = /usr/lib/python3/dist-packages/hotpatch/__init__.py ] || fail "python3 imports $where"
value=
for _ in $(seq 1 500); do
  value=$(env -u PYTHONPATH /usr/bin/python3 -m hotpatch -p $pid gflags get interval_ms 2>/dev/null) || true
  [ "$value" = 100 ] && break   # until main has parsed the command line
  sleep 0.02
done
[ "$value" = 100 ] || fail "python3 -m hotpatch gflags get: '$value'"
kill $pid
echo "ok: python3 -m hotpatch -p $pid gflags get interval_ms = $value"

echo "== apt-get purge"
files=$(dpkg -L "${PACKAGES[@]}" | sort -u)
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${PACKAGES[@]}" >/dev/null
for p in "${PACKAGES[@]}"; do
  ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed || fail "$p is still installed"
done
left=()
while read -r f; do
  [ -f "$f" ] || [ -L "$f" ] && left+=("$f")
done <<<"$files"
[ ! -e /usr/lib/python3/dist-packages/hotpatch ] || left+=(/usr/lib/python3/dist-packages/hotpatch)
[ ${#left[@]} -eq 0 ] || fail "left after the purge: ${left[*]}"
echo "deb smoke test passed"
