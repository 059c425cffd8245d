#!/usr/bin/env python3
"""Load generator for `swiftjit serve`, over the real tritonclient[http] (PyPI).

For each net (SqueezeNet 1.1, ResNet-50): builds a one-model repository under a temporary folder
(zoo prototxt from ../shared/zoo, weights from `swiftjit init NET --seed 7 --unfilled-weights msra`),
starts `swiftjit serve --warmup` on free loopback ports, and at concurrency 1, 4, 16, 64 sends
batch-1 requests (binary tensors, what tritonclient sends by default) for --seconds each, reporting
throughput and p50/p90/p99 latency and the batch sizes the batcher formed (from /metrics). Then
`swiftjit time` runs in-process at those batch sizes, and a soak holds concurrency 16 for
--soak-seconds while sampling the server's RSS every second.

    python3 Benchmarks/serve/load.py --markdown BENCHMARKS.md           # full run (10 s per level, 300 s soak)
    python3 Benchmarks/serve/load.py --seconds 5 --soak-seconds 60      # shorter
"""
import argparse
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as triton

ROOT = Path(__file__).resolve().parents[2]
SWIFTJIT = ROOT / ".build" / "release" / "swiftjit"
ZOO = ROOT.parent / "shared" / "zoo"
NETS = {
    "squeezenet11": (ZOO / "squeezenet_v1.1" / "deploy.prototxt", [3, 227, 227], "prob"),
    "resnet50": (ZOO / "resnet" / "ResNet-50-deploy.prototxt", [3, 224, 224], "prob"),
}
CONFIG = """max_batch_size: {max_batch}
dynamic_batching {{ max_queue_delay_microseconds: {delay} }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
input [ {{ name: "data" data_type: TYPE_FP32 dims: {dims} }} ]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port, model):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r'(\w+)\{(.*)\} (\S+)', line)
        if match and f'model="{model}"' in match.group(2):
            values[match.group(1)] = values.get(match.group(1), 0) + float(match.group(3))
    return values


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_ready(client, seconds):
    """Polls the server's readiness (it compiles every batch size under --warmup first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if client.is_server_ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    sys.exit(f"the server was not ready after {seconds} s")


