#!/usr/bin/env python3
"""Forward-pass benchmark: swiftjit vs OpenCV DNN vs ONNX Runtime, side by side, in one run.

For each net and batch size: seeded random weights (swiftjit init --batchnorm unit), the same net
exported to ONNX (swiftjit export --onnx), then each runtime in its own process with 2 threads,
timed over --iterations passes after a warm-up. Reports ms/batch (median), each peer's ratio to
swiftjit, peak RSS per process, and load/compile time. Results go to stdout and, with --markdown,
to a file (BENCHMARKS.md) with the machine described.

  python3 Benchmarks/compare.py --iterations 10 --markdown BENCHMARKS.md
  python3 Benchmarks/compare.py --nets resnet50 --batches 1
Needs: .build/release/swiftjit (swift build -c release --product swiftjit), pip opencv-python-headless<5, onnxruntime.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT.parent / "shared" / "zoo"
SWIFTJIT = Path(os.environ.get("SWIFTJIT", ROOT / ".build" / "release" / "swiftjit"))
PEERS = ROOT / "Benchmarks" / "peers.py"

NETS = {
    "caffenet": ("bvlc_reference_caffenet/deploy.prototxt", {"data": (3, 227, 227)}),
    "googlenet": ("bvlc_googlenet/deploy.prototxt", {"data": (3, 224, 224)}),
    "resnet50": ("resnet/ResNet-50-deploy.prototxt", {"data": (3, 224, 224)}),
    "squeezenet11": ("squeezenet_v1.1/deploy.prototxt", {"data": (3, 227, 227)}),
    "mobilenet": ("mobilenet/mobilenet_deploy.prototxt", {"data": (3, 224, 224)}),
    "fast_rcnn_vgg16": ("faster_rcnn/VGG16/fast_rcnn/test.prototxt", {"data": (3, 224, 224), "rois": (5,)}),
}


def run_with_rss(command):
    """Runs `command` in its own process and returns (stdout, stderr, code, peak RSS MiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), process.returncode, usage.ru_maxrss / 1024


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}"


def shape_args(inputs, batch):
    args = []
    for name, rest in inputs.items():
        shape = (batch * 4, 5) if name == "rois" else (batch, *rest)
        args += ["--input", f"{name}={','.join(map(str, shape))}"]
    return args


def bench(name, batch, iterations, workdir):
    prototxt, inputs = NETS[name]
    prototxt = ZOO / prototxt
    shapes = shape_args(inputs, batch)
    weights = workdir / f"{name}.caffemodel"
    if not weights.exists():
        subprocess.run([SWIFTJIT, "init", prototxt, "--seed", "1", "--batchnorm", "unit", "-o", weights, *shape_args(inputs, 1)],
                       check=True, capture_output=True)
    row = {"net": name, "batch": batch}
    out, err, code, rss = run_with_rss([str(SWIFTJIT), "time", str(prototxt), "--weights", str(weights), *shapes,
                                        "--iterations", str(iterations)])
    if code == 0:
        row["swiftjit_ms"] = float(re.search(r"Average Forward pass: ([0-9.]+) ms", out).group(1))
        row["swiftjit_compile_s"] = float(re.search(r"compile: ([0-9.]+) s", out).group(1))
        row["swiftjit_rss"] = rss
    else:
        row["swiftjit_error"] = err.strip().splitlines()[0] if err.strip() else f"exit {code}"
    out, err, code, rss = run_with_rss([sys.executable, str(PEERS), "opencv", str(prototxt), str(weights), *shapes,
                                        "--iterations", str(iterations), "--threads", "2"])
    if code == 0:
        result = json.loads(out)
        row["opencv_ms"], row["opencv_load_ms"], row["opencv_rss"] = result["ms_median"], result["load_ms"], rss
    else:
        row["opencv_error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
    onnx = workdir / f"{name}.onnx"
    if not onnx.exists():
        export = subprocess.run([SWIFTJIT, "export", prototxt, "--weights", weights, "--onnx", onnx], capture_output=True, text=True)
        if export.returncode != 0:
            row["ort_error"] = export.stderr.strip().splitlines()[0]
    if onnx.exists():
        out, err, code, rss = run_with_rss([sys.executable, str(PEERS), "ort", str(onnx), *shapes,
                                            "--iterations", str(iterations), "--threads", "2"])
        if code == 0:
            result = json.loads(out)
            row["ort_ms"], row["ort_load_ms"], row["ort_rss"] = result["ms_median"], result["load_ms"], rss
        else:
            row["ort_error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
    return row


def fmt(value, spec):
    return format(value, spec) if value is not None else "—"


def table(rows):
    header = "| net | batch | swiftjit ms | OpenCV ms | ORT ms | OpenCV/swiftjit | ORT/swiftjit | RSS MiB (ours/OpenCV/ORT) | compile s (ours) |"
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        ours, cv, ort = r.get("swiftjit_ms"), r.get("opencv_ms"), r.get("ort_ms")
        ratio_cv = cv / ours if ours and cv else None
        ratio_ort = ort / ours if ours and ort else None
        rss = "/".join(fmt(r.get(k), ".0f") for k in ("swiftjit_rss", "opencv_rss", "ort_rss"))
        lines.append(f"| {r['net']} | {r['batch']} | {fmt(ours, '.2f')} | {fmt(cv, '.2f')} | {fmt(ort, '.2f')} | "
                     f"{fmt(ratio_cv, '.2f')}× | {fmt(ratio_ort, '.2f')}× | {rss} | {fmt(r.get('swiftjit_compile_s'), '.2f')} |")
    notes = [f"- {r['net']} batch {r['batch']}: {k.split('_')[0]}: {v}" for r in rows for k, v in r.items() if k.endswith("_error")]
    return "\n".join(lines + ([""] + notes if notes else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--markdown", help="also write the results with the machine description here")
    args = parser.parse_args()
    if not SWIFTJIT.exists():
        sys.exit(f"error: {SWIFTJIT} is missing; build it with `swift build -c release --product swiftjit`")
    rows = []
    with tempfile.TemporaryDirectory(prefix="swiftjit-bench-") as folder:
        for name in args.nets:
            for batch in args.batches:
                row = bench(name, batch, args.iterations, Path(folder))
                rows.append(row)
                print(json.dumps(row), flush=True)
    text = table(rows)
    print(text)
    if args.markdown:
        stamp = time.strftime("%Y-%m-%d")
        Path(args.markdown).write_text(
            f"# Forward-pass benchmarks\n\nMeasured {stamp} on {machine()}; 2 threads per runtime, median of "
            f"{args.iterations} passes after a warm-up, seeded random weights (BatchNorm statistics mean 0 / variance 1), "
            f"each runtime in its own process. Reproduce with `python3 Benchmarks/compare.py --markdown BENCHMARKS.md`.\n"
            f"The machine is shared and noisy: compare ratios within one run, not absolute numbers across runs.\n\n{text}\n")


if __name__ == "__main__":
    main()
