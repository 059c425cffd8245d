"""`swiftjit serve` against the real tritonclient[http] (PyPI), on loopback only.

Acceptance for issue 12: health, metadata and configuration through tritonclient; inference with
binary and JSON tensors equal to `swiftjit run`; 64 concurrent requests batched; bad requests never
take the server down; reload under load fails nothing; SIGTERM answers in-flight requests and exits 0.
"""
import http.client
import json
import signal
import socket
import struct
import threading
import time

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serve_support import Server


def close(actual, expected):
    # 1e-5 relative, against the magnitude of the reference (softmax outputs reach ~1e-6 per class).
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def infer(client, image, binary=True, model="squeezenet"):
    tensor = triton.InferInput("data", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image, binary_data=binary)
    outputs = [triton.InferRequestedOutput("prob", binary_data=binary)]
    return client.infer(model, [tensor], outputs=outputs, request_id="req-7").as_numpy("prob")


def post(server, path, body, headers=None, timeout=30):
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def binary_request(image, declared=None, extra=b""):
    raw = image.astype(np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "data", "shape": list(image.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": declared if declared is not None else len(raw)}}],
                         "outputs": [{"name": "prob", "parameters": {"binary_data": True}}]}).encode()
    return header + raw + extra, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def test_health_metadata_and_config(server):
    client = triton.InferenceServerClient(server.url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("squeezenet")
    assert client.is_model_ready("squeezenet", "1")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "swiftjit" and "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata("squeezenet")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "data", "datatype": "FP32", "shape": [-1, 3, 227, 227]}]
    assert model["outputs"][0]["name"] == "prob" and model["outputs"][0]["shape"][:2] == [-1, 1000]
    config = client.get_model_config("squeezenet")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [3, 227, 227]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    assert "model_warmup is not supported" in server.output()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_swiftjit_run(server, reference, binary):
    images, expected = reference
    client = triton.InferenceServerClient(server.url)
    close(infer(client, images[:1], binary=binary), expected[:1])
    close(infer(client, images[1:4], binary=binary), expected[1:4])


def test_64_concurrent_requests_are_batched(server, reference):
    images, expected = reference
    count_before = server.metric("nv_inference_count")
    exec_before = server.metric("nv_inference_exec_count")
    # One thread and client per request (tritonclient's gevent async_infer sends them one after another).
    InFlight(server, images, 64).check(expected)
    count = server.metric("nv_inference_count") - count_before
    executions = server.metric("nv_inference_exec_count") - exec_before
    assert count == 64
    assert executions < count, f"{executions} executions for {count} inferences: nothing was batched"
    assert server.metric("nv_inference_request_success") >= 64
    assert server.metric("nv_inference_compute_infer_duration_us") > 0
    assert "nv_inference_queue_duration_us" in server.metrics()
    assert "nv_inference_pending_request_count" in server.metrics()


def json_request(inputs, outputs=None):
    body = {"inputs": inputs}
    if outputs:
        body["outputs"] = outputs
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


PIXELS = 3 * 227 * 227
BAD_REQUESTS = {  # name: (image → (body, headers), status, phrase in the error)
    "wrong shape": (lambda image: json_request([{"name": "data", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": [0.0] * (3 * 224 * 224)}]),
                    400, "input 'data': expected shape [-1,3,227,227], got [1,3,224,224]"),
    "wrong datatype": (lambda image: json_request([{"name": "data", "shape": [1, 3, 227, 227], "datatype": "BYTES", "data": ["x"] * PIXELS}]),
                       400, "BYTES"),
    "lossy datatype": (lambda image: json_request([{"name": "data", "shape": [1, 3, 227, 227], "datatype": "INT64", "data": [2 ** 40 + 1] * PIXELS}]),
                       400, "cannot be converted to FP32 without loss"),
    "unknown input": (lambda image: json_request([{"name": "image", "shape": [1], "datatype": "FP32", "data": [0]}]),
                      400, "has no input 'image'"),
    "unknown output": (lambda image: json_request([{"name": "data", "shape": [1, 3, 227, 227], "datatype": "FP32", "data": image.ravel().tolist()}],
                                                  [{"name": "fc9"}]), 400, "has no output 'fc9'"),
    "malformed JSON": (lambda image: (b'{"inputs": [{"name": "data", "shape": [1, 3', {}), 400, "not valid JSON"),
    "binary shorter than declared": (lambda image: (binary_request(image)[0][:-1000], binary_request(image)[1]), 400, "only 617348 remain"),
    "binary longer than declared": (lambda image: binary_request(image, extra=b"\0" * 16), 400, "bytes after the JSON header"),
    "terabytes declared": (lambda image: binary_request(image, declared=4 * 10 ** 12), 400, "binary_data_size is 4000000000000 bytes"),
    "header length past the body": (lambda image: (binary_request(image)[0], {"Inference-Header-Content-Length": str(10 ** 12)}),
                                    400, "Inference-Header-Content-Length is 1000000000000"),
    "batch past max_batch_size": (lambda image: binary_request(np.zeros((9, 3, 227, 227), np.float32)), 400, "max_batch_size"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_refused_and_the_next_succeeds(server, reference, case):
    images, expected = reference
    make, status, phrase = BAD_REQUESTS[case]
    body, headers = make(images[:1])
    code, text = post(server, "/v2/models/squeezenet/infer", body, headers)
    assert code == status, text
    assert phrase in json.loads(text)["error"]
    assert "model 'squeezenet'" in json.loads(text)["error"]
    close(infer(triton.InferenceServerClient(server.url), images[:1]), expected[:1])


def test_unknown_model_is_404(server):
    code, text = post(server, "/v2/models/resnet/infer", b"{}")
    assert code == 404 and "unknown model 'resnet'" in json.loads(text)["error"]
    client = triton.InferenceServerClient(server.url)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("resnet")
    with pytest.raises(InferenceServerException, match="no model 'resnet'"):
        client.load_model("resnet")
    assert client.is_server_ready(), "a failed load of a model the repository does not have must not unready the server"
    code, text = post(server, "/v2/models/squeezenet/versions/2/infer", b"{}")
    assert code == 404 and "no version '2'" in json.loads(text)["error"]


def test_terabyte_content_length_is_refused_at_once(server, reference):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"POST /v2/models/squeezenet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000000000\r\n\r\n{")
        reply = s.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "Content-Length" in reply
    images, expected = reference
    close(infer(triton.InferenceServerClient(server.url), images[:1]), expected[:1])


@pytest.mark.parametrize("drip", [False, True], ids=["stalled", "dripping"])
def test_slow_client_is_cut_off(server, reference, drip):
    """A body that never finishes, stalled or dripping: 408 naming the problem after --request-timeout (3 s), connection closed."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as s:
        s.sendall(b"POST /v2/models/squeezenet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inputs\"")
        reply = b""
        for _ in range(40):  # at most ~20 s
            if drip:
                try:
                    s.sendall(b" ")
                except OSError:
                    break
            s.settimeout(0.5)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            reply += chunk
            if b"\r\n\r\n" in reply:
                break
    elapsed = time.monotonic() - start
    assert 2.5 < elapsed < 15
    assert reply.startswith(b"HTTP/1.1 408") and b"had not fully arrived after 3" in reply, reply
    images, expected = reference
    close(infer(triton.InferenceServerClient(server.url), images[:1]), expected[:1])


def test_load_with_a_configuration_override_is_refused_clearly(server):
    client = triton.InferenceServerClient(server.url)
    with pytest.raises(InferenceServerException, match="load parameter 'config' is not supported"):
        client.load_model("squeezenet", config=json.dumps({"max_batch_size": 4}))
    assert client.is_model_ready("squeezenet")


def test_repository_index_and_reload_under_load(server, reference):
    images, expected = reference
    client = triton.InferenceServerClient(server.url)
    assert client.get_model_repository_index() == [{"name": "squeezenet", "version": "1", "state": "READY", "reason": ""}]
    failures, answered, stop = [], [0], threading.Event()

    def load():
        own = triton.InferenceServerClient(server.url)
        for i in range(400):
            if stop.is_set():
                return
            try:
                close(infer(own, images[i % 8:i % 8 + 1]), expected[i % 8:i % 8 + 1])
                answered[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is the finding
                failures.append(repr(error))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        for _ in range(2):
            client.load_model("squeezenet")  # replace the running version: in-flight requests finish on the old one
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not failures, failures[:3]
    assert answered[0] > 0
    assert client.is_model_ready("squeezenet")


def test_reload_while_a_request_is_still_uploading(server, reference):
    """The request was given the old version before the swap: it finishes on it, not with a 503."""
    images, expected = reference
    body, headers = binary_request(images[:1])
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"POST /v2/models/squeezenet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode())
        s.sendall(body[:len(body) // 2])
        time.sleep(0.2)
        started = time.monotonic()
        triton.InferenceServerClient(server.url).load_model("squeezenet")
        assert time.monotonic() - started < 2.5, "the reload took longer than the server's --request-timeout allows this test"
        s.sendall(body[len(body) // 2:])
        response = http.client.HTTPResponse(s)
        response.begin()
        payload = response.read()
    assert response.status == 200, payload
    length = int(response.getheader("Inference-Header-Content-Length"))
    prob = np.frombuffer(payload[length:], dtype=np.float32).reshape(expected[:1].shape)
    close(prob, expected[:1])


class InFlight:
    """`count` batch-1 requests sent at once from their own threads (each with its own client)."""

    def __init__(self, server, images, count):
        self.results, self.errors = {}, []
        self.threads = [threading.Thread(target=self.send, args=(server, images, i)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def send(self, server, images, i):
        try:
            self.results[i] = infer(triton.InferenceServerClient(server.url, network_timeout=300), images[i:i + 1])
        except Exception as error:  # noqa: BLE001 - every failure is the finding
            self.errors.append(repr(error))

    def wait_pending(self, server, at_least, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.metric("nv_inference_pending_request_count") >= at_least:
                return True
            time.sleep(0.005)
        return False

    def check(self, expected):
        for thread in self.threads:
            thread.join(timeout=300)
        assert not self.errors, self.errors[:3]
        assert len(self.results) == len(self.threads)
        for i, prob in self.results.items():
            close(prob, expected[i:i + 1])


class Uploaded:
    """`count` requests of `rows` images each, sent at once over raw HTTP from their own threads;
    `wait_sent` returns once every body has been written, so all of them are in the server's hands."""

    def __init__(self, server, images, count, rows=8):
        self.results, self.errors, self.sent, self.lock = {}, [], 0, threading.Lock()
        self.threads = [threading.Thread(target=self.send, args=(server, images, i, rows)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def send(self, server, images, i, rows):
        start = i % (len(images) - rows + 1)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
            body, headers = binary_request(images[start:start + rows])
            connection.request("POST", "/v2/models/squeezenet/infer", body=body, headers=headers)
            with self.lock:
                self.sent += 1
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise AssertionError(f"{response.status}: {payload[:300]}")
            length = int(response.getheader("Inference-Header-Content-Length"))
            self.results[i] = (start, np.frombuffer(payload[length:], dtype=np.float32).reshape(rows, 1000, 1, 1))
        except Exception as error:  # noqa: BLE001 - every failure is the finding
            self.errors.append(repr(error))

    def wait_sent(self, timeout=60):
        deadline = time.monotonic() + timeout
        while self.sent < len(self.threads) and time.monotonic() < deadline and not self.errors:
            time.sleep(0.002)
        return self.sent == len(self.threads)

    def check(self, expected):
        for thread in self.threads:
            thread.join(timeout=300)
        assert not self.errors, self.errors[:3]
        assert len(self.results) == len(self.threads)
        for start, prob in self.results.values():
            close(prob, expected[start:start + len(prob)])


def test_unload_lets_in_flight_requests_finish(server, reference):
    images, expected = reference
    client = triton.InferenceServerClient(server.url)
    requests = Uploaded(server, images, 24)   # 192 images: about a second of work
    assert requests.wait_sent(), requests.errors[:3]
    client.unload_model("squeezenet")
    requests.check(expected)
    assert not client.is_model_ready("squeezenet")
    with pytest.raises(InferenceServerException, match="squeezenet"):
        infer(client, images[:1])
    client.load_model("squeezenet")
    close(infer(client, images[:1]), expected[:1])


def test_sigterm_answers_in_flight_requests_and_exits_zero(repository, reference, workdir):
    """Also the one-net form: `swiftjit serve NET.prototxt --weights W --name NAME --config C`."""
    images, expected = reference
    model = repository / "squeezenet"
    server = Server([model / "1" / "deploy.prototxt", "--weights", model / "1" / "weights.caffemodel", "--name", "squeezenet",
                     "--config", model / "config.pbtxt", "--warmup"], workdir / "sigterm.log")
    try:
        server.wait_ready()
        assert triton.InferenceServerClient(server.url).get_model_config("squeezenet")["max_batch_size"] == 8
        requests = Uploaded(server, images, 24)
        assert requests.wait_sent(), requests.errors[:3]
        time.sleep(0.05)   # every request read by the server, none answered yet
        assert server.metric("nv_inference_pending_request_count") > 0
        server.process.send_signal(signal.SIGTERM)
        requests.check(expected)
        assert server.process.wait(timeout=60) == 0, server.output()
    finally:
        server.stop()
