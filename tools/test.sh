#!/usr/bin/env bash
# The whole test suite: Swift tests (front end, graph, numerics against ../shared/golden), then
# the release binary against other runtimes and the C API from C programs.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -d ../shared/golden ] || { echo "error: ../shared/golden is missing: clone the repo next to shared/ (see README)"; exit 1; }
# Anything that runs swiftjit uses a kernel cache of this run's own, never the user's.
SWIFTJIT_CACHE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/swiftjit-test-kernels.XXXXXX")"
export SWIFTJIT_CACHE_DIR
trap 'rm -rf "$SWIFTJIT_CACHE_DIR"' EXIT
swift build --build-tests
# Every kernel signature seen twice is checked to name the same code (KernelCache.verifiesSignatures).
# FuzzReplayTests runs every seed and every past crash of Tests/Fuzz through the readers.
SWIFTJIT_VERIFY_KERNEL_SIGNATURES=1 swift test --skip-build
# Every reader under libFuzzer + AddressSanitizer: its seeds and past findings, then 10 s of
# mutation each (SWIFTJIT_FUZZ_SECONDS overrides; long runs: tools/fuzz.sh HARNESS SECONDS, see
# Tests/Fuzz/README.md). The instrumented build links the readers only: ~4 min, runs ~3 min.
tools/fuzz.sh all "${SWIFTJIT_FUZZ_SECONDS:-10}"
# Runtime-vs-runtime checks (OpenCV DNN) use the release binary, as users run it; the C API's
# tests compile C programs against the release library.
swift build -c release --product swiftjit
tools/build-c-library.sh
# The Python package (python/) over the C library, installed as tools/setup.sh installs it, and
# `swiftjit serve` against the real tritonclient[http] on loopback ports: one pytest run.
python3 -m pip install -q -e python
python3 -m pytest -q Tests/peers Tests/c Tests/python Tests/serve Tests/data
