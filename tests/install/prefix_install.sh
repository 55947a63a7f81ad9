#!/bin/sh
# prefix_install.sh BUILD — `make install` into a fresh BUILD/test-prefix, with the examples
# component too (installed programs that link libhotpatch). The CTest fixture the consumer and
# prefix tests share.
set -eu
PREFIX=$1/test-prefix
rm -rf "$PREFIX"
cmake --install "$1" --prefix "$PREFIX" >/dev/null
cmake --install "$1" --prefix "$PREFIX" --component examples >/dev/null
echo "installed into $PREFIX"
