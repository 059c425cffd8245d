#!/usr/bin/env python3
"""Forward-pass benchmark: swiftjit vs OpenCV DNN vs ONNX Runtime, side by side, in one run.

For each net and batch size: seeded random weights (swiftjit init --batchnorm unit --unfilled-weights
msra: deploy prototxts name no fillers, and Caffe's default of 0 would make every activation 0), the
same net exported to ONNX (swiftjit export --onnx), then each runtime in its own process with 2
threads, timed over --iterations passes after a warm-up. The runtimes take turns for --rounds rounds
(the machine is shared: a slow spell should hit all of them), and each keeps its best median.
Reports ms/batch, each peer's ratio to
swiftjit, peak RSS per process, and load/compile time. Results go to stdout and, with --markdown,
to a file (BENCHMARKS.md) with the machine described.

swiftjit's compile time is graph to executable (graph passes, lowering, kernels, arena and weights;
not reading the weights). It is measured twice per net, each time in a new process: cold, with an
empty kernel cache directory (every kernel optimized and compiled), then warm, with the directory
the cold run filled (every kernel linked from the cache). Neither touches the user's own cache.
--compile-only measures just that, --repeat times per net on fresh directories, and prints medians.

  python3 Benchmarks/compare.py --iterations 10 --markdown BENCHMARKS.md
  python3 Benchmarks/compare.py --nets resnet50 --batches 1
  python3 Benchmarks/compare.py --compile-only --batches 1 --repeat 5
  python3 Benchmarks/compare.py --avx2 --nets resnet50        # also swiftjit's AVX2 path, on an AVX-512 host
  python3 Benchmarks/compare.py --avx2-only --baseline /tmp/swiftjit-before   # AVX2 path, this build vs another

--avx2 adds a column for swiftjit's AVX2 path on the same host: SWIFTJIT_CPU_FEATURES=-avx512f (the JIT
generates, and the compiler chooses, kernels for the host's features without AVX-512) and
OPENBLAS_CORETYPE=Zen (OpenBLAS, which swiftjit calls for InnerProducts and the convolutions its own
kernels do not take, runs its AVX2 kernels too), i.e. what an AVX2-only machine would run. The peers
keep their own ISA choice (AVX-512 on such a host), so their ratio to the AVX2 column is not the ratio
an AVX2 host would show. --baseline BINARY runs another swiftjit build (e.g. an earlier commit) in the
same interleaved rounds, for every swiftjit path asked for; --avx2-only drops the host path.
Needs: .build/release/swiftjit (swift build -c release --product swiftjit), pip opencv-python-headless<5, onnxruntime.
"""
import argparse
import json
import os
import platform
import re
import statistics
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
    # Not in the zoo: SSD300's published deploy net (committed, Tests/peers/nets/SOURCE.txt) and
    # DenseNet-121 generated in the shape of shicai/DenseNet-Caffe's (Benchmarks/nets/densenet121.py).
    "ssd300": (str(ROOT / "Tests" / "peers" / "nets" / "ssd300_vgg16_voc0712_deploy.prototxt"), {"data": (3, 300, 300)}),
    "densenet121": ("generated:densenet121", {"data": (3, 224, 224)}),
}


def without_detection_output(text):
    """The prototxt `text` without its DetectionOutput layers (so their bottoms become outputs)."""
    kept, depth, layer = [], 0, []
    for line in text.splitlines(keepends=True):
        if depth == 0 and line.lstrip().startswith("layer"):
            layer = [line]
            depth = line.count("{") - line.count("}")
            if depth == 0:
                kept += [] if 'type: "DetectionOutput"' in line else layer
            continue
        if depth > 0:
            layer.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0 and not any('type: "DetectionOutput"' in l for l in layer):
                kept += layer
            continue
        kept.append(line)
    return "".join(kept)


def net_path(name, workdir):
    """The prototxt of net `name`: in the zoo, at an absolute path, or written by a generator in
    Benchmarks/nets into `workdir`."""
    prototxt = NETS[name][0]
    if prototxt.startswith("generated:"):
        generator = prototxt.split(":", 1)[1]
        path = workdir / f"{generator}.prototxt"
        if not path.exists():
            text = subprocess.run([sys.executable, str(ROOT / "Benchmarks" / "nets" / f"{generator}.py")],
                                  check=True, capture_output=True, text=True).stdout
            path.write_text(text)
        return path
    return ZOO / prototxt


