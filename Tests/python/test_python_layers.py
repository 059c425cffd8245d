"""Python layers inside nets run by the runtime (through sj_options_set_layer_function)."""

import traceback

import numpy as np
import pytest

import caffe
import nets


def test_python_layers_forward_and_backward_inside_a_net(write):
    net = caffe.Net(write("py.prototxt", nets.WITH_PYTHON_LAYERS), caffe.TRAIN)
    affine = net.layer_dict["affine"]
    assert affine.type == "Python" and (affine.scale, affine.shift) == (3.0, -1.0)
    assert affine.phase == caffe.TRAIN
    x = np.array([[1, 2, 3], [-1, 0, 1]], np.float32)
    weights = net.params["ip"][0].data
    hidden = x @ weights.T
    out = net.forward(data=x)
    expected_affine = 3 * hidden - 1
    np.testing.assert_allclose(net.blobs["affine"].data, expected_affine, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["loss"], 0.5 * np.sum(expected_affine ** 2), rtol=1e-4)
    net.clear_param_diffs()
    diffs = net.backward()
    # d loss / d affine = affine; d affine / d ip = 3; d ip / d data = W.
    np.testing.assert_allclose(net.blobs["ip"].diff, 3 * expected_affine, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(diffs["data"], (3 * expected_affine) @ weights, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.params["ip"][0].diff, (3 * expected_affine).T @ x, rtol=1e-4, atol=1e-4)


def test_an_exception_in_forward_is_re_raised_with_its_traceback(write):
    net = caffe.Net(write("boom.prototxt", nets.FAILS_IN_FORWARD), caffe.TEST)
    with pytest.raises(ZeroDivisionError, match="always fails") as error:
        net.forward()
    frames = [frame.name for frame in traceback.extract_tb(error.value.__traceback__)]
    assert "explode_with_a_clear_message" in frames and "forward" in frames
    # the library's own diagnostic is kept as the cause
    assert error.value.__cause__ is not None
    with pytest.raises(ZeroDivisionError):   # and the net stays usable (and raises again)
        net.forward()


def test_an_exception_in_setup_comes_out_of_the_constructor(write):
    with pytest.raises(ValueError, match="bad param_str: 'seven'"):
        caffe.Net(write("setup.prototxt", nets.FAILS_IN_SETUP), caffe.TEST)


def test_a_missing_python_module_is_an_import_error(write):
    text = nets.FAILS_IN_FORWARD.replace('module: "py_layers"', 'module: "no_such_module_here"')
    with pytest.raises(ImportError, match="no_such_module_here"):
        caffe.Net(write("missing.prototxt", text), caffe.TEST)


def test_a_solvers_train_and_test_nets_get_their_own_python_layers(write, tmp_path):
    train = write("train.prototxt", nets.python_source_net(1))
    test = write("test.prototxt", nets.python_source_net(5))
    solver = caffe.SGDSolver(write("solver.prototxt", """train_net: "%s" test_net: "%s" test_iter: 1
        test_interval: 1000 base_lr: 0.01 lr_policy: "fixed" max_iter: 10 display: 0
        snapshot_prefix: "%s" """ % (train, test, tmp_path / "snap")))
    train_source = solver.net.layer_dict["data"]
    test_source = solver.test_nets[0].layer_dict["data"]
    assert train_source is not test_source
    assert (train_source.value, train_source.phase) == (1.0, caffe.TRAIN)
    assert (test_source.value, test_source.phase) == (5.0, caffe.TEST)
    np.testing.assert_array_equal(solver.test_nets[0].forward(end="ip")["ip"], 15)   # 3 inputs of 5, weights 1
    np.testing.assert_array_equal(solver.net.forward(end="ip")["ip"], 3)
    solver.step(1)                                        # runs the train net's layers
    assert solver.iter == 1
    np.testing.assert_array_equal(solver.net.blobs["data"].data, 1)
