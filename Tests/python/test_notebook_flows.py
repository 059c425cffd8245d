"""The flows of BVLC's example notebooks (classification, net surgery, learning LeNet), in our own
words on small nets and local data, each checked against the `swiftjit` CLI on the same files.

tools/replay-pycaffe-notebooks.sh replays the notebooks themselves from a BVLC checkout; these run
without one. The CLI is $SWIFTJIT_CLI, else the `swiftjit` beside the library the package loaded,
else the checkout's .build/release/swiftjit.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ZOO = os.path.normpath(os.path.join(REPO, "..", "shared", "zoo"))
sys.path.insert(0, os.path.join(REPO, "tools", "notebooks"))
import mnist_like  # noqa: E402  (the notebooks' MNIST stand-in, shared with the replay tool)


def swiftjit(*args):
    """Runs the CLI; its stdout."""
    from swiftjit import _capi
    cli = os.environ.get("SWIFTJIT_CLI")
    if not cli:
        _capi.lib.sj_version   # loads the library, so that its path is known
        cli = os.path.join(os.path.dirname(os.path.realpath(_capi.lib.path)), "swiftjit")
        if not os.path.exists(cli):   # a library from the system path: the checkout's CLI
            cli = os.path.join(REPO, ".build", "release", "swiftjit")
    result = subprocess.run([cli] + [str(a) for a in args], capture_output=True, text=True)
    assert result.returncode == 0, "swiftjit %s failed:\n%s%s" % (" ".join(map(str, args)), result.stdout, result.stderr)
    return result.stdout


def swiftjit_run(prototxt, weights, folder, **inputs):
    np.savez(folder / "inputs.npz", **inputs)
    swiftjit("run", prototxt, "--weights", weights, "--input", folder / "inputs.npz", "-o", folder / "out.npz",
             "--blobs", "all")
    return dict(np.load(folder / "out.npz"))


# ------------------------------------------------------------------ classification

def test_load_image_gives_rgb_floats_in_0_1_and_one_channel_when_gray(tmp_path):
    import skimage.io
    pixels = np.zeros((4, 5, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 255, np.arange(5) * 50, 10
    skimage.io.imsave(str(tmp_path / "rgb.png"), pixels, check_contrast=False)
    image = caffe.io.load_image(str(tmp_path / "rgb.png"))
    assert image.shape == (4, 5, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-6)
    gray = caffe.io.load_image(str(tmp_path / "rgb.png"), color=False)
    assert gray.shape == (4, 5, 1) and 0 <= gray.min() and gray.max() <= 1


def notebook_transformer(shape, mean):
    """00-classification's preprocessing: HWC RGB in [0, 1] → CHW BGR in [0, 255] minus the mean."""
    transformer = caffe.io.Transformer({"data": shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", mean)
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))
    return transformer


def test_transformer_does_what_the_classification_notebook_says():
    mean = np.array([104.0, 117.0, 123.0])
    image = np.random.RandomState(1).rand(8, 6, 3).astype(np.float32)
    transformer = notebook_transformer((1, 3, 8, 6), mean)
    x = transformer.preprocess("data", image)
    expected = image[:, :, ::-1].transpose(2, 0, 1) * 255 - mean[:, None, None]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(transformer.deprocess("data", x), image, atol=1e-5)
    # Another image size is resized to the input's (a constant image stays constant).
    resized = transformer.preprocess("data", np.full((20, 16, 3), 0.5, np.float32))
    np.testing.assert_allclose(resized, 127.5 - mean[:, None, None] * np.ones((3, 8, 6)), atol=1e-3)


