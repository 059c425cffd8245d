"""caffe.Net over the C API: views, passes, structure and errors. Needs the engine's sj_net_*."""

import gc
import weakref

import numpy as np
import pytest

import caffe
import swiftjit
import nets


@pytest.fixture
def linear(write):
    return caffe.Net(write("linear.prototxt", nets.LINEAR), caffe.TEST)


def test_structure_is_reported_like_pycaffe(linear):
    assert linear._layer_names == ["data", "ip", "relu"]
    assert [layer.type for layer in linear.layers] == ["Input", "InnerProduct", "ReLU"]
    assert list(linear.blobs) == ["data", "ip"]
    assert linear.inputs == ["data"] and linear.outputs == ["ip"]
    assert list(linear.params) == ["ip"]
    assert [p.shape for p in linear.params["ip"]] == [(4, 12), (4,)]
    assert linear.top_names["relu"] == ["ip"] and linear.bottom_names["ip"] == ["data"]
    assert list(linear.blob_loss_weights.values()) == [0, 0]
    blob = linear.blobs["data"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 3, 2, 2, 24)


def test_blob_views_write_through_to_forward(linear):
    x = np.random.default_rng(1).standard_normal((2, 3, 2, 2)).astype(np.float32)
    linear.blobs["data"].data[...] = x                     # a view: no copy, no setter
    weights, bias = (p.data for p in linear.params["ip"])
    np.testing.assert_allclose(bias, 0.25)
    out = linear.forward()
    expected = np.maximum(nets.inner_product(x, weights, bias), 0)
    np.testing.assert_allclose(out["ip"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(linear.blobs["ip"].data, expected, rtol=1e-5, atol=1e-6)
    weights[...] = 0                                       # parameters are views too
    np.testing.assert_allclose(linear.forward(data=x)["ip"], np.full((2, 4), 0.25), rtol=1e-6)


def test_forward_with_start_and_end_runs_only_those_layers(linear):
    ip = linear.blobs["ip"]
    ip.data[...] = -5
    out = linear.forward(start="relu", end="relu")         # only the ReLU, in place
    assert list(out) == ["ip"]
    np.testing.assert_array_equal(ip.data, 0)
    out = linear.forward(end="ip", blobs=["data"])
    assert set(out) == {"ip", "data"}


def test_backward_with_start_and_end_matches_numpy(linear):
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 2)).astype(np.float32)
    linear.forward(data=x)
    gradient = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    linear.blobs["ip"].diff[...] = gradient
    linear.clear_param_diffs()
    diffs = linear.backward(start="ip", end="ip")          # skip the ReLU: the inner product alone
    weights = linear.params["ip"][0].data
    np.testing.assert_allclose(diffs["data"], (gradient @ weights).reshape(x.shape), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(linear.params["ip"][0].diff, gradient.T @ x.reshape(2, -1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(linear.params["ip"][1].diff, gradient.sum(0), rtol=1e-4, atol=1e-6)
    linear.clear_param_diffs()
    assert not linear.params["ip"][0].diff.any()


def test_views_keep_the_net_alive_after_it_is_deleted(linear):
    data = linear.blobs["data"].data
    weights = linear.params["ip"][0].data
    data[...] = 3
    snapshot = weights.copy()
    del linear
    gc.collect()
    np.testing.assert_array_equal(data, 3)
    np.testing.assert_array_equal(weights, snapshot)


def test_reshaping_an_input_propagates_on_forward(linear):
    linear.blobs["data"].reshape(5, 3, 2, 2)
    assert linear.blobs["data"].shape == (5, 3, 2, 2)
    out = linear.forward(data=np.ones((5, 3, 2, 2), np.float32))
    assert out["ip"].shape == (5, 4)


def test_wrong_input_shape_names_the_blob_and_both_shapes(linear):
    with pytest.raises(ValueError) as error:
        linear.forward(data=np.zeros((2, 3, 4, 4), np.float32))
    message = str(error.value)
    assert "'data'" in message and "(2, 3, 4, 4)" in message and "(2, 3, 2, 2)" in message
    assert isinstance(error.value, swiftjit.Error)


def test_wrong_dtype_and_unknown_names_are_clear_errors(linear):
    with pytest.raises(ValueError, match="dtype"):
        linear.forward(data=np.full((2, 3, 2, 2), "x"))
    with pytest.raises(KeyError, match="'image'"):
        linear.forward(image=np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(KeyError):
        linear.blobs["nope"]
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        linear.forward(start="conv9")


def test_save_and_copy_from_round_trip_the_parameters(linear, tmp_path, write):
    path = str(tmp_path / "linear.caffemodel")
    linear.params["ip"][0].data[...] = 0.5
    linear.save(path)
    other = caffe.Net(write("again.prototxt", nets.LINEAR), caffe.TEST, weights=path)
    np.testing.assert_array_equal(other.params["ip"][0].data, 0.5)
    third = caffe.Net(write("third.prototxt", nets.LINEAR), caffe.TEST)
    third.copy_from(path)
    np.testing.assert_array_equal(third.params["ip"][0].data, 0.5)
    third.share_with(linear)
    linear.params["ip"][1].data[...] = 9
    np.testing.assert_array_equal(third.params["ip"][1].data, 9)


def test_missing_files_are_reported_before_calling_the_library(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.prototxt"):
        caffe.Net(str(tmp_path / "nothing.prototxt"), caffe.TEST)


def test_the_runtime_net_is_freed_only_after_the_last_view(write):
    """A blob view keeps the C net alive (its memory stays valid); the last view lets it go."""
    net = caffe.Net(write("linear.prototxt", nets.LINEAR), caffe.TEST)
    net.blobs["data"].data[...] = 1.5
    handle = weakref.ref(net._handle)
    view = net.blobs["data"].data
    del net
    gc.collect()
    assert handle() is not None, "the net was freed while a view of its memory was alive"
    assert np.all(view == 1.5)
    del view
    gc.collect()
    assert handle() is None, "the net outlived every view of it"


def test_forward_all_batches_and_drops_the_padding(linear):
    x = np.random.default_rng(5).standard_normal((5, 3, 2, 2)).astype(np.float32)   # batch size 2: 2 + 2 + 1
    out = linear.forward_all(data=x)
    weights, bias = (p.data for p in linear.params["ip"])
    assert out["ip"].shape == (5, 4)
    np.testing.assert_allclose(out["ip"], np.maximum(nets.inner_product(x, weights, bias), 0), rtol=1e-5, atol=1e-6)
    outs, diffs = linear.forward_backward_all(data=x, ip=np.ones((5, 4), np.float32))
    assert outs["ip"].shape == (5, 4) and diffs["data"].shape == (5, 3, 2, 2)
    through_relu = (nets.inner_product(x, weights, bias) > 0).astype(np.float32)
    np.testing.assert_allclose(diffs["data"], (through_relu @ weights).reshape(x.shape), rtol=1e-4, atol=1e-5)


MEMORY_NET = """
name: "memory"
layer { name: "data" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_set_input_arrays_feeds_memory_data_batch_by_batch_and_wraps(write):
    net = caffe.Net(write("memory.prototxt", MEMORY_NET), caffe.TRAIN)
    data = np.arange(6 * 6, dtype=np.float32).reshape(6, 1, 2, 3)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.float32)
    net.set_input_arrays(data, labels)
    for batch in [0, 1, 2, 0]:  # three batches of 2, then around again, as MemoryDataLayer::Forward_cpu
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, data[2 * batch:2 * batch + 2])
        np.testing.assert_array_equal(net.blobs["label"].data.ravel(), labels[2 * batch:2 * batch + 2])
        # The loss is computed from that batch: the same batch through the same weights.
        w, b = net.params["ip"][0].data, net.params["ip"][1].data
        scores = data[2 * batch:2 * batch + 2].reshape(2, 6) @ w.T + b
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        expected = -np.mean(np.log(p[np.arange(2), labels[2 * batch:2 * batch + 2].astype(int)]))
        assert abs(float(net.blobs["loss"].data) - expected) < 1e-5


def test_set_input_arrays_checks_what_caffe_checks(write):
    net = caffe.Net(write("memory.prototxt", MEMORY_NET), caffe.TRAIN)
    good = np.zeros((4, 1, 2, 3), dtype=np.float32)
    with pytest.raises(swiftjit.errors.InvalidArgumentError, match="multiple of the batch size"):
        net.set_input_arrays(np.zeros((3, 1, 2, 3), dtype=np.float32), np.zeros(3, dtype=np.float32))
    with pytest.raises(swiftjit.errors.InvalidArgumentError, match="float32"):
        net.set_input_arrays(good.astype(np.float64), np.zeros(4, dtype=np.float32))
    with pytest.raises(swiftjit.errors.InvalidArgumentError, match="same first dimension"):
        net.set_input_arrays(good, np.zeros(2, dtype=np.float32))
    with pytest.raises(swiftjit.errors.InvalidArgumentError, match="makes"):
        net.set_input_arrays(np.zeros((4, 1, 3, 2), dtype=np.float32), np.zeros(4, dtype=np.float32))
    plain = caffe.Net(write("plain.prototxt", 'input: "x" input_shape { dim: 1 dim: 2 }\nlayer { name: "r" type: "ReLU" bottom: "x" top: "y" }'), caffe.TEST)
    with pytest.raises(swiftjit.errors.InvalidArgumentError, match="first layer is a MemoryData"):
        plain.set_input_arrays(good, np.zeros(4, dtype=np.float32))
