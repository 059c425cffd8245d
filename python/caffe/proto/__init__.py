"""Caffe's protobuf messages (``caffe_pb2``), generated from SwiftJIT's own caffe.proto superset
by tools/regenerate-python-proto.sh."""
