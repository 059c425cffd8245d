"""swiftjit run vs OpenCV DNN on every deploy net of ../shared/zoo, with the same seeded random
weights (swiftjit init) and inputs: outputs must agree to 1e-3 of their largest magnitude. Every
such net is also exported to ONNX (swiftjit export --onnx), checked with onnx.checker, and run in
ONNX Runtime, whose outputs must agree with ours to 1e-4.

Runs the release swiftjit binary (tools/test.sh builds it; SWIFTJIT overrides the path). Nets with a
layer our JIT does not lower yet must fail with the clear unsupported-layer error, never otherwise.
Big nets run at reduced input sizes where the architecture allows, to keep CI fast. swiftjit keeps
its kernel cache in a temporary directory of this test session, never the user's.
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT.parent / "shared" / "zoo"
SWIFTJIT = Path(os.environ.get("SWIFTJIT", ROOT / ".build" / "release" / "swiftjit"))
PEERS = ROOT / "Benchmarks" / "peers.py"
KERNEL_CACHE = tempfile.mkdtemp(prefix="swiftjit-peers-kernels-")
atexit.register(shutil.rmtree, KERNEL_CACHE, ignore_errors=True)

# net -> input shapes (batch 1; spatial sizes reduced where the net allows it)
NETS = {
    "bvlc_alexnet/deploy.prototxt": {"data": (1, 3, 131, 131)},
    "bvlc_googlenet/deploy.prototxt": {"data": (1, 3, 224, 224)},
    "bvlc_legacy_input_dim/bvlc_googlenet/deploy.prototxt": {"data": (1, 3, 224, 224)},
    "bvlc_legacy_input_dim/bvlc_reference_caffenet/deploy.prototxt": {"data": (1, 3, 131, 131)},
    "bvlc_legacy_input_dim/mnist/lenet.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_legacy_input_dim/siamese/mnist_siamese.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_legacy_input_shape/bvlc_googlenet/deploy.prototxt": {"data": (1, 3, 224, 224)},
    "bvlc_legacy_input_shape/bvlc_reference_caffenet/deploy.prototxt": {"data": (1, 3, 131, 131)},
    "bvlc_legacy_input_shape/mnist/lenet.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_legacy_input_shape/siamese/mnist_siamese.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_legacy_v0/imagenet_deploy.prototxt": {"data": (1, 3, 131, 131)},
    "bvlc_legacy_v0/lenet.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_legacy_v1/bvlc_googlenet/deploy.prototxt": {"data": (1, 3, 224, 224)},
    "bvlc_legacy_v1/bvlc_reference_caffenet/deploy.prototxt": {"data": (1, 3, 131, 131)},
    "bvlc_legacy_v1/cifar10/cifar10_quick.prototxt": {"data": (2, 3, 32, 32)},
    "bvlc_legacy_v1/mnist/lenet.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_legacy_v1/siamese/mnist_siamese.prototxt": {"data": (2, 1, 28, 28)},
    "bvlc_reference_caffenet/deploy.prototxt": {"data": (1, 3, 131, 131)},
    "bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": {"data": (1, 3, 131, 131)},
    "cifar10/cifar10_full.prototxt": {"data": (2, 3, 32, 32)},
    "cifar10/cifar10_quick.prototxt": {"data": (2, 3, 32, 32)},
    "coco_caption_lstm/lrcn_word_to_preds.deploy.prototxt": None,
    "coco_caption_lstm/lstm_lm.deploy.prototxt": None,
    "faster_rcnn/VGG16/fast_rcnn/test.prototxt": {"data": (1, 3, 224, 224), "rois": (4, 5)},
    "lrcn_activity_recognition/deploy_lstm.prototxt": None,
    "mnist/lenet.prototxt": {"data": (2, 1, 28, 28)},
    "mobilenet/mobilenet_deploy.prototxt": {"data": (1, 3, 224, 224)},
    "net_surgery/bvlc_caffenet_full_conv.prototxt": {"data": (1, 3, 259, 259)},
    "net_surgery/conv.prototxt": {"data": (1, 1, 64, 64)},
    "resnet/ResNet-50-deploy.prototxt": {"data": (1, 3, 224, 224)},
    "resnet/ResNet-101-deploy.prototxt": {"data": (1, 3, 224, 224)},
    "siamese/mnist_siamese.prototxt": {"data": (2, 1, 28, 28)},
    "squeezenet_v1.0/deploy.prototxt": {"data": (1, 3, 227, 227)},
    "squeezenet_v1.1/deploy.prototxt": {"data": (1, 3, 227, 227)},
}


def swiftjit(*args, check=True):
    if not SWIFTJIT.exists():
        pytest.fail(f"{SWIFTJIT} is missing: build it with `swift build -c release --product swiftjit`")
    result = subprocess.run([str(SWIFTJIT), *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "SWIFTJIT_CACHE_DIR": KERNEL_CACHE})
    if check and result.returncode != 0:
        pytest.fail(f"swiftjit {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def make_inputs(shapes, seed=7):
    rng = np.random.RandomState(seed)
    inputs = {}
    for name, shape in shapes.items():
        if name == "rois":
            boxes = np.zeros(shape, dtype=np.float32)
            x1, y1 = rng.uniform(0, 120, shape[0]), rng.uniform(0, 120, shape[0])
            boxes[:, 1], boxes[:, 2] = x1, y1
            boxes[:, 3], boxes[:, 4] = x1 + rng.uniform(20, 90, shape[0]), y1 + rng.uniform(20, 90, shape[0])
            inputs[name] = boxes
        else:
            inputs[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return inputs


def assert_close(net, ours, theirs, rtol, peer):
    """Every blob of ours within rtol of the peer's, relative to the peer blob's largest magnitude."""
    for name, value in ours.items():
        reference = theirs[name].reshape(value.shape)
        scale = max(np.abs(reference).max(), 1e-6)
        error = np.abs(value - reference).max() / scale
        assert error <= rtol, f"{net}: blob '{name}' differs from {peer} by {error:.2e} of its max |value| {scale:.3g}"


@pytest.mark.parametrize("net", sorted(NETS))
def test_matches_opencv(net, tmp_path):
    if not ZOO.exists():
        pytest.fail(f"missing {ZOO}: clone the repository next to the team's shared/ folder")
    prototxt = ZOO / net
    shapes = NETS[net]
    if shapes is None:
        # LSTM/Embed/ROIPooling nets: our JIT does not lower these layers yet; the error must say so.
        result = swiftjit("time", prototxt, "--iterations", "1", check=False)
        assert result.returncode == 1
        assert "no lowering for this layer type yet" in result.stderr or "not supported" in result.stderr, result.stderr
        return
    shape_args = [a for name, shape in shapes.items() for a in ("--input", f"{name}={','.join(map(str, shape))}")]
    weights = tmp_path / "w.caffemodel"
    swiftjit("init", prototxt, "--seed", "5", "--batchnorm", "unit", "-o", weights, *shape_args)
    inputs = make_inputs(shapes)
    np.savez(tmp_path / "in.npz", **inputs)
    ours_path = tmp_path / "ours.npz"
    swiftjit("run", prototxt, "--weights", weights, "--input", tmp_path / "in.npz", "-o", ours_path)
    ours = dict(np.load(ours_path))

    # OpenCV reads today's format; give it our upgrade of legacy files (its own upgrader is older).
    upgraded = tmp_path / "net.prototxt"
    swiftjit("upgrade", prototxt, upgraded)
    theirs_path = tmp_path / "theirs.npz"
    peer = subprocess.run([sys.executable, str(PEERS), "opencv", str(upgraded), str(weights), "--inputs-npz", str(tmp_path / "in.npz"),
                           "--iterations", "1", "--warmup", "0", "--outputs", *ours.keys(), "--save-outputs", str(theirs_path)],
                          capture_output=True, text=True)
    assert peer.returncode == 0, peer.stderr
    for name, value in ours.items():
        assert np.isfinite(value).all(), f"{name}: non-finite values"
    assert_close(net, ours, dict(np.load(theirs_path)), 1e-3, "OpenCV")

    # The same net through our ONNX export and ONNX Runtime.
    import onnx
    onnx_path = tmp_path / "net.onnx"
    swiftjit("export", prototxt, "--weights", weights, "--onnx", onnx_path, *shape_args)
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    ort_path = tmp_path / "ort.npz"
    peer = subprocess.run([sys.executable, str(PEERS), "ort", str(onnx_path), "--inputs-npz", str(tmp_path / "in.npz"),
                           "--iterations", "1", "--warmup", "0", "--outputs", *ours.keys(), "--save-outputs", str(ort_path)],
                          capture_output=True, text=True)
    assert peer.returncode == 0, peer.stderr
    assert_close(net, ours, dict(np.load(ort_path)), 1e-4, "ONNX Runtime")