# The environment of swiftjit's AVX2 path on an AVX-512 host (see the docstring).
AVX2_ENV = {"SWIFTJIT_CPU_FEATURES": "-avx512f", "OPENBLAS_CORETYPE": "Zen"}


class Variant:
    """One way of running swiftjit: a binary and the environment it runs in, under a column label."""

    def __init__(self, key, label, binary=SWIFTJIT, env=None):
        self.key, self.label, self.binary, self.env = key, label, Path(binary), env or {}


def variants(args):
    paths = ([] if args.avx2_only else [("", "", {})]) + ([("_avx2", " AVX2", AVX2_ENV)] if args.avx2 or args.avx2_only else [])
    builds = [("swiftjit", "swiftjit", SWIFTJIT)] + ([("before", "before", Path(args.baseline))] if args.baseline else [])
    return [Variant(key + suffix, label + path_label, binary, env) for key, label, binary in builds for suffix, path_label, env in paths]


def run_with_rss(command, kernel_cache=None, extra_env=None):
    """Runs `command` in its own process and returns (stdout, stderr, code, peak RSS MiB).
    swiftjit keeps its kernels in `kernel_cache` (a directory), or caches none."""
    env = dict(os.environ)
    env.pop("SWIFTJIT_CACHE_DIR", None)
    env.pop("SWIFTJIT_CPU_FEATURES", None)
    env.update(extra_env or {})
    if kernel_cache is not None:
        env["SWIFTJIT_CACHE_DIR"] = str(kernel_cache)
    elif command and command[1:2] and command[1] in ("time", "run", "compile") and "swiftjit" in Path(command[0]).name:
        command = [*command, "--no-kernel-cache"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
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


def weights_for(name, workdir):
    inputs = NETS[name][1]
    weights = workdir / f"{name}.caffemodel"
    if not weights.exists():
        subprocess.run([SWIFTJIT, "init", net_path(name, workdir), "--seed", "1", "--batchnorm", "unit", "--unfilled-weights", "msra",
                        "-o", weights, *shape_args(inputs, 1)],
                       check=True, capture_output=True)
    return weights


def fresh_cache(workdir, name, batch):
    """A kernel cache directory no process has used yet."""
    return Path(tempfile.mkdtemp(prefix=f"kernels-{name}-{batch}-", dir=workdir))


def compile_once(name, batch, workdir, kernel_cache, variant=None):
    """`swiftjit compile --json` in a new process: (seconds, compiled kernels, kernels from the cache)."""
    inputs = NETS[name][1]
    variant = variant or Variant("swiftjit", "swiftjit")
    out, err, code, _ = run_with_rss([str(variant.binary), "compile", str(net_path(name, workdir)), "--weights", str(weights_for(name, workdir)),
                                      *shape_args(inputs, batch), "--json"], kernel_cache=kernel_cache, extra_env=variant.env)
    if code != 0:
        raise RuntimeError(err.strip().splitlines()[0] if err.strip() else f"exit {code}")
    compilation = json.loads(out).get("compilation") or {}
    if compilation.get("seconds") is None:
        raise RuntimeError(f"not compiled: {compilation.get('not_compiled')}")
    return compilation["seconds"], compilation["compiled_kernels"], compilation["cached_kernels"]


def bench_compile(name, batch, repeat, workdir):
    """Cold then warm compile `repeat` times, each pair on a fresh cache directory; medians."""
    row = {"net": name, "batch": batch}
    try:
        cold, warm = [], []
        for _ in range(repeat):
            cache = fresh_cache(workdir, name, batch)
            seconds, compiled, cached = compile_once(name, batch, workdir, cache)
            cold.append(seconds)
            row["kernels"] = compiled + cached
            seconds, compiled, cached = compile_once(name, batch, workdir, cache)
            warm.append(seconds)
            if compiled:
                row["warm_note"] = f"warm run compiled {compiled} kernels"
        row["cold_s"], row["warm_s"] = statistics.median(cold), statistics.median(warm)
        row["cold_runs"], row["warm_runs"] = cold, warm
    except RuntimeError as error:
        row["swiftjit_error"] = str(error)
    return row


def bench(name, batch, iterations, rounds, workdir, ours):
    """Each runtime `rounds` times, interleaved (ours, OpenCV, ORT, ours, ...), so that a slow spell of
    this shared machine hits all of them alike; each runtime's best median is reported. `ours` are
    the swiftjit variants, each with its own kernel cache directory."""
    inputs = NETS[name][1]
    prototxt = net_path(name, workdir)
    shapes = shape_args(inputs, batch)
    weights = weights_for(name, workdir)
    row = {"net": name, "batch": batch, "load_before": os.getloadavg()[0]}
    onnx = workdir / f"{name}.onnx"
    if not onnx.exists():
        export = subprocess.run([SWIFTJIT, "export", prototxt, "--weights", weights, "--onnx", onnx], capture_output=True, text=True)
        if export.returncode != 0 and "DetectionOutput" in export.stderr:
            # ONNX has no DetectionOutput (NMS): ORT runs the net up to its inputs (the heads), and
            # the row says so.
            cut = workdir / f"{name}-heads.prototxt"
            cut.write_text(without_detection_output(prototxt.read_text()))
            export = subprocess.run([SWIFTJIT, "export", cut, "--weights", weights, "--onnx", onnx], capture_output=True, text=True)
            row["ort_note"] = "ONNX Runtime runs the net up to DetectionOutput's inputs (ONNX has no SSD NMS); the others run it whole"
        if export.returncode != 0:
            row["ort_error"] = export.stderr.strip().splitlines()[0]
    caches = {v.key: fresh_cache(workdir, name, batch) for v in ours}
    runs = {**{v.key: [] for v in ours}, "opencv": [], "ort": []}
    for _ in range(rounds):
        for v in ours:
            if f"{v.key}_error" in row:
                continue
            out, err, code, rss = run_with_rss([str(v.binary), "time", str(prototxt), "--weights", str(weights), *shapes,
                                                "--iterations", str(iterations)], kernel_cache=caches[v.key], extra_env=v.env)
            if code == 0:
                runs[v.key].append(float(re.search(r"Average Forward pass: ([0-9.]+) ms", out).group(1)))
                row.setdefault(f"{v.key}_compile_s", float(re.search(r"compile: ([0-9.]+) s", out).group(1)))  # the cold one
                row[f"{v.key}_rss"] = max(row.get(f"{v.key}_rss", 0), rss)
            else:
                row[f"{v.key}_error"] = err.strip().splitlines()[0] if err.strip() else f"exit {code}"
        for peer, model in (("opencv", [str(prototxt), str(weights)]), ("ort", [str(onnx)])):
            if f"{peer}_error" in row or not Path(model[0]).exists():
                continue
            out, err, code, rss = run_with_rss([sys.executable, str(PEERS), peer, *model, *shapes,
                                                "--iterations", str(iterations), "--threads", "2"])
            if code == 0:
                result = json.loads(out)
                runs[peer].append(result["ms_median"])
                row[f"{peer}_load_ms"], row[f"{peer}_rss"] = result["load_ms"], max(row.get(f"{peer}_rss", 0), rss)
            else:
                row[f"{peer}_error"] = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
    row["load_after"] = os.getloadavg()[0]  # 1-minute load average: how busy the shared machine was
    for runtime, values in runs.items():
        if values:
            row[f"{runtime}_ms"], row[f"{runtime}_runs"] = min(values), values
    for v in ours:
        if f"{v.key}_ms" not in row:
            continue
        try:
            row[f"{v.key}_compile_warm_s"], compiled, _ = compile_once(name, batch, workdir, caches[v.key], v)
            if compiled:
                row[f"{v.key}_warm_note"] = f"warm compile compiled {compiled} kernels"
        except RuntimeError as error:
            row[f"{v.key}_warm_error"] = str(error)
    return row


def fmt(value, spec):
    return format(value, spec) if value is not None else "—"


def table(rows, ours):
    """One row per net and batch: each swiftjit variant's and each peer's ms, the baseline's time
    over this build's per path (a speed-up), each peer's ratio to this build's variants, RSS and
    the first variant's compile times."""
    peers = [("opencv", "OpenCV"), ("ort", "ORT")]
    current = [v for v in ours if not v.key.startswith("before")]
    pairs = [(v, next(b for b in ours if b.key == "before" + v.key[len("swiftjit"):])) for v in current
             if any(b.key == "before" + v.key[len("swiftjit"):] for b in ours)]
    header = ("| net | batch | " + "".join(f"{v.label} ms | " for v in ours) + "OpenCV ms | ORT ms | "
              + "".join(f"{b.label}/{v.label} | " for v, b in pairs)
              + "".join(f"{p}/{v.label} | " for _, p in peers for v in current)
              + f"RSS MiB ({'/'.join(v.label for v in ours)}/OpenCV/ORT) | compile s cold/warm ({ours[0].label}) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    ratio = lambda a, b: fmt(a / b if a and b else None, ".2f") + "×"
    for r in rows:
        times = {k: r.get(f"{k}_ms") for k in [v.key for v in ours] + [p for p, _ in peers]}
        cells = ([f"{fmt(times[v.key], '.2f')}" for v in ours] + [fmt(times["opencv"], ".2f"), fmt(times["ort"], ".2f")]
                 + [ratio(times[b.key], times[v.key]) for v, b in pairs]
                 + [ratio(times[p], times[v.key]) for p, _ in peers for v in current]
                 + ["/".join(fmt(r.get(f"{k}_rss"), ".0f") for k in [v.key for v in ours] + [p for p, _ in peers]),
                    f"{fmt(r.get(f'{ours[0].key}_compile_s'), '.2f')}/{fmt(r.get(f'{ours[0].key}_compile_warm_s'), '.2f')}"])
        lines.append(f"| {r['net']} | {r['batch']} | " + " | ".join(cells) + " |")
    notes = [f"- {r['net']} batch {r['batch']}: {k.rsplit('_', 1)[0]}: {v}" for r in rows for k, v in r.items()
             if k.endswith("_error") or k.endswith("_note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def compile_table(rows, repeat):
    lines = [f"| net | batch | kernels | cold compile s (median of {repeat}) | warm compile s (median of {repeat}) | cold runs | warm runs |",
             "|" + "---|" * 7]
    for r in rows:
        runs = lambda key: ", ".join(f"{v:.2f}" for v in r.get(key, []))
        lines.append(f"| {r['net']} | {r['batch']} | {r.get('kernels', '—')} | {fmt(r.get('cold_s'), '.3f')} | "
                     f"{fmt(r.get('warm_s'), '.3f')} | {runs('cold_runs')} | {runs('warm_runs')} |")
    notes = [f"- {r['net']} batch {r['batch']}: {v}" for r in rows for k, v in r.items() if k.endswith("_error") or k.endswith("_note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each runtime per row (the best median is kept)")
    parser.add_argument("--markdown", help="also write the results with the machine description here")
    parser.add_argument("--compile-only", action="store_true", help="only swiftjit's cold and warm compile times (no peers, no run times)")
    parser.add_argument("--repeat", type=int, default=3, help="with --compile-only: cold/warm pairs per net (medians reported)")
    parser.add_argument("--avx2", action="store_true", help="also run swiftjit's AVX2 path (SWIFTJIT_CPU_FEATURES=-avx512f, OPENBLAS_CORETYPE=Zen)")
    parser.add_argument("--avx2-only", action="store_true", help="run only swiftjit's AVX2 path")
    parser.add_argument("--baseline", help="another swiftjit binary to run beside this one, for every path asked for")
    args = parser.parse_args()
    ours = variants(args)
    for binary in {v.binary for v in ours}:
        if not binary.exists():
            sys.exit(f"error: {binary} is missing; build it with `swift build -c release --product swiftjit`")
    rows = []
    with tempfile.TemporaryDirectory(prefix="swiftjit-bench-") as folder:
        for name in args.nets:
            for batch in args.batches:
                if args.compile_only:
                    row = bench_compile(name, batch, max(1, args.repeat), Path(folder))
                else:
                    row = bench(name, batch, args.iterations, max(1, args.rounds), Path(folder), ours)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.compile_only:
        print(compile_table(rows, max(1, args.repeat)))
        return
    text = table(rows, ours)
    print(text)
    if args.markdown:
        stamp = time.strftime("%Y-%m-%d")
        Path(args.markdown).write_text(
            f"# Forward-pass benchmarks\n\nMeasured {stamp} on {machine()}; 2 threads per runtime, median of "
            f"{args.iterations} passes after a warm-up, best of {args.rounds} interleaved rounds (each runtime in its own "
            f"process per round), seeded random weights (MSRA for weights the prototxt leaves unfilled, BatchNorm statistics "
            f"mean 0 / variance 1). Reproduce with `python3 Benchmarks/compare.py --markdown BENCHMARKS.md`.\n"
            f"The machine is shared and noisy: compare ratios within one run, not absolute numbers across runs.\n\n{text}\n")


if __name__ == "__main__":
    main()
