"""Fixtures for the `swiftjit serve` acceptance tests: a model repository, a running server, helpers.

The server is the release binary (.build/release/swiftjit), started on free loopback ports with a
bounded start-up wait and killed in teardown. Every wait here is bounded in time.
"""
import os
import tempfile
from pathlib import Path
import numpy as np
import pytest

from serve_support import CONFIG, SQUEEZENET, SWIFTJIT, Server, run


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="swiftjit-serve-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def repository(workdir):
    """DIR/squeezenet/{config.pbtxt, 1/deploy.prototxt, 1/weights.caffemodel}."""
    assert SWIFTJIT.exists(), "build first: swift build -c release --product swiftjit"
    os.environ.setdefault("SWIFTJIT_CACHE_DIR", str(workdir / "kernels"))
    folder = workdir / "models" / "squeezenet"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "deploy.prototxt").write_text(SQUEEZENET.read_text())
    run("init", SQUEEZENET, "--seed", "7", "--unfilled-weights", "msra", "-o", folder / "1" / "weights.caffemodel")
    (folder / "config.pbtxt").write_text(CONFIG)
    return workdir / "models"


@pytest.fixture(scope="session")
def server(repository, workdir):
    server = Server(["--model-repository", repository, "--warmup", "--request-timeout", "3"], workdir / "server.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reference(repository, workdir):
    """`swiftjit run`'s SqueezeNet outputs for 64 random images, one run over the batch of 64."""
    rng = np.random.default_rng(12)
    images = rng.random((64, 3, 227, 227), dtype=np.float32)
    np.save(workdir / "x.npy", images)
    model = repository / "squeezenet" / "1"
    run("run", model / "deploy.prototxt", "--weights", model / "weights.caffemodel",
        "--input", f"data={workdir / 'x.npy'}", "-o", workdir / "ref.npz")
    with np.load(workdir / "ref.npz") as outputs:
        return images, outputs["prob"]
