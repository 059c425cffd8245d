#!/usr/bin/env python3
"""Writes the fuzzing seed corpora in Tests/Fuzz/corpus/<harness>/ from ../shared/zoo and
../shared/golden (small files only), plus a few made here for readers those do not cover
(solverstates, encoded Datums, config.pbtxt, server requests, HDF5Data files). Rerun after changing a reader's
format; the corpora are committed so CI and tools/fuzz.sh start from them."""
import io
import os
import shutil
import struct
import sys
from pathlib import Path

import cv2
import h5py
import lmdb
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "Tests" / "Fuzz" / "corpus"
sys.path.insert(0, str(ROOT / "python"))
from caffe.proto import caffe_pb2  # noqa: E402

LIMIT = 16 * 1024


def put(harness, name, data):
    folder = OUT / harness
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def copy_small(harness, paths, count):
    picked = sorted((p for p in paths if p.stat().st_size <= LIMIT), key=lambda p: (p.stat().st_size, str(p)))
    step = max(1, len(picked) // count)
    for p in picked[::step][:count]:
        put(harness, str(p.relative_to(SHARED)).replace("/", "_"), p.read_bytes())


shutil.rmtree(OUT, ignore_errors=True)
zoo = list((SHARED / "zoo").rglob("*.prototxt"))
copy_small("net", [p for p in zoo if "solver" not in p.name], 12)
copy_small("solver", [p for p in zoo if "solver" in p.name], 8)
copy_small("caffemodel", list((SHARED / "golden").rglob("*.caffemodel")), 8)
copy_small("npy", list((SHARED / "golden").rglob("*.npy")), 6)
copy_small("npz", list((SHARED / "golden").rglob("*.npz")), 6)

for name, array in [("f4", np.arange(6, dtype="<f4").reshape(2, 3)), ("f8_fortran", np.asfortranarray(np.arange(6.0).reshape(2, 3))),
                    ("i8_be", np.arange(4, dtype=">i8")), ("u1_scalar", np.array(7, dtype=np.uint8)), ("bool", np.array([True, False])),
                    ("f2_3d", np.ones((1, 2, 2), dtype=np.float16))]:
    buffer = io.BytesIO()
    np.save(buffer, array)
    put("npy", name + ".npy", buffer.getvalue())
buffer = io.BytesIO()
np.savez_compressed(buffer, a=np.arange(3, dtype=np.float32), b=np.eye(2))
put("npz", "compressed.npz", buffer.getvalue())

# V1 caffemodel (layers {} with a legacy num/channels/height/width blob).
v1 = caffe_pb2.NetParameter(name="v1")
layer = v1.layers.add(name="ip1", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
blob = layer.blobs.add(num=1, channels=1, height=2, width=3)
blob.data.extend([0.5] * 6)
put("caffemodel", "v1_legacy_blob.caffemodel", v1.SerializeToString())

for i, (iteration, step) in enumerate([(20, 1), (0, 0)]):
    state = caffe_pb2.SolverState(iter=iteration, learned_net="snap_iter_%d.caffemodel" % iteration, current_step=step)
    for shape in ([2, 3], [4]):
        h = state.history.add()
        h.shape.dim.extend(shape)
        h.data.extend(np.linspace(-1, 1, int(np.prod(shape))).astype(np.float32).tolist())
    put("solverstate", "state%d.solverstate" % i, state.SerializeToString())

mean = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
mean.data.extend([float(v) for v in range(12)])
put("binaryproto", "mean_legacy.binaryproto", mean.SerializeToString())
mean = caffe_pb2.BlobProto()
mean.shape.dim.extend([1, 1, 2, 2])
mean.double_data.extend([1.0, 2.0, 3.0, 4.0])
put("binaryproto", "mean_shape_double.binaryproto", mean.SerializeToString())

env = lmdb.open(str(SHARED / "golden" / "train" / "data" / "test_lmdb"), readonly=True, lock=False)
with env.begin() as txn:
    for i, (key, value) in enumerate(txn.cursor()):
        if i == 2:
            break
        put("datum", "raw_%s.datum" % key.decode(errors="replace"), value)
image = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
for ext in (".jpg", ".png"):
    ok, encoded = cv2.imencode(ext, image)
    put("datum", "encoded%s.datum" % ext.replace(".", "_"),
        caffe_pb2.Datum(channels=3, height=4, width=5, data=encoded.tobytes(), label=3, encoded=True).SerializeToString())
    ok, gray = cv2.imencode(ext, image[:, :, 0])
    put("datum", "encoded_gray%s.datum" % ext.replace(".", "_"),
        caffe_pb2.Datum(data=gray.tobytes(), label=1, encoded=True).SerializeToString())
# The densest real JPEG (uniform white, progressive): JPEGBombTests.uniformProgressiveDecodes.
ok, white = cv2.imencode(".jpg", np.full((768, 1024), 255, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
put("datum", "encoded_progressive_white_gray_jpg.datum", caffe_pb2.Datum(data=white.tobytes(), label=7, encoded=True).SerializeToString())
put("datum", "float.datum", caffe_pb2.Datum(channels=1, height=1, width=3, float_data=[0.5, 1.5, 2.5], label=7).SerializeToString())

put("config", "full.pbtxt", """name: "squeezenet"
platform: "caffe"
max_batch_size: 16
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 500 preserve_ordering: true }
instance_group [ { count: 2 kind: KIND_CPU } ]
input [ { name: "data" data_type: TYPE_FP32 dims: [ 3, 227, 227 ] } ]
output [ { name: "prob", data_type: TYPE_FP32, dims: [ 1000, 1, 1 ] } ]
optimization { execution_accelerators { cpu_execution_accelerator : [ { name : "openvino" } ] } }
""")
put("config", "small.pbtxt", "max_batch_size: 4\n")

# request: first byte odd = JSON only; even = [0, header length (2 bytes LE)] + header + binary data.
put("request", "json.req", b"\x01" + b'{"id":"42","inputs":[{"name":"data","shape":[1,2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}],"outputs":[{"name":"prob"}]}')
header = b'{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[3],"datatype":"UINT8","parameters":{"binary_data_size":3}}],"parameters":{"binary_data_output":true}}'
put("request", "binary.req", b"\x00" + struct.pack("<H", len(header)) + header + struct.pack("<2f", 1.5, -2) + bytes([1, 2, 3]))
put("request", "ints.req", b"\x01" + b'{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,-2,9007199254740993]},{"name":"y","shape":[1],"datatype":"BOOL","data":[true]}]}')

# hdf5: files as HDF5Data reads them (root datasets "data" and "label"), in the layouts and
# types h5py writes: contiguous, chunked, gzip/shuffle-filtered, integer and double elements, a
# fill-value-only dataset, and ones the reader must refuse (a scalar, strings, a group).
def h5(name, build, **kwargs):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", **kwargs) as f:
        build(f)
    put("hdf5", name + ".h5", buffer.getvalue())


rows = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)
h5("contiguous_f4", lambda f: (f.create_dataset("data", data=rows), f.create_dataset("label", data=np.array([0, 1, 2], dtype=np.float32))))
h5("chunked_gzip", lambda f: (f.create_dataset("data", data=rows, chunks=(1, 1, 2, 2), compression="gzip", shuffle=True),
                              f.create_dataset("label", data=np.arange(3, dtype=np.int32), chunks=(2,))))
h5("int_and_double", lambda f: (f.create_dataset("data", data=np.arange(6, dtype=">i2").reshape(2, 3)),
                                f.create_dataset("label", data=np.array([1.5, -2.0]))))
h5("uint8_fill_only", lambda f: (f.create_dataset("data", data=np.arange(8, dtype=np.uint8).reshape(2, 4)),
                                 f.create_dataset("label", shape=(2,), dtype="f4", fillvalue=7)))
h5("latest_format", lambda f: (f.create_dataset("data", data=rows[:1]), f.create_dataset("label", data=np.zeros(1, np.float64))),
   libver="latest")
h5("refused", lambda f: (f.create_dataset("data", data=np.float32(3)), f.create_dataset("label", data=np.array([b"ab", b"c"])),
                         f.create_group("other")))

for folder in sorted(OUT.iterdir()):
    files = list(folder.iterdir())
    print("%-12s %2d seeds, %6d bytes" % (folder.name, len(files), sum(f.stat().st_size for f in files)))
