"""caffe solvers and the swiftjit API (sj_solver_*, sj_model_*, sj_session_*)."""

import threading

import numpy as np
import pytest

import caffe
import swiftjit
import nets


@pytest.fixture
def solver_file(write, tmp_path):
    net = write("classifier.prototxt", nets.CLASSIFIER)
    return write("solver.prototxt", """net: "%s"
        base_lr: 0.1 momentum: 0 weight_decay: 0 lr_policy: "fixed" max_iter: 20
        display: 0 snapshot_after_train: false snapshot_prefix: "%s" """ % (net, tmp_path / "snap"))


def test_apply_update_is_plain_sgd(solver_file):
    solver = caffe.SGDSolver(solver_file)
    weights = solver.net.params["ip"][0]
    weights.data[...] = 1
    weights.diff[...] = 2
    solver.apply_update()
    np.testing.assert_allclose(weights.data, 1 - 0.1 * 2, rtol=1e-6)


def test_steps_lower_the_loss_and_count_iterations(solver_file):
    solver = caffe.get_solver(solver_file)
    assert isinstance(solver, caffe.SGDSolver) and solver.iter == 0
    first = float(solver.net.forward()["loss"])
    solver.step(15)
    assert solver.iter == 15
    assert float(solver.net.forward()["loss"]) < first


def test_snapshot_writes_model_and_state(solver_file, tmp_path):
    solver = caffe.SGDSolver(solver_file)
    solver.step(2)
    model, state = solver.snapshot()
    assert model.endswith("snap_iter_2.caffemodel") and state.endswith("snap_iter_2.solverstate")
    net = caffe.Net(str(tmp_path / "classifier.prototxt"), caffe.TRAIN, weights=model)
    np.testing.assert_array_equal(net.params["ip"][0].data, solver.net.params["ip"][0].data)


def test_solver_nets_outlive_the_solver(solver_file):
    solver = caffe.SGDSolver(solver_file)
    net = solver.net
    weights = net.params["ip"][0].data
    del solver
    assert np.isfinite(weights.sum()) and net.forward()["loss"].shape == ()


def write_linear_weights(path, rng):
    """A .caffemodel for nets.LINEAR with known weights, written with caffe_pb2."""
    weights = rng.standard_normal((4, 12)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    model = caffe.proto.caffe_pb2.NetParameter(name="linear")
    layer = model.layer.add(name="ip", type="InnerProduct")
    layer.blobs.extend([caffe.io.array_to_blobproto(weights), caffe.io.array_to_blobproto(bias)])
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return weights, bias


def test_swiftjit_net_forward_matches_numpy(write, tmp_path):
    rng = np.random.default_rng(4)
    weights, bias = write_linear_weights(str(tmp_path / "linear.caffemodel"), rng)
    net = swiftjit.Net(write("linear.prototxt", nets.LINEAR), weights=str(tmp_path / "linear.caffemodel"),
                       inputs={"data": (3, 3, 2, 2)})
    assert net.inputs == {"data": (3, 3, 2, 2)} and net.outputs == {"ip": (3, 4)}
    x = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    out = net.forward(data=x)
    assert set(out) == {"ip"} and out["ip"].shape == (3, 4)
    np.testing.assert_allclose(out["ip"], np.maximum(nets.inner_product(x, weights, bias), 0), rtol=1e-5, atol=1e-5)
    again = net.forward(data=2 * x)["ip"]                    # results are copies, not the session's memory
    np.testing.assert_allclose(out["ip"], np.maximum(nets.inner_product(x, weights, bias), 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again, np.maximum(nets.inner_product(2 * x, weights, bias), 0), rtol=1e-5, atol=1e-5)


def test_swiftjit_net_reshape_changes_this_threads_session(write):
    net = swiftjit.Net(write("linear.prototxt", nets.LINEAR))
    net.reshape(data=(5, 3, 2, 2))
    assert net.forward(data=np.ones((5, 3, 2, 2), np.float32))["ip"].shape == (5, 4)
    with pytest.raises(KeyError, match="'image'"):
        net.reshape(image=(1, 3, 2, 2))


def test_swiftjit_errors_name_the_blob_and_shapes(write):
    net = swiftjit.Net(write("linear.prototxt", nets.LINEAR))
    # The library's own message, word for word what the C API returns.
    with pytest.raises(ValueError, match=r"^input 'data' has shape 1×3×2×2, but the session runs 2×3×2×2\n  hint: reshape"):
        net.forward(data=np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        net.forward(data=np.zeros((2, 3, 2, 2), np.complex64))
    with pytest.raises(KeyError, match="'pixels' is not an input of this net"):
        net.forward(data=np.zeros((2, 3, 2, 2), np.float32), pixels=np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(swiftjit.Error):
        net.forward()


def test_swiftjit_net_gives_each_thread_its_own_session(write):
    net = swiftjit.Net(write("linear.prototxt", nets.LINEAR))
    x = np.ones((2, 3, 2, 2), np.float32)
    expected = net.forward(data=x)["ip"]
    results, sessions = [], []

    def run():
        results.append(net.forward(data=x)["ip"])
        sessions.append(net._session())
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions} | {id(net._session())}) == 4
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_version_comes_from_the_library():
    version = swiftjit.__version__
    assert version.count(".") >= 2 and caffe.__version__ == version


def test_swiftjit_net_blobs_and_params(write):
    """net.params reads the weights Caffe's way; net.blobs holds the last forward's inputs and outputs."""
    net = swiftjit.Net(write("linear.prototxt", nets.LINEAR))
    assert list(net.params) == ["ip"]
    weights, bias = net.params["ip"]
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 2)).astype(np.float32)
    out = net.forward(data=x)["ip"]   # the in-place ReLU's output
    np.testing.assert_allclose(out, np.maximum(nets.inner_product(x, weights, bias), 0), rtol=1e-5, atol=1e-5)
    assert set(net.blobs) == {"data", "ip"}
    np.testing.assert_array_equal(net.blobs["data"], x)
    np.testing.assert_array_equal(net.blobs["ip"], out)
