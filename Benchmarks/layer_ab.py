#!/usr/bin/env python3
"""Per-layer A/B of swiftjit builds: each build's fastest time for every layer, interleaved.

Runs `swiftjit time NET --iterations N` in a new process per build per round, the builds taking
turns for --rounds rounds, and keeps each layer's minimum over the rounds. On a machine shared
with other people's builds a whole run is often slowed by 2x; with --iterations 1 and many rounds
the minimum is a pass that ran undisturbed, which makes per-layer differences of ~10 % visible
where compare.py's medians cannot. Each build has its own kernel cache directory.

  python3 Benchmarks/layer_ab.py --rounds 40 --iterations 1 --avx2 /tmp/swiftjit-before .build/release/swiftjit
  python3 Benchmarks/layer_ab.py --net pointwise --avx2 A B    # the 1x1 convolutions the AVX2 tile was chosen on

--avx2 runs the builds on the AVX2 path (SWIFTJIT_CPU_FEATURES=-avx512f, OPENBLAS_CORETYPE=Zen).
"""
import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# 1x1 convolutions (+ ReLU) of SqueezeNet (conv10), ResNet-50 (res2-res5) and MobileNet, batch 1.
POINTWISE = [("sq_conv10", 512, 1000, 13), ("r2_expand", 64, 256, 56), ("r4_reduce", 1024, 256, 14), ("r4_expand", 256, 1024, 14),
             ("r5_reduce", 2048, 512, 7), ("mb_pw14", 512, 512, 14), ("mb_pw7", 1024, 1024, 7), ("mb_pw112", 32, 64, 112)]


def pointwise_net(folder):
    lines = []
    for name, c, m, hw in POINTWISE:
        lines += [f'layer {{ name: "in_{name}" type: "Input" top: "in_{name}" input_param {{ shape {{ dim: 1 dim: {c} dim: {hw} dim: {hw} }} }} }}',
                  f'layer {{ name: "{name}" type: "Convolution" bottom: "in_{name}" top: "{name}" '
                  f'convolution_param {{ num_output: {m} kernel_size: 1 weight_filler {{ type: "msra" }} }} }}',
                  f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}']
    path = Path(folder) / "pointwise.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builds", nargs="+", help="swiftjit binaries")
    parser.add_argument("--net", default="pointwise", help="a prototxt, or 'pointwise' for the built-in 1x1 layers")
    parser.add_argument("--input", action="append", default=[], help="NAME=d0,d1,... passed to swiftjit time")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--avx2", action="store_true")
    parser.add_argument("--min-ms", type=float, default=0.05, help="leave out layers faster than this in every build")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftjit-layer-ab-") as folder:
        net = pointwise_net(folder) if args.net == "pointwise" else Path(args.net)
        env = dict(os.environ)
        if args.avx2:
            env.update(SWIFTJIT_CPU_FEATURES="-avx512f", OPENBLAS_CORETYPE="Zen")
        caches = [tempfile.mkdtemp(dir=folder) for _ in args.builds]
        best, order = [{} for _ in args.builds], []
        for _ in range(args.rounds):
            for i, build in enumerate(args.builds):
                command = [build, "time", str(net), "--iterations", str(args.iterations)] + [f"--input={x}" for x in args.input]
                out = subprocess.run(command, env=dict(env, SWIFTJIT_CACHE_DIR=caches[i]), capture_output=True, text=True, check=True).stdout
                for name, ms in re.findall(r"^(\S+)\s+forward:\s+([0-9.]+) ms", out, re.M):
                    if name not in order:
                        order.append(name)
                    best[i][name] = min(best[i].get(name, float("inf")), float(ms))
    print("layer".ljust(28) + "".join(f"{'build ' + str(i + 1):>10}" for i in range(len(args.builds))) + ("   1/2" if len(args.builds) == 2 else ""))
    for name in order:
        times = [b.get(name, 0) for b in best]
        if max(times) >= args.min_ms:
            print(name.ljust(28) + "".join(f"{t:10.3f}" for t in times) + (f"   {times[0] / times[1]:.2f}x" if len(times) == 2 and times[1] else ""))
    print("sum of minima".ljust(28) + "".join(f"{sum(b.values()):10.3f}" for b in best))


if __name__ == "__main__":
    main()
