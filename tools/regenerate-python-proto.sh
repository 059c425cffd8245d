#!/usr/bin/env bash
# regenerate-python-proto.sh — rebuild python/caffe/proto/caffe_pb2.py from our caffe.proto.
#
# Input:   Sources/CaffeFormat/Proto/caffe.proto  (SwiftJIT's superset of BVLC caffe.proto)
# Output:  python/caffe/proto/caffe_pb2.py        (protobuf message classes; committed)
#
# The generated module checks at import time that the protobuf runtime is at least as new as the
# protoc that wrote it, so protoc's version must match the runtime users install (`protobuf` 7.x).
# grpcio-tools bundles protoc; 1.85.4 bundles protoc 35.1 (gencode 7.35.1) and itself requires
# protobuf>=7.35.1,<8. It is installed into a scratch virtualenv outside the repository so that it
# cannot move the protobuf version of the python3 on PATH. Override the pin with $GRPCIO_TOOLS.
#
# Run it from anywhere after editing caffe.proto, and commit caffe.proto and caffe_pb2.py together.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GRPCIO_TOOLS="${GRPCIO_TOOLS:-1.85.4}"
VENV="${TMPDIR:-/tmp}"
VENV="${VENV%/}/swiftjit-grpcio-tools-${GRPCIO_TOOLS}"

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import grpc_tools.protoc" 2>/dev/null; then
    echo "regenerate-python-proto: installing grpcio-tools==$GRPCIO_TOOLS into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "grpcio-tools==$GRPCIO_TOOLS"
fi

cd "$REPO_ROOT"
"$VENV/bin/python" -m grpc_tools.protoc \
    --proto_path=Sources/CaffeFormat/Proto \
    --python_out=python/caffe/proto \
    caffe.proto
echo "regenerate-python-proto: wrote python/caffe/proto/caffe_pb2.py ($("$VENV/bin/python" -m grpc_tools.protoc --version))" >&2
