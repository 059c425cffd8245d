#!/usr/bin/env bash
# Builds the C API's shared library, .build/release/libswiftjit.so (include/swiftjit.h is its header).
# Its SONAME is its own absolute path, so a program linked with `-L .build/release -lswiftjit` finds
# it at run time without LD_LIBRARY_PATH; the library finds the Swift runtime through its RUNPATH.
# Rebuild (or move the checkout and rebuild) before linking programs against a moved library.
set -euo pipefail
cd "$(dirname "$0")/.."
release="$PWD/.build/release"
swift build -c release --product swiftjit-c -Xlinker "-soname=$release/libswiftjit.so"
ln -sf libswiftjit-c.so "$release/libswiftjit.so"
echo "built $release/libswiftjit.so (header: include/swiftjit.h)"
