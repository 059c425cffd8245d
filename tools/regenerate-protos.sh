#!/usr/bin/env bash
# regenerate-protos.sh — rebuild the generated Caffe protobuf sources.
#
# Inputs:   Sources/CaffeFormat/Proto/caffe.proto   (SwiftJIT's superset of BVLC caffe.proto)
# Outputs:  Sources/CaffeFormat/Generated/caffe.pb.swift    (swift-protobuf messages, public)
#           Sources/CaffeFormat/Generated/CaffeSchema.swift (ProtoSchema.caffe, via
#                                                            tools/gen_caffe_schema.py)
#
# Run it from anywhere after editing caffe.proto, then commit all three files together.
#
# Requirements:
#   - protoc (e.g. Debian/Ubuntu `protobuf-compiler`, Homebrew `protobuf`); override with $PROTOC.
#   - python3 (standard library only).
#   - protoc-gen-swift, located in this order:
#       1. $PROTOC_GEN_SWIFT, if set (path to the plugin executable);
#       2. `protoc-gen-swift` on $PATH;
#       3. otherwise it is built from source in a scratch directory OUTSIDE this repository:
#          swift-protobuf (tag $SWIFT_PROTOBUF_TAG, default 1.39.0 to match the runtime
#          version in Package.swift) is cloned from $SWIFT_PROTOBUF_GIT (default: the local
#          mirror /opt/swift-packages/apple/swift-protobuf.git if present, else GitHub) into
#          ${TMPDIR:-/tmp}/swiftjit-protoc-gen-swift-<tag>, and
#          `swift build -c release --product protoc-gen-swift` is run there. The scratch
#          checkout is reused by later runs; delete it to force a rebuild.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_DIR="Sources/CaffeFormat/Proto"
PROTO_FILE="caffe.proto"
OUT_DIR="Sources/CaffeFormat/Generated"

PROTOC="${PROTOC:-protoc}"
SWIFT_PROTOBUF_TAG="${SWIFT_PROTOBUF_TAG:-1.39.0}"
if [[ -z "${SWIFT_PROTOBUF_GIT:-}" ]]; then
    if [[ -d /opt/swift-packages/apple/swift-protobuf.git ]]; then
        SWIFT_PROTOBUF_GIT=/opt/swift-packages/apple/swift-protobuf.git
    else
        SWIFT_PROTOBUF_GIT=https://github.com/apple/swift-protobuf.git
    fi
fi

die() { echo "regenerate-protos: $*" >&2; exit 1; }

command -v "$PROTOC" >/dev/null 2>&1 || die "protoc not found (install protobuf-compiler or set PROTOC)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"

find_plugin() {
    if [[ -n "${PROTOC_GEN_SWIFT:-}" ]]; then
        [[ -x "$PROTOC_GEN_SWIFT" ]] || die "PROTOC_GEN_SWIFT=$PROTOC_GEN_SWIFT is not an executable"
        echo "$PROTOC_GEN_SWIFT"
        return
    fi
    if command -v protoc-gen-swift >/dev/null 2>&1; then
        command -v protoc-gen-swift
        return
    fi
    local scratch="${TMPDIR:-/tmp}"
    scratch="${scratch%/}/swiftjit-protoc-gen-swift-${SWIFT_PROTOBUF_TAG}"
    local built="$scratch/.build/release/protoc-gen-swift"
    if [[ ! -x "$built" ]]; then
        command -v swift >/dev/null 2>&1 || die "protoc-gen-swift not found and no swift toolchain to build it"
        if [[ ! -d "$scratch/.git" ]]; then
            echo "regenerate-protos: cloning swift-protobuf $SWIFT_PROTOBUF_TAG into $scratch" >&2
            rm -rf "$scratch"
            git clone --quiet --depth 1 --branch "$SWIFT_PROTOBUF_TAG" "$SWIFT_PROTOBUF_GIT" "$scratch" >&2
        fi
        echo "regenerate-protos: building protoc-gen-swift (this takes a minute)" >&2
        (cd "$scratch" && swift build -c release --product protoc-gen-swift) >&2
        [[ -x "$built" ]] || die "build finished but $built is missing"
    fi
    echo "$built"
}

PLUGIN="$(find_plugin)"
echo "regenerate-protos: using protoc-gen-swift at $PLUGIN" >&2

cd "$REPO_ROOT"
mkdir -p "$OUT_DIR"

"$PROTOC" \
    --plugin="protoc-gen-swift=$PLUGIN" \
    --proto_path="$PROTO_DIR" \
    --swift_out="$OUT_DIR" \
    --swift_opt=Visibility=Public \
    "$PROTO_FILE"
echo "regenerate-protos: wrote $OUT_DIR/caffe.pb.swift" >&2

PROTOC="$PROTOC" python3 tools/gen_caffe_schema.py
