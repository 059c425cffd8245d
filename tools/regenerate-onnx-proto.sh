#!/usr/bin/env bash
# regenerate-onnx-proto.sh — rebuild the generated ONNX protobuf sources used by `swiftjit export --onnx`.
#
# Inputs:   Sources/Export/Proto/onnx.proto          (the official ONNX IR schema, unchanged)
# Outputs:  Sources/Export/Generated/onnx.pb.swift   (swift-protobuf messages, public)
#
#   tools/regenerate-onnx-proto.sh                 regenerate Swift from the committed onnx.proto
#   tools/regenerate-onnx-proto.sh --update-proto  first replace onnx.proto with the copy bundled in
#                                                  the `onnx` Python package (pip install onnx), whose
#                                                  onnx/onnx.proto is generated from the onnx repo's
#                                                  onnx/onnx.in.proto; field numbers never change
#                                                  between ONNX releases, fields are only added.
# Commit onnx.proto and onnx.pb.swift together.
#
# Requirements: protoc (override with $PROTOC) and protoc-gen-swift, found like
# tools/regenerate-protos.sh does: $PROTOC_GEN_SWIFT, then `protoc-gen-swift` on $PATH, then a build
# in ${TMPDIR:-/tmp}/swiftjit-protoc-gen-swift-<tag> (made by tools/regenerate-protos.sh, which
# clones and builds it when missing).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="Sources/Export/Proto"
OUT_DIR="Sources/Export/Generated"
PROTOC="${PROTOC:-protoc}"
SWIFT_PROTOBUF_TAG="${SWIFT_PROTOBUF_TAG:-1.39.0}"

die() { echo "regenerate-onnx-proto: $*" >&2; exit 1; }
command -v "$PROTOC" >/dev/null 2>&1 || die "protoc not found (install protobuf-compiler or set PROTOC)"
cd "$REPO_ROOT"

if [[ "${1:-}" == "--update-proto" ]]; then
    bundled="$(python3 -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "onnx.proto"))')" \
        || die "the onnx Python package is not installed (python3 -m pip install onnx)"
    cp "$bundled" "$PROTO_DIR/onnx.proto"
    echo "regenerate-onnx-proto: copied $bundled (onnx $(python3 -c 'import onnx; print(onnx.__version__)'))" >&2
fi

plugin="${PROTOC_GEN_SWIFT:-}"
if [[ -z "$plugin" ]]; then
    if command -v protoc-gen-swift >/dev/null 2>&1; then
        plugin="$(command -v protoc-gen-swift)"
    else
        scratch="${TMPDIR:-/tmp}"
        plugin="${scratch%/}/swiftjit-protoc-gen-swift-${SWIFT_PROTOBUF_TAG}/.build/release/protoc-gen-swift"
        [[ -x "$plugin" ]] || die "protoc-gen-swift not found: set PROTOC_GEN_SWIFT, or run tools/regenerate-protos.sh once to build it"
    fi
fi
[[ -x "$plugin" ]] || die "$plugin is not an executable"

mkdir -p "$OUT_DIR"
"$PROTOC" \
    --plugin="protoc-gen-swift=$plugin" \
    --proto_path="$PROTO_DIR" \
    --swift_out="$OUT_DIR" \
    --swift_opt=Visibility=Public \
    onnx.proto
echo "regenerate-onnx-proto: wrote $OUT_DIR/onnx.pb.swift" >&2
