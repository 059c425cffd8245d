#!/usr/bin/env bash
# The Swift test suite under a sanitizer: builds everything (tests included) with
# `swift build --sanitize=KIND` in .build-sanitize-KIND and runs `swift test` there.
#   tools/sanitize.sh address|thread [swift test flags, e.g. --filter TrainerTests]
# Fails on any test failure or sanitizer report (ASan stops the process at its first report;
# TSan is told to, too). Runs and their results are recorded in Tests/Fuzz/README.md (Sanitizers).
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-}"
case "$kind" in address|thread) ;; *) sed -n 2,6p "$0"; exit 2 ;; esac
shift
scratch="$PWD/.build-sanitize-$kind"
SWIFTJIT_CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/swiftjit-sanitize-kernels.XXXXXX")"
export SWIFTJIT_CACHE_DIR
trap 'rm -rf "$SWIFTJIT_CACHE_DIR"' EXIT
# Leak checking stays off: LLVM and OpenBLAS keep process-lifetime allocations by design.
# Options already set win (e.g. TSAN_OPTIONS=halt_on_error=0 to list every report in one run;
# the process still exits non-zero at the end when there was one).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:allocator_may_return_null=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
swift build --build-tests --sanitize="$kind" --scratch-path "$scratch"
swift test --skip-build --sanitize="$kind" --scratch-path "$scratch" "$@"
