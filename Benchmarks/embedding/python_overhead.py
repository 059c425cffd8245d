"""What Python costs on top of the runtime: `swiftjit.Net.forward()` vs `swiftjit time`'s
"Average Forward pass" for the same net, weights and input shape, in interleaved rounds.

    python3 Benchmarks/embedding/python_overhead.py [--net squeezenet11] [--rounds 3] [--iterations 200]

Each round runs `swiftjit time` (its own process) and then, in this process, the mean of `iterations`
timed `net.forward(data=x)` calls after a warm-up; the best round of each is compared (the machine is
shared and noisy). pycaffe's `caffe.Net.forward()` is reported too: it runs the net as written with
every blob and diff kept for Python to read (no fusion, no memory reuse), so it is a different
program, not a measure of binding overhead.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWIFTJIT = os.path.join(ROOT, ".build", "release", "swiftjit")
NETS = {
    "squeezenet11": ("../shared/zoo/squeezenet_v1.1/deploy.prototxt", (1, 3, 227, 227)),
    "resnet50": ("../shared/zoo/resnet/ResNet-50-deploy.prototxt", (1, 3, 224, 224)),
}


def swiftjit_time(prototxt, weights, shape, iterations):
    output = subprocess.run([SWIFTJIT, "time", prototxt, "--weights", weights, "--iterations", str(iterations),
                             "--input", "data=" + ",".join(map(str, shape))], check=True, capture_output=True, text=True).stdout
    match = re.search(r"Average Forward pass: ([0-9.]+) ms", output)
    if not match:
        sys.exit("swiftjit time printed no 'Average Forward pass' line:\n" + output)
    return float(match.group(1))


def python_forward(net, x, iterations):
    net.forward(data=x)
    start = time.perf_counter()
    for _ in range(iterations):
        net.forward(data=x)
    return (time.perf_counter() - start) * 1000 / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=sorted(NETS), default="squeezenet11")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import caffe
    import swiftjit

    relative, shape = NETS[args.net]
    prototxt = os.path.normpath(os.path.join(ROOT, relative))
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "w.caffemodel")
        subprocess.run([SWIFTJIT, "init", prototxt, "--seed", "7", "--unfilled-weights", "msra", "-o", weights],
                       check=True, capture_output=True)
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        net = swiftjit.Net(prototxt, weights=weights, inputs={"data": shape})
        pycaffe = caffe.Net(prototxt, caffe.TEST, weights=weights)
        pycaffe.blobs["data"].reshape(*shape)
        pycaffe.reshape()
        pycaffe.blobs["data"].data[...] = x
        rows = []
        for round_ in range(args.rounds):
            cli = swiftjit_time(prototxt, weights, shape, args.iterations)
            ours = python_forward(net, x, args.iterations)
            pycaffe.forward()
            start = time.perf_counter()
            for _ in range(max(1, args.iterations // 4)):
                pycaffe.forward()
            layerwise = (time.perf_counter() - start) * 1000 / max(1, args.iterations // 4)
            rows.append((cli, ours, layerwise))
            print("round %d: swiftjit time %.3f ms, swiftjit.Net.forward %.3f ms, caffe.Net.forward %.3f ms"
                  % (round_ + 1, cli, ours, layerwise))
        cli, ours, layerwise = (min(column) for column in zip(*rows))
        isa = "AVX-512" if "avx512f" in open("/proc/cpuinfo").read() else "AVX2"
        print("%s batch %d (%s, best of %d rounds, %d iterations): swiftjit time %.3f ms, swiftjit.Net.forward %.3f ms "
              "(%+.1f%%), caffe.Net.forward %.3f ms" % (args.net, shape[0], isa, args.rounds, args.iterations, cli, ours,
                                                       (ours / cli - 1) * 100, layerwise))


if __name__ == "__main__":
    main()