def test_classification_with_init_weights_matches_swiftjit_run(tmp_path):
    deploy = os.path.join(ZOO, "squeezenet_v1.1", "deploy.prototxt")
    weights = tmp_path / "squeeze.caffemodel"
    swiftjit("init", deploy, "--seed", 7, "--unfilled-weights", "xavier", "-o", weights)
    with pytest.warns(DeprecationWarning, match="weights=weights"):   # the notebooks' order, as BVLC warns
        net = caffe.Net(deploy, str(weights), caffe.TEST)
    transformer = notebook_transformer(net.blobs["data"].data.shape, np.array([104.0, 117.0, 123.0]))
    net.blobs["data"].reshape(2, 3, 227, 227)
    yy, xx = np.mgrid[0:240, 0:300] / 300.0
    image = np.dstack([yy, xx, (yy + xx) / 2]).astype(np.float32)   # a 240×300 RGB gradient
    x = transformer.preprocess("data", image)
    net.blobs["data"].data[...] = x
    prob = net.forward()["prob"]
    assert prob.shape == (2, 1000, 1, 1)
    np.testing.assert_allclose(prob[1], prob[0])
    theirs = swiftjit_run(deploy, weights, tmp_path, data=x[np.newaxis])["prob"][0]
    np.testing.assert_allclose(prob[0], theirs, rtol=1e-4, atol=1e-7)
    top5 = prob[0].ravel().argsort()[::-1][:5]
    assert list(top5) == list(theirs.ravel().argsort()[::-1][:5])
    assert prob[0].ravel()[top5[0]] < 0.99   # xavier weights leave a spread-out distribution to compare


# ------------------------------------------------------------------ net surgery

FC_NET = """
name: "fc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } bias_filler { type: "gaussian" std: 1 } } }
"""

# The same net, its inner product a 4×4 convolution, on 8×8 inputs: a 3×3 map of fc's outputs.
FULL_CONV_NET = """
name: "full_conv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc-conv" type: "Convolution" bottom: "conv1" top: "fc-conv" convolution_param { num_output: 5 kernel_size: 4 } }
"""


def test_blob_views_stay_live_and_parameter_writes_reach_the_next_forward(write):
    net = caffe.Net(write("fc.prototxt", FC_NET), caffe.TEST)
    net.blobs["data"].data[...] = np.random.RandomState(0).rand(1, 2, 6, 6)
    net.forward()
    channel0 = net.blobs["conv1"].data[0, 0]           # a view, as net_surgery's conv0
    before = channel0.copy()
    net.params["conv1"][0].data[0] = 0                  # filter 0 → 0, bias 0 → 2: channel 0 is 2
    net.params["conv1"][1].data[0] = 2.0
    net.forward()
    np.testing.assert_allclose(channel0, 2.0)
    assert not np.allclose(before, 2.0)


