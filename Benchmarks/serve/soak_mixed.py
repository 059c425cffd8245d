#!/usr/bin/env python3
"""Soak `swiftjit serve` with good and bad requests mixed, at concurrency 16 (issue 12's soak).

Starts the server on SqueezeNet 1.1 (seeded weights, max_batch_size 8) on free loopback ports. Each of
--concurrency threads loops for --seconds: three good batch-1 requests through tritonclient (binary
tensors; each output checked against the first answer for the same image), then one bad request over
raw HTTP, in turn: a wrong shape, a wrong datatype, an unknown input, malformed JSON, a binary body
shorter and one longer than its header declares, a declared size of terabytes, an unknown model.
The server's RSS is sampled every second. Reports the good requests that failed or came back wrong
(must be 0), the status codes the bad ones got (each must be a 4xx), and RSS after the warm-up
(--warmup-seconds) against the end (growth must stay under 10 %). Exit status 1 when any of that fails.

    python3 Benchmarks/serve/soak_mixed.py --seconds 600
"""
import argparse
import http.client
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import tritonclient.http as triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import CONFIG, NETS, SWIFTJIT, free_port, rss_kib, wait_ready  # noqa: E402

SHAPE = [3, 227, 227]


def bad_requests(model):
    """(label, path, headers, body) of each kind of bad request, in turn."""
    header = json.dumps({"inputs": [{"name": "data", "shape": [1] + SHAPE, "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * 3 * 227 * 227}}]}).encode()
    values = np.zeros([1] + SHAPE, np.float32).tobytes()

    def tensor(name="data", shape=None, datatype="FP32", data=None):
        shape = shape or [1] + SHAPE
        return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                       "data": data if data is not None else [0.0] * int(np.prod(shape))}]}).encode()
    infer = f"/v2/models/{model}/infer"
    binary = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return [
        ("wrong shape", infer, {}, tensor(shape=[1, 3, 8, 8])),
        ("wrong datatype", infer, {}, tensor(shape=[1, 1], datatype="BYTES", data=["x"])),
        ("unknown input", infer, {}, tensor(name="pixels")),
        ("malformed JSON", infer, {}, b'{"inputs": [ {"name": "data", '),
        ("binary body short", infer, binary, header + values[: len(values) // 2]),
        ("binary body long", infer, binary, header + values + b"\0" * 64),
        ("terabytes declared", infer, {"Inference-Header-Content-Length": str(len(header))},
         json.dumps({"inputs": [{"name": "data", "shape": [1 << 40, 3, 227, 227], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 1 << 42}}]}).encode()),
        ("unknown model", "/v2/models/no_such_model/infer", {}, tensor()),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup-seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    prototxt = NETS["squeezenet11"][0]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = folder / "squeezenet" / "1"
        model.mkdir(parents=True)
        (model / "deploy.prototxt").write_text(prototxt.read_text())
        subprocess.run([str(SWIFTJIT), "init", str(prototxt), "--seed", "7", "--unfilled-weights", "msra",
                        "-o", str(model / "w.caffemodel")], check=True, capture_output=True)
        (folder / "squeezenet" / "config.pbtxt").write_text(CONFIG.format(max_batch=8, delay=2000, dims=SHAPE))
        port, metrics_port = free_port(), free_port()
        log = open(folder / "server.log", "w")
        server = subprocess.Popen([str(SWIFTJIT), "serve", "--model-repository", str(folder), "--warmup", "--http-port", str(port),
                                   "--metrics-port", str(metrics_port)], stdout=log, stderr=subprocess.STDOUT)
        url = f"127.0.0.1:{port}"
        try:
            client = triton.InferenceServerClient(url)
            wait_ready(client, 900)
            images = [np.random.default_rng(k).random([1] + SHAPE, dtype=np.float32) for k in range(4)]
            expected = []
            for image in images:
                tensor = triton.InferInput("data", [1] + SHAPE, "FP32")
                tensor.set_data_from_numpy(image)
                expected.append(client.infer("squeezenet", [tensor]).as_numpy("prob"))
            bad = bad_requests("squeezenet")
            lock = threading.Lock()
            good, failed, codes = [0], [], Counter()
            stop = time.monotonic() + args.seconds

            def worker(index):
                mine = triton.InferenceServerClient(url, network_timeout=120)
                turn = index
                while time.monotonic() < stop:
                    for k in range(3):
                        which = (turn + k) % len(images)
                        tensor = triton.InferInput("data", [1] + SHAPE, "FP32")
                        tensor.set_data_from_numpy(images[which])
                        try:
                            out = mine.infer("squeezenet", [tensor]).as_numpy("prob")
                            ok = out is not None and np.array_equal(out, expected[which])
                        except Exception as error:  # noqa: BLE001 - a failed good request is the finding
                            ok, out = False, error
                        with lock:
                            good[0] += 1
                            if not ok:
                                failed.append(repr(out)[:200])
                    label, path, headers, body = bad[turn % len(bad)]
                    turn += 1
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    try:
                        connection.request("POST", path, body=body, headers={"Content-Length": str(len(body)), **headers})
                        status = connection.getresponse().status
                    except Exception as error:  # noqa: BLE001 - a closed connection is an answer too
                        status = type(error).__name__
                    finally:
                        connection.close()
                    with lock:
                        codes[(label, status)] += 1
                mine.close()

            rss = []
            sampler_stop = threading.Event()

            def sample():
                while not sampler_stop.is_set():
                    rss.append((time.monotonic(), rss_kib(server.pid)))
                    sampler_stop.wait(1)
            began = time.monotonic()
            sampler = threading.Thread(target=sample)
            sampler.start()
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=args.seconds + 300)
            sampler_stop.set()
            sampler.join()
            after_warmup = next(kib for t, kib in rss if t - began >= args.warmup_seconds)
            last, peak = rss[-1][1], max(kib for _, kib in rss)
            growth = (last - after_warmup) / after_warmup * 100
            print(f"soak {args.seconds:.0f} s at concurrency {args.concurrency}: {good[0]} good requests, {len(failed)} failed or wrong; "
                  f"{sum(codes.values())} bad requests")
            for (label, status), count in sorted(codes.items(), key=str):
                print(f"  {label}: {status} x {count}")
            print(f"RSS after {args.warmup_seconds:.0f} s warm-up {after_warmup / 1024:.1f} MiB, at the end {last / 1024:.1f} MiB "
                  f"({growth:+.1f} %), peak {peak / 1024:.1f} MiB")
            for failure in failed[:5]:
                print("  failed:", failure)
            bad_answers = [key for key in codes if not (isinstance(key[1], int) and 400 <= key[1] < 500)]
            ok = not failed and not bad_answers and growth < 10 and server.poll() is None
            print("PASS" if ok else f"FAIL (non-4xx answers: {bad_answers})")
            return 0 if ok else 1
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
            log.close()


if __name__ == "__main__":
    sys.exit(main())
