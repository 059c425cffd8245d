#!/usr/bin/env bash
# First run: install what is missing, build SwiftJIT in release mode (the swiftjit CLI and the C
# library .build/release/libswiftjit.so), and explain the bundled LeNet.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
swift build -c release --product swiftjit
tools/build-c-library.sh
.build/release/swiftjit compile Examples/lenet/lenet.prototxt
