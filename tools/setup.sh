#!/usr/bin/env bash
# First run: install what is missing, build SwiftJIT in release mode, and explain the bundled LeNet.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
swift build -c release --product swiftjit
.build/release/swiftjit compile Examples/lenet/lenet.prototxt
