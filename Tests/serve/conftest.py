"""Fixtures for the `swiftjit serve` acceptance tests: a model repository, a running server, helpers.

The server is the release binary (.build/release/swiftjit), started on free loopback ports with a
bounded start-up wait and killed in teardown. Every wait here is bounded in time.
"""
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SWIFTJIT = ROOT / ".build" / "release" / "swiftjit"
ZOO = ROOT.parent / "shared" / "zoo"
SQUEEZENET = ZOO / "squeezenet_v1.1" / "deploy.prototxt"
START_TIMEOUT = 600  # seconds: a cold kernel cache compiles SqueezeNet at four batch sizes

CONFIG = """
max_batch_size: 8
dynamic_batching { preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 5000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
input [ { name: "data" data_type: TYPE_FP32 dims: [ 3, 227, 227 ] } ]
model_warmup [ ]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, timeout=600):
    result = subprocess.run([str(SWIFTJIT), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


class Server:
    """One `swiftjit serve` process on free ports."""

    def __init__(self, args, log_path):
        self.http_port, self.metrics_port = free_port(), free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(SWIFTJIT), "serve", *map(str, args), "--http-port", str(self.http_port),
             "--metrics-port", str(self.metrics_port), "--host", "127.0.0.1"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited: {self.output()}"
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout} s: {self.output()}")

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return response.read().decode()

    def metric(self, name, model="squeezenet"):
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") and f'model="{model}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def output(self):
        self.log.flush()
        return Path(self.log_path).read_text()[-4000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()


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
