#!/usr/bin/env bash
# make fuzz: builds the libFuzzer target with clang, ASan and UBSan in build-fuzz/ and runs it
# for $1 seconds (default 60) from the seed corpus of every documented command. New inputs go
# to build-fuzz/corpus (the committed seeds are never modified). Exits non-zero on any crash,
# leak, sanitizer report or timeout, leaving the reproducer in build-fuzz/.
set -euo pipefail
SECONDS_TO_RUN=${1:-60}
cd "$(dirname "$0")/.."
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DHOTPATCH_FUZZ=ON -DHOTPATCH_SANITIZE=address -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target fuzz_request -j "$(nproc)" >/dev/null
mkdir -p build-fuzz/corpus
cd build-fuzz
echo "fuzzing the request path for ${SECONDS_TO_RUN}s (ASan+UBSan)"
rc=0
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ./bin/fuzz_request -max_total_time="$SECONDS_TO_RUN" -max_len=4200 -timeout=5 \
  -dict=../tests/fuzz/request.dict -print_final_stats=1 corpus ../tests/fuzz/corpus \
  >fuzz.log 2>&1 || rc=$?
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|ERROR|SUMMARY" fuzz.log || true
if [ "$rc" -ne 0 ]; then
  echo "fuzzing found a problem (exit $rc): see build-fuzz/fuzz.log"
  exit 1
fi
echo "fuzzing clean"
