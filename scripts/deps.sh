#!/usr/bin/env bash
# Checks that the Debian packages hotpatch needs to build, test and demo are installed.
# As root it installs what is missing (apt-get); otherwise it prints the command to run.
# The list is the one place that names them: .ci/run calls this script too.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang
  libclang-rt-14-dev       # libFuzzer and sanitizer runtimes for clang (make fuzz)
  libcmocka-dev            # C unit tests
  python3 python3-pytest python3-venv python3-setuptools python3-wheel python3-pip # integration tests, Python client
  netcat-openbsd socat     # tests and demo drive the socket with nc -U
  libgflags-dev libgoogle-glog-dev # gflags/glog support and the prebuilt_server example
  libelf-dev               # ELF symbol tables for function patching
  libcapstone-dev          # x86-64 decoder: no branch may land inside a patched jump
  rocksdb-tools            # db_bench: a third-party prebuilt program using Debian's gflags
  util-linux               # setpriv for the other-user tests; unshare for the container tests
  ansible-core             # the example playbook (examples/ansible) is run against localhost
  scdoc                    # renders the man pages (docs/man/)
  groff-base man-db        # the man page tests render with groff; man and lexgrog read them
  debhelper dh-python lintian # make deb: build the Debian packages and check them
)

# Two unprivileged users for the tests that attack the agent as another local user
# (tests/integration/test_security.py). Created only as root; elsewhere those tests say what
# to run.
ensure_test_users() {
  [ "$(id -u)" -eq 0 ] || return 0
  for u in hotpatch-t1 hotpatch-t2; do
    id -u "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
  done
}
ensure_test_users

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Installing missing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "Missing packages: ${missing[*]}" >&2
  echo "Install them with:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
