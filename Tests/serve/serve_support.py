"""Helpers for the `swiftjit serve` acceptance tests: the release binary, free ports, a bounded
`swiftjit` runner and `Server`, a running server killed on `stop`. A module of its own (not in
conftest.py) so tests can import it by a name no other test folder's conftest shadows.
"""

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


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