def test_net_surgery_transplants_fc_weights_into_a_fully_convolutional_net(tmp_path, write):
    fc_file, full_file = write("fc.prototxt", FC_NET), write("full_conv.prototxt", FULL_CONV_NET)
    init = tmp_path / "fc.caffemodel"
    swiftjit("init", fc_file, "--seed", 7, "-o", init)
    net = caffe.Net(fc_file, caffe.TEST, weights=str(init))
    full = caffe.Net(full_file, caffe.TEST, weights=str(init))  # conv1 by name; fc-conv is new
    assert net.params["fc"][0].data.shape == (5, 48) and full.params["fc-conv"][0].data.shape == (5, 3, 4, 4)
    np.testing.assert_array_equal(full.params["conv1"][0].data, net.params["conv1"][0].data)
    full.params["fc-conv"][0].data.flat = net.params["fc"][0].data.flat
    full.params["fc-conv"][1].data[...] = net.params["fc"][1].data
    surgery = tmp_path / "full_conv.caffemodel"
    full.save(str(surgery))

    reloaded = caffe.Net(full_file, caffe.TEST, weights=str(surgery))
    np.testing.assert_array_equal(reloaded.params["fc-conv"][0].data.ravel(), net.params["fc"][0].data.ravel())
    x = np.random.RandomState(3).rand(1, 2, 8, 8).astype(np.float32)
    out = reloaded.forward_all(data=x)["fc-conv"]
    assert out.shape == (1, 5, 3, 3)
    for i, j in ((0, 0), (0, 2), (2, 1)):   # location (i, j) is the fc net on the 6×6 window there
        window = net.forward(data=x[:, :, i:i + 6, j:j + 6])["fc"][0]
        np.testing.assert_allclose(out[0, :, i, j], window, rtol=1e-5, atol=1e-6)
    theirs = swiftjit_run(full_file, surgery, tmp_path, data=x)["fc-conv"]
    np.testing.assert_allclose(out, theirs, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ learning LeNet

def small_lenet(lmdb, batch_size):
    """01-learning-lenet's NetSpec LeNet, narrower (4 and 8 filters, 32 hidden units)."""
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=4, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=8, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=32, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


@pytest.fixture
def lenet_files(tmp_path):
    """MNIST-shaped LMDBs, NetSpec-written train/test nets and a solver written from caffe_pb2."""
    for name, count, seed in (("train", 96, 0), ("test", 40, 1)):
        images, labels = mnist_like.digit_images(count, seed)
        mnist_like.write_lmdb(str(tmp_path / (name + "_lmdb")), images, labels)
    for name, batch in (("train", 16), ("test", 20)):
        (tmp_path / (name + ".prototxt")).write_text(str(small_lenet(str(tmp_path / (name + "_lmdb")), batch)))
    s = caffe_pb2.SolverParameter()
    s.random_seed = 0xCAFFE
    s.train_net = str(tmp_path / "train.prototxt")
    s.test_net.append(str(tmp_path / "test.prototxt"))
    s.test_interval, s.test_iter[:] = 1000, [2]
    s.base_lr, s.momentum, s.weight_decay = 0.01, 0.9, 5e-4
    s.lr_policy, s.gamma, s.power = "inv", 1e-4, 0.75
    s.max_iter, s.display, s.snapshot, s.snapshot_after_train = 1000, 0, 0, False
    s.snapshot_prefix = str(tmp_path / "lenet")
    (tmp_path / "solver.prototxt").write_text(str(s))
    return tmp_path


def cli_losses(folder, train_lmdb, iterations):
    """`swiftjit train` on the solver with max_iter = iterations, reading `train_lmdb`; its losses."""
    (folder / "cli_train.prototxt").write_text(str(small_lenet(str(train_lmdb), 16)))
    s = caffe_pb2.SolverParameter()
    text_format.Merge((folder / "solver.prototxt").read_text(), s)
    s.train_net, s.max_iter = str(folder / "cli_train.prototxt"), iterations
    (folder / "cli_solver.prototxt").write_text(str(s))
    swiftjit("train", "--solver", folder / "cli_solver.prototxt", "--loss-csv", folder / "loss.csv", "--plain")
    with open(folder / "loss.csv") as f:
        return np.array([float(row["loss"]) for row in csv.DictReader(f)], np.float32)


def test_solver_losses_match_swiftjit_train_after_a_forward_outside_step(lenet_files):
    folder = lenet_files
    solver = caffe.SGDSolver(str(folder / "solver.prototxt"))
    assert [k for k in solver.net.blobs][:2] == ["data", "label"]
    assert solver.net.params["conv1"][0].data.shape == (4, 1, 5, 5)
    solver.net.forward()                 # reads batch 0, as the notebook's first look at the data
    first_labels = solver.net.blobs["label"].data.copy()
    solver.test_nets[0].forward()
    assert solver.test_nets[0].blobs["data"].data.max() <= 1.0   # scale 1/255 applied
    solver.step(1)
    assert solver.iter == 1 and not np.array_equal(solver.net.blobs["label"].data, first_labels)
    assert np.abs(solver.net.params["conv1"][0].diff).sum() > 0
    losses = [float(solver.net.blobs["loss"].data)]
    for _ in range(11):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
        solver.test_nets[0].forward(start="conv1")   # the same test batch again, no data read
        assert solver.test_nets[0].blobs["score"].data.shape == (20, 10)
    correct = 0
    for _ in range(2):
        solver.test_nets[0].forward()
        correct += int((solver.test_nets[0].blobs["score"].data.argmax(1) == solver.test_nets[0].blobs["label"].data).sum())
    assert 0 <= correct <= 40

    # The steps read records 16 onwards: the CLI reads the same from a copy starting at record 16.
    mnist_like.rotated_lmdb(str(folder / "train_lmdb"), str(folder / "train_from_16_lmdb"), 16)
    theirs = cli_losses(folder, folder / "train_from_16_lmdb", len(losses))
    np.testing.assert_allclose(losses, theirs, rtol=1e-4)


def test_get_solver_losses_match_swiftjit_train_from_the_first_record(lenet_files):
    solver = caffe.get_solver(str(lenet_files / "solver.prototxt"))
    losses = []
    for _ in range(8):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    np.testing.assert_allclose(losses, cli_losses(lenet_files, lenet_files / "train_lmdb", 8), rtol=1e-4)
    assert losses[-1] < losses[0]
