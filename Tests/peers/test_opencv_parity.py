"""swiftjit run vs OpenCV DNN on every deploy net of ../shared/zoo, with the same seeded random
weights (swiftjit init) and inputs: outputs must agree to 1e-3 of their largest magnitude. Every
such net is also exported to ONNX (swiftjit export --onnx), checked with onnx.checker, and run in
ONNX Runtime, whose outputs must agree with ours to 1e-4.

Runs the release swiftjit binary (tools/test.sh builds it; SWIFTJIT overrides the path).
Big nets run at reduced input sizes where the architecture allows, to keep CI fast. swiftjit keeps
its kernel cache in a temporary directory of this test session, never the user's.

The zoo's LSTM deploy nets are in RECURRENT_NETS instead: OpenCV DNN cannot run Caffe's LSTM (its
LSTM layer reads the blobs as [W_hc, W_xc, b], Caffe stores [W_xc, b_c, W_hc], and it takes no
`cont` bottom) nor Embed, and our ONNX export has no LSTM. There swiftjit run is checked against a
NumPy transcription of Caffe's recurrent layers on the blobs it dumps, and OpenCV is still tried:
if it ever runs such a net, its outputs must agree to 1e-3 like the others'.
"""
import atexit
import os
import re
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
    "faster_rcnn/VGG16/fast_rcnn/test.prototxt": {"data": (1, 3, 224, 224), "rois": (4, 5)},
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


# LSTM deploy nets -> (inputs: name -> (shape, kind), blobs to dump). Kinds: "word" (Embed indices),
# "cont" (0 at t = 0, then 1, with one stream restarting midway), "normal".
RECURRENT_NETS = {
    # One word per forward in Jeff Donahue's captioner; here 6 steps of 3 sentences at once.
    "coco_caption_lstm/lstm_lm.deploy.prototxt": (
        {"cont_sentence": ((6, 3), "cont"), "input_sentence": ((6, 3), "word")},
        ["embedded_input_sentence", "lstm1", "predict", "probs"]),
    # The prototxt's own shapes: 1000 streams, one step, image features as the static input of lstm2.
    "coco_caption_lstm/lrcn_word_to_preds.deploy.prototxt": (
        {"cont_sentence": ((1, 1000), "cont"), "input_sentence": ((1, 1000), "word"), "image_features": ((1000, 1000), "normal")},
        ["embedded_input_sentence", "lstm1", "lstm2", "predict", "probs"]),
    # 16 frames of 10 clips (the reshape is fixed by the prototxt), conv features into the LSTM.
    "lrcn_activity_recognition/deploy_lstm.prototxt": (
        {"data": ((160, 3, 227, 227), "normal"), "clip_markers": ((160, 1, 1, 1), "cont")},
        ["fc6-reshape", "reshape-cm", "lstm1", "fc8-final", "probs"]),
}


