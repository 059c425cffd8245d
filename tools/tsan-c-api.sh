#!/usr/bin/env bash
# The C API under ThreadSanitizer: builds the library with `swift build --sanitize=thread` (in
# .build-tsan), compiles Tests/c/api_test.c with clang's -fsanitize=thread against it, and runs
# 8 threads x RUNS forwards on one model (a session per thread). Fails on any ThreadSanitizer report.
#   tools/tsan-c-api.sh [RUNS]     (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-100}"
scratch="$PWD/.build-tsan"
swift build --sanitize=thread --product swiftjit-c --scratch-path "$scratch"
swift_lib="$(dirname "$(dirname "$(command -v swift)")")/lib/swift/linux"
clang="$(dirname "$(command -v swift)")/clang"
program="$scratch/api_test_tsan"
"$clang" -std=c99 -g -fsanitize=thread -I include Tests/c/api_test.c "$scratch/debug/libswiftjit-c.so" \
  -L "$swift_lib" -ldispatch -lBlocksRuntime -Wl,-rpath,"$swift_lib" -Wl,-rpath,"$scratch/debug" -lpthread -o "$program"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1" "$program" Examples/lenet/lenet.prototxt 8 "$runs" >"$log" 2>&1 || status=$?
reports=$(grep -c "WARNING: ThreadSanitizer" "$log" || true)
tail -n 1 "$log"
if [ "$status" -ne 0 ] || [ "$reports" -ne 0 ]; then
  cat "$log"
  echo "ThreadSanitizer: $reports report(s), exit $status"
  exit 1
fi
echo "ThreadSanitizer: 0 reports over 8 threads x $runs runs"