def drive(url, model, shape, concurrency, seconds, output):
    """`concurrency` threads, each with its own client, sending batch-1 requests back to back."""
    latencies, errors, stop = [], [0], time.monotonic() + seconds
    lock = threading.Lock()
    image = np.random.default_rng(1).random([1] + shape, dtype=np.float32)

    def worker():
        client = triton.InferenceServerClient(url, network_timeout=300)
        tensor = triton.InferInput("data", [1] + shape, "FP32")
        tensor.set_data_from_numpy(image)
        wanted = [triton.InferRequestedOutput(output)]
        mine = []
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                client.infer(model, [tensor], outputs=wanted)
                mine.append(time.perf_counter() - start)
            except Exception:  # noqa: BLE001 - counted, reported
                with lock:
                    errors[0] += 1
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 600)
    elapsed = time.monotonic() - began
    ms = sorted(x * 1000 for x in latencies)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")  # noqa: E731
    return {"requests": len(ms), "errors": errors[0], "throughput": len(ms) / elapsed,
            "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99)}


def nearest_size(mean, max_batch):
    """The batch size the batcher forms (powers of two and the maximum) nearest a measured mean."""
    sizes = sorted({2 ** k for k in range(max_batch.bit_length()) if 2 ** k <= max_batch} | {max_batch})
    return min(sizes, key=lambda size: abs(size - mean)) if mean == mean else 1


def time_in_process(prototxt, shape, batch):
    out = subprocess.run([str(SWIFTJIT), "time", str(prototxt), "--input", "data=" + ",".join(map(str, [batch] + shape)),
                          "--iterations", "10"], capture_output=True, text=True, timeout=900)
    match = re.search(r"[Aa]verage (?:Forward pass|forward)[^:]*:\s*([\d.]+)\s*ms", out.stdout) or \
        re.search(r"([\d.]+)\s*ms", out.stdout.splitlines()[-1] if out.stdout else "")
    return float(match.group(1)) if match else float("nan")


def bench(name, args, folder, rows):
    prototxt, shape, output = NETS[name]
    model = folder / name
    (model / "1").mkdir(parents=True)
    (model / "1" / "deploy.prototxt").write_text(prototxt.read_text())
    subprocess.run([str(SWIFTJIT), "init", str(prototxt), "--seed", "7", "--unfilled-weights", "msra",
                    "-o", str(model / "1" / "w.caffemodel")], check=True, capture_output=True, timeout=900)
    (model / "config.pbtxt").write_text(CONFIG.format(max_batch=args.max_batch, delay=args.delay, dims=shape))
    http_port, metrics_port = free_port(), free_port()
    log = open(folder / f"{name}.log", "w")
    server = subprocess.Popen([str(SWIFTJIT), "serve", "--model-repository", str(folder), "--warmup",
                               "--http-port", str(http_port), "--metrics-port", str(metrics_port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{http_port}"
    try:
        wait_ready(triton.InferenceServerClient(url), 900)
        for concurrency in (1, 4, 16, 64):
            before = metrics(metrics_port, name)
            result = drive(url, name, shape, concurrency, args.seconds, output)
            after = metrics(metrics_port, name)
            inferences = after.get("nv_inference_count", 0) - before.get("nv_inference_count", 0)
            executions = after.get("nv_inference_exec_count", 0) - before.get("nv_inference_exec_count", 0)
            result["batch"] = inferences / executions if executions else float("nan")
            served = after.get("nv_inference_request_success", 0) - before.get("nv_inference_request_success", 0)
            for key, metric in (("server_ms", "nv_inference_request_duration_us"), ("queue_ms", "nv_inference_queue_duration_us"),
                                ("compute_ms", "nv_inference_compute_infer_duration_us")):
                result[key] = (after.get(metric, 0) - before.get(metric, 0)) / 1000 / served if served else float("nan")
            rows.append((name, concurrency, result))
            print(f"{name} c={concurrency}: {result['throughput']:.1f} req/s, p50 {result['p50']:.1f} ms, p90 {result['p90']:.1f} ms, "
                  f"p99 {result['p99']:.1f} ms, mean batch {result['batch']:.2f}, errors {result['errors']}; server per request: "
                  f"{result['server_ms']:.1f} ms total, {result['queue_ms']:.1f} queued, {result['compute_ms']:.1f} in its batch's forward", flush=True)
        soak = []
        if args.soak_seconds > 0:
            sampler_stop = threading.Event()

            def sample():
                while not sampler_stop.is_set():
                    soak.append(rss_kib(server.pid))
                    sampler_stop.wait(1)
            sampler = threading.Thread(target=sample)
            sampler.start()
            soak_result = drive(url, name, shape, 16, args.soak_seconds, output)
            sampler_stop.set()
            sampler.join()
            print(f"{name} soak {args.soak_seconds} s at c=16: {soak_result['requests']} requests, {soak_result['errors']} errors, "
                  f"RSS first/last/max {soak[0] // 1024}/{soak[-1] // 1024}/{max(soak) // 1024} MiB", flush=True)
        return soak
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default="squeezenet11,resnet50")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--soak-seconds", type=float, default=300)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--delay", type=int, default=2000, help="max_queue_delay_microseconds")
    parser.add_argument("--markdown", help="append a results section to this file")
    args = parser.parse_args()
    os.environ.setdefault("SWIFTJIT_CACHE_DIR", tempfile.mkdtemp(prefix="swiftjit-serve-bench-kernels-"))
    rows, soaks, timings = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="swiftjit-serve-bench-") as tmp:
        for name in args.nets.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            soaks[name] = bench(name, args, folder, rows)
            batches = sorted({nearest_size(r["batch"], args.max_batch) for n, _, r in rows if n == name})
            timings[name] = {b: time_in_process(NETS[name][0], NETS[name][1], b) for b in batches}
            print(f"{name} swiftjit time: " + ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in timings[name].items()), flush=True)
    avx512 = int(subprocess.run("grep -c avx512f /proc/cpuinfo", shell=True, capture_output=True, text=True).stdout.strip() or 0)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    lines = ["\n## swiftjit serve — tritonclient load, dynamic batching (Benchmarks/serve/load.py)\n",
             f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {os.cpu_count()} cores, ISA {'AVX-512' if avx512 else 'AVX2'} "
             f"(`grep -c avx512f /proc/cpuinfo` → {avx512}), {platform.platform()}; max_batch_size {args.max_batch}, "
             f"max_queue_delay_microseconds {args.delay}, one instance, batch-1 binary requests, {args.seconds:g} s per level; "
             f"client and server share the cores. Reproduce: `python3 Benchmarks/serve/load.py --seconds {args.seconds:g} --soak-seconds {args.soak_seconds:g}`.\n",
             "| net | concurrency | req/s | p50 ms | p90 ms | p99 ms | mean batch formed | errors | server ms per request (queued / batch forward) | `swiftjit time` ms at that batch (per image) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, concurrency, r in rows:
        b = nearest_size(r["batch"], args.max_batch)
        t = timings.get(name, {}).get(b, float("nan"))
        lines.append(f"| {name} | {concurrency} | {r['throughput']:.1f} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
                     f"{r['batch']:.2f} | {r['errors']} | {r['server_ms']:.1f} ({r['queue_ms']:.1f} / {r['compute_ms']:.1f}) | {t:.2f} at {b} ({t / b:.2f}) |")
    for name, soak in soaks.items():
        if soak:
            lines.append(f"\nSoak, {name}: {args.soak_seconds:g} s at concurrency 16, server RSS first/last/max "
                         f"{soak[0] // 1024}/{soak[-1] // 1024}/{max(soak) // 1024} MiB ({len(soak)} samples).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