def recurrent_inputs(spec, seed=11):
    rng = np.random.RandomState(seed)
    inputs = {}
    for name, (shape, kind) in spec.items():
        if kind == "word":
            inputs[name] = rng.randint(0, 8801, shape).astype(np.float32)
        elif kind == "cont":
            # Time-major (T, N); clip_markers are 160 frames = 16 steps × 10 clips in the same order.
            steps = shape[0] if len(shape) == 2 else 16
            markers = np.ones((steps, int(np.prod(shape)) // steps), dtype=np.float32)
            markers[0] = 0
            if steps > 2:
                markers[steps // 2, 0] = 0
            inputs[name] = markers.reshape(shape)
        else:
            inputs[name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return inputs


def with_random_fillers(text):
    """The prototxt with uniform weight and bias fillers added to every embed, recurrent and
    inner-product parameter block that has none (the layer names, hence the caffemodel, are unchanged)."""
    out, position = [], 0
    for match in re.finditer(r"\b(embed_param|recurrent_param|inner_product_param)\s*:?\s*\{", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        block = text[match.end():end - 1]
        added = ""
        if "weight_filler" not in block:
            added += ' weight_filler { type: "uniform" min: -0.08 max: 0.08 }'
        if "bias_filler" not in block:
            added += ' bias_filler { type: "uniform" min: -0.1 max: 0.1 }'
        out.append(text[position:match.end()] + added)
        position = match.end()
    out.append(text[position:])
    return "".join(out)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def caffe_lstm(x, cont, w_xc, b_c, w_hc, x_static=None, w_static=None):
    """Caffe's LSTM (recurrent_layer.cpp + lstm_layer.cpp + lstm_unit_layer.cpp) in float64, from a
    zero state: gates i, f, o, g; h_{t-1} is multiplied by cont_t; f is 0 where cont_t is 0."""
    steps, streams = cont.shape
    x = x.reshape(steps, streams, -1).astype(np.float64)
    hidden = w_hc.shape[1]
    h, c = np.zeros((streams, hidden)), np.zeros((streams, hidden))
    projected = x @ w_xc.T + b_c
    if x_static is not None:
        projected = projected + (x_static.reshape(streams, -1) @ w_static.T)[None]
    outputs = []
    for t in range(steps):
        keep = cont[t][:, None].astype(np.float64)
        gates = (keep * h) @ w_hc.T + projected[t]
        i, f, o, g = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        f = np.where(keep == 0, 0, keep * sigmoid(f))
        c = f * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def reference(net, blobs, params, inputs):
    """Each LSTM, Embed, InnerProduct and Softmax of the net recomputed from its dumped bottoms."""
    expected = {}
    if net.startswith("coco_caption_lstm/"):
        words = inputs["input_sentence"].astype(np.int64)
        expected["embedded_input_sentence"] = params["embedding/0"][words]
        cont = inputs["cont_sentence"]
        expected["lstm1"] = caffe_lstm(blobs["embedded_input_sentence"], cont, params["lstm1/0"], params["lstm1/1"], params["lstm1/2"])
        last = "lstm1"
        if "image_features" in inputs:
            expected["lstm2"] = caffe_lstm(blobs["lstm1"], cont, params["lstm2/0"], params["lstm2/1"], params["lstm2/3"],
                                           inputs["image_features"], params["lstm2/2"])
            last = "lstm2"
        expected["predict"] = blobs[last].astype(np.float64) @ params["predict/0"].T + params["predict/1"]
        expected["probs"] = softmax(blobs["predict"].astype(np.float64), axis=2)
    else:
        cont = blobs["reshape-cm"]
        expected["lstm1"] = caffe_lstm(blobs["fc6-reshape"], cont, params["lstm1/0"], params["lstm1/1"], params["lstm1/2"])
        expected["fc8-final"] = blobs["lstm1"].astype(np.float64) @ params["fc8-final/0"].T + params["fc8-final/1"]
        expected["probs"] = softmax(blobs["fc8-final"].astype(np.float64), axis=2)
    return expected


@pytest.mark.parametrize("net", sorted(RECURRENT_NETS))
def test_recurrent_zoo_net_runs(net, tmp_path):
    """swiftjit run on an LSTM deploy net equals Caffe's recurrent semantics recomputed in NumPy."""
    if not ZOO.exists():
        pytest.fail(f"missing {ZOO}: clone the repository next to the team's shared/ folder")
    prototxt = ZOO / net
    spec, dumped = RECURRENT_NETS[net]
    # The deploy prototxts leave most fillers at Caffe's default (constant 0), which would make every
    # LSTM output 0; draw the weights from a copy that names random fillers, run the original.
    filled = tmp_path / "filled.prototxt"
    filled.write_text(with_random_fillers(prototxt.read_text()))
    weights = tmp_path / "w.caffemodel"
    swiftjit("init", filled, "--seed", "5", "-o", weights)
    inputs = recurrent_inputs(spec)
    np.savez(tmp_path / "in.npz", **inputs)
    ours_path = tmp_path / "ours.npz"
    swiftjit("run", prototxt, "--weights", weights, "--input", tmp_path / "in.npz", "-o", ours_path, "--blobs", ",".join(dumped))
    ours = dict(np.load(ours_path))
    assert sorted(ours) == sorted(dumped)
    for name, value in ours.items():
        assert np.isfinite(value).all(), f"{net}: blob '{name}' has non-finite values"
    params_path = tmp_path / "params.npz"
    swiftjit("export", prototxt, "--weights", weights, "--output", params_path)
    params = dict(np.load(params_path))

    expected = reference(net, ours, params, inputs)
    assert "lstm1" in expected and "probs" in expected
    for name, value in expected.items():
        scale = max(np.abs(value).max(), 1e-6)
        error = np.abs(ours[name].reshape(value.shape) - value).max() / scale
        print(f"{net}: {name} {tuple(value.shape)} differs from the NumPy reference by {error:.2e} of its max {scale:.3g}")
        assert error <= 1e-4, f"{net}: blob '{name}' differs from Caffe's semantics (NumPy) by {error:.2e} of its max |value|"
    assert np.allclose(ours["probs"].sum(axis=2), 1, atol=1e-4)
    # swiftjit time feeds the Embed inputs valid word indices and times every layer.
    timed = swiftjit("time", prototxt, "--iterations", "1", "--weights", weights)
    assert "lstm1" in timed.stdout and "Average Forward pass" in timed.stdout, timed.stdout

    # OpenCV DNN, tried as for every other zoo net; today it stops at Caffe's LSTM or Embed layer.
    upgraded = tmp_path / "net.prototxt"
    swiftjit("upgrade", prototxt, upgraded)
    theirs_path = tmp_path / "theirs.npz"
    outputs = [name for name in ("lstm1", "lstm2", "probs") if name in ours]
    peer = subprocess.run([sys.executable, str(PEERS), "opencv", str(upgraded), str(weights), "--inputs-npz", str(tmp_path / "in.npz"),
                           "--iterations", "1", "--warmup", "0", "--outputs", *outputs, "--save-outputs", str(theirs_path)],
                          capture_output=True, text=True)
    if peer.returncode == 0:
        assert_close(net, {name: ours[name] for name in outputs}, dict(np.load(theirs_path)), 1e-3, "OpenCV")
    else:
        lines = peer.stderr.strip().splitlines()
        first = next((i for i, line in enumerate(lines) if "error:" in line), max(0, len(lines) - 4))
        reason = " ".join(line.strip() for line in lines[first:first + 5])
        print(f"{net}: OpenCV DNN cannot run it, so it is not compared: {reason}")
        assert "Embed" in peer.stderr or "LSTM" in peer.stderr, peer.stderr
