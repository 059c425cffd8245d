#!/usr/bin/env python3
"""Training benchmark: swiftjit vs PyTorch (CPU), full SGD iterations side by side, in one run.

Nets: LeNet batch 64 (../shared/zoo/mnist/lenet_train_test.prototxt), CIFAR10-quick batch 100
(../shared/zoo/cifar10/cifar10_quick_train_test.prototxt) and ResNet-50 batch 16. The zoo has no
ResNet-50 train_val, so its TRAIN net is generated from ResNet-50-deploy.prototxt (into a temporary
directory, never committed): Input layers for data (16×3×224×224) and label, BatchNorm in training
mode (use_global_stats: false), MSRA fillers for the convolutions (the deploy file names none, and
Caffe's default of 0 would train nothing), and SoftmaxWithLoss in place of the final Softmax. The
two train_test nets keep their TRAIN-phase layers with Input layers in place of their Data layers,
so no LMDB is read: both runtimes train on one seeded random batch held in memory (labels
uniform over the classes), the same batch every iteration.

One iteration is the same work on both sides: forward, loss, backward, and an SGD update with
momentum 0.9, weight decay 5e-4, learning rate 0.01 (fixed), the prototxts' lr_mult 2 on the
LeNet and CIFAR10-quick biases. PyTorch runs the same architectures written with torch.nn (Caffe's
pooling rounds output sizes up, so ceil_mode=True; BatchNorm + Scale is nn.BatchNorm2d). PyTorch
starts from the initial weights of the first swiftjit run (its fillers, saved as .npz in the run's
temporary folder and copied in parameter order, shapes checked), so on the same batch both compute
the same losses. A row gets no ratio, and the run writes nothing, unless both nets have the same
number of learnable parameters (swiftjit's counted from its solver's net, BatchNorm statistics
excluded) and their first-iteration losses agree within 1e-3; the notes show both loss curves.

swiftjit's ms/iter: `swiftjit time NET --backward --solver SOLVER`'s "Average Training iteration":
whole iterations of the arena-planned training net `swiftjit train` runs (zero the diffs, forward,
backward, the solver's SGD update), on its own seeded random batch and filler weights (the timing
does not depend on the values). Its peak RSS is that process's (it also runs the per-layer profile
and forward/backward passes first, at the same memory). The same computation is checked through the
Python `swiftjit.Solver` (the C API's sj_solver_*, Caffe's `Solver::Step` on a pycaffe-style net
that keeps every blob and diff, so no arena reuse): on the same batch and weights as PyTorch its
losses must agree (below); its own time per `step(1)` and RSS are shown too, as the pycaffe column.
Threads: swiftjit's kernels and GEMMs run on 2 threads (the CLI's pool; for the Python solver the
thread count given to sj_options_set_threads through caffe's `_config.threads`); OpenBLAS itself runs
single-threaded inside each of swiftjit's tasks. PyTorch: torch.set_num_threads(2) (and
OMP/MKL/OPENBLAS_NUM_THREADS=2).

Timing: each runtime in its own process per round; --warmup untimed iterations, then --iterations
timed ones (the median is the process's figure); the runtimes take turns for --rounds rounds (the
machine may be shared: a slow spell should hit all of them) and each keeps its best median. Peak
RSS is the child process's (ru_maxrss). swiftjit's compile time is `swiftjit time --backward`'s
"compile:" figure for the same TRAIN net (graph to executable: passes, lowering, kernels, arena
and parameters; not reading the prototxt or filling weights), measured in two new processes:
cold with an empty SWIFTJIT_CACHE_DIR, then warm with the directory the cold run filled. PyTorch
compiles nothing; its comparable "setup" figure is its first iteration (allocations, oneDNN
primitive creation), labelled as such, beside swiftjit's first step(1) after the solver is built.

  python3 Benchmarks/train_compare.py --iterations 10 --rounds 3 --markdown BENCHMARKS.md
  python3 Benchmarks/train_compare.py --nets lenet cifar10_quick --iterations 20
  python3 Benchmarks/train_compare.py --avx2 --nets resnet50    # also swiftjit's AVX2 path
  SWIFTJIT=/path/to/swiftjit python3 Benchmarks/train_compare.py   # another build (its libswiftjit.so beside it)

--avx2 adds a column for swiftjit's AVX2 path on the same host, as compare.py's --avx2 does:
SWIFTJIT_CPU_FEATURES=-avx512f (kernels generated and chosen for the host's features without
AVX-512) and OPENBLAS_CORETYPE=Zen (OpenBLAS on its AVX2 kernels). PyTorch keeps its own ISA choice.
--markdown FILE replaces this benchmark's section of FILE (from its heading to the next top-level
heading), or appends it, with the machine and its vector ISA named.
Needs: the release build (swift build -c release --product swiftjit, which also builds
libswiftjit.so beside it), pip torch, numpy, protobuf.
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
HEADING = "# Training: swiftjit vs PyTorch (Benchmarks/train_compare.py)"

# name: (prototxt under ZOO, batch, one example's shape, classes, label, is a deploy net)
NETS = {
    "lenet": ("mnist/lenet_train_test.prototxt", 64, (1, 28, 28), 10, "LeNet", False),
    "cifar10_quick": ("cifar10/cifar10_quick_train_test.prototxt", 100, (3, 32, 32), 10, "CIFAR10-quick", False),
    "resnet50": ("resnet/ResNet-50-deploy.prototxt", 16, (3, 224, 224), 1000, "ResNet-50", True),
}

# Caffe's SGD hyper-parameters, used by both sides.
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4

# The environment of swiftjit's AVX2 path on an AVX-512 host (see the docstring).
AVX2_ENV = {"SWIFTJIT_CPU_FEATURES": "-avx512f", "OPENBLAS_CORETYPE": "Zen"}


# ---------------------------------------------------------------------------------------------
# The TRAIN nets and their solver
# ---------------------------------------------------------------------------------------------

def caffe_proto():
    sys.path.insert(0, str(ROOT / "python"))
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    return caffe_pb2, text_format


def input_layer(caffe_pb2, name, tops_and_shapes):
    layer = caffe_pb2.LayerParameter(name=name, type="Input")
    for top, shape in tops_and_shapes:
        layer.top.append(top)
        layer.input_param.shape.add().dim.extend(shape)
    return layer


def in_train_phase(caffe_pb2, layer):
    """Caffe's phase rules for a net state of phase TRAIN, level 0, no stages (only phases are used here)."""
    if layer.include:
        return any(not rule.HasField("phase") or rule.phase == caffe_pb2.TRAIN for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == caffe_pb2.TRAIN for rule in layer.exclude)


def train_net(name):
    """The TRAIN net of `name` as prototxt text, fed by Input layers (see the module docstring)."""
    caffe_pb2, text_format = caffe_proto()
    prototxt, batch, example, _, _, deploy = NETS[name]
    source = caffe_pb2.NetParameter()
    text_format.Merge((ZOO / prototxt).read_text(), source)
    net = caffe_pb2.NetParameter(name=source.name + "-train-bench")
    if deploy:
        net.layer.append(input_layer(caffe_pb2, "data", [("data", (batch, *example)), ("label", (batch,))]))
    for layer in source.layer:
        if not in_train_phase(caffe_pb2, layer):
            continue
        if layer.type == "Data":
            net.layer.append(input_layer(caffe_pb2, layer.name, [(layer.top[0], (batch, *example)), (layer.top[1], (batch,))]))
            continue
        copy = net.layer.add()
        copy.CopyFrom(layer)
        layer = copy
        layer.ClearField("include")
        layer.ClearField("exclude")
        if not deploy:
            continue
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
        elif layer.type == "Convolution" and not layer.convolution_param.HasField("weight_filler"):
            layer.convolution_param.weight_filler.type = "msra"
        elif layer.type == "InnerProduct" and not layer.inner_product_param.HasField("weight_filler"):
            layer.inner_product_param.weight_filler.type = "gaussian"
            layer.inner_product_param.weight_filler.std = 0.01
        elif layer.type == "Softmax":
            layer.type = "SoftmaxWithLoss"
            layer.name = layer.top[0] = "loss"
            layer.bottom.append("label")
    return text_format.MessageToString(net)


def solver_text(net_path, seed):
    return "\n".join([f'net: "{net_path}"', f"base_lr: {LEARNING_RATE}", 'lr_policy: "fixed"', f"momentum: {MOMENTUM}",
                      f"weight_decay: {WEIGHT_DECAY}", 'type: "SGD"', "max_iter: 1000000", "display: 0", "snapshot: 0",
                      "snapshot_after_train: false", f"random_seed: {seed}", "solver_mode: CPU", ""])


def write_net(name, folder, seed):
    """Writes NAME_train.prototxt and NAME_solver.prototxt into `folder`; returns (net, solver) paths."""
    net_path, solver_path = folder / f"{name}_train.prototxt", folder / f"{name}_solver.prototxt"
    net_path.write_text(train_net(name))
    solver_path.write_text(solver_text(net_path, seed))
    return net_path, solver_path


def batch(name, seed):
    """The one random batch both runtimes train on: N(0, 1) data and uniform labels."""
    import numpy as np
    _, size, example, classes, _, _ = NETS[name]
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((size, *example), dtype=np.float32),
            rng.integers(0, classes, size).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# The same architectures in PyTorch
# ---------------------------------------------------------------------------------------------

def torch_net(name):
    """The PyTorch module for `name`; biases are the parameters whose name ends in "bias"."""
    from torch import nn

    if name == "lenet":
        # conv1 20 5×5, pool 2/2, conv2 50 5×5, pool 2/2, ip1 500, ReLU, ip2 10.
        return nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))
    if name == "cifar10_quick":
        # Caffe's AVE pooling divides by the window clipped to the image (pad 0), as
        # avg_pool2d with ceil_mode does: 32 → 16 → 8 → 4.
        return nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    if name == "resnet50":
        return ResNet50()
    raise ValueError(name)


def _torch_resnet_classes():
    from torch import nn

    class Bottleneck(nn.Module):
        """ResNet-50's block as in the MSRA Caffe model: the stride is on the first 1×1 (branch2a);
        convolutions without bias, each followed by BatchNorm + Scale (one nn.BatchNorm2d)."""

        def __init__(self, inputs, width, stride, projection):
            super().__init__()
            # branch1 first: the prototxt's (and so the parameters') order.
            self.branch1 = nn.Sequential(nn.Conv2d(inputs, width * 4, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(width * 4)) if projection else None
            self.branch2 = nn.Sequential(
                nn.Conv2d(inputs, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            shortcut = self.branch1(x) if self.branch1 is not None else x
            return self.relu(self.branch2(x) + shortcut)

    class Net(nn.Module):
        """ResNet-50-deploy.prototxt: conv1 7×7/2 (with bias) + BN + ReLU, max pool 3/2 (ceil), four
        stages of 3, 4, 6, 3 bottlenecks (widths 64–512, ×4 out; stride 2 from res3 on), average pool
        7×7, fc1000."""

        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                      nn.MaxPool2d(3, 2, ceil_mode=True)]
            inputs = 64
            for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
                for block in range(blocks):
                    stride = 2 if stage > 0 and block == 0 else 1
                    layers.append(Bottleneck(inputs, width, stride, projection=block == 0))
                    inputs = width * 4
            layers += [nn.AvgPool2d(7, 1), nn.Flatten(), nn.Linear(2048, 1000)]
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return self.body(x)

    return Net


def ResNet50():
    return _torch_resnet_classes()()


# ---------------------------------------------------------------------------------------------
# Workers: one training run in this process, printed as JSON
# ---------------------------------------------------------------------------------------------

class CPUClock:
    """Wall time and this process's CPU time (all threads) over a stretch: CPU/wall shows how many
    cores a run actually got (2 when it had both, less when the machine was busy)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    @property
    def cores(self):
        return self.cpu / self.wall if self.wall > 0 else 0.0


def timed_iterations(step, warmup, iterations):
    """Runs `step` once (timed: the first iteration), `warmup` more times, then `iterations` timed
    times; returns (first ms, [ms per timed iteration], losses of every call, CPUClock of the timed part)."""
    losses = []
    start = time.perf_counter()
    losses.append(step())
    first = (time.perf_counter() - start) * 1000
    for _ in range(warmup):
        losses.append(step())
    times = []
    with CPUClock() as clock:
        for _ in range(iterations):
            start = time.perf_counter()
            losses.append(step())
            times.append((time.perf_counter() - start) * 1000)
    return first, times, losses, clock


def swiftjit_worker(args):
    sys.path.insert(0, str(ROOT / "python"))
    from caffe import _config
    import swiftjit
    _config.threads = args.threads  # what pycaffe-style solvers pass to sj_options_set_threads
    _, solver_path = write_net(args.net, Path(args.folder), args.seed)
    start = time.perf_counter()
    solver = swiftjit.Solver(str(solver_path))
    setup = time.perf_counter() - start
    net = solver.net
    data, labels = batch(args.net, args.seed)
    net.blobs["data"].data[...] = data
    net.blobs["label"].data[...] = labels
    types = {name: layer.type for name, layer in zip(net._layer_names, net.layers)}
    learnable = [blob.data for name, blobs in net.params.items() if types[name] != "BatchNorm" for blob in blobs]
    parameters = sum(array.size for array in learnable)
    initial = Path(args.folder) / f"{args.net}_initial.npz"
    if not initial.exists():  # the first swiftjit run's initial weights, for PyTorch to start from
        import numpy as np
        np.savez(initial, *learnable)
    first, times, losses, clock = timed_iterations(lambda: solver.step(1), args.warmup, args.iterations)
    print(json.dumps({"ms_median": statistics.median(times), "ms_runs": times, "first_ms": first, "setup_s": setup,
                      "losses": losses, "parameters": int(parameters), "cores": clock.cores, "iteration": solver.iter,
                      "library": swiftjit.library_path()}))


def torch_worker(args):
    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = torch_net(args.net)
    model.train()
    initial = Path(args.folder) / f"{args.net}_initial.npz"
    if initial.exists():  # start from swiftjit's initial weights: both runs then compute the same losses
        import numpy as np
        with np.load(initial) as saved, torch.no_grad():
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
            targets = list(model.parameters())
            if [v.shape for v in values] != [tuple(t.shape) for t in targets]:
                raise SystemExit(f"{initial}: parameter shapes {[v.shape for v in values]} are not the PyTorch net's "
                                 f"{[tuple(t.shape) for t in targets]}")
            for target, value in zip(targets, values):
                target.copy_(torch.from_numpy(value))
    # Caffe's lr_mult 2 on the train_test nets' biases; ResNet-50's deploy file sets none.
    bias_mult = 1 if NETS[args.net][5] else 2
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": weights}, {"params": biases, "lr": LEARNING_RATE * bias_mult}],
                                lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    criterion = nn.CrossEntropyLoss()
    data, labels = batch(args.net, args.seed)
    x, y = torch.from_numpy(data), torch.from_numpy(labels).long()
    setup = time.perf_counter() - start

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    first, times, losses, clock = timed_iterations(step, args.warmup, args.iterations)
    print(json.dumps({"ms_median": statistics.median(times), "ms_runs": times, "first_ms": first, "setup_s": setup,
                      "losses": losses, "parameters": sum(p.numel() for p in model.parameters()), "cores": clock.cores,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


# ---------------------------------------------------------------------------------------------
# The parent: interleaved rounds, compile times, the table
# ---------------------------------------------------------------------------------------------

class Variant:
    """One way of running swiftjit: a binary (its libswiftjit.so beside it) and the environment it
    runs in, under a column label."""

    def __init__(self, key, label, binary, env=None):
        self.key, self.label, self.binary, self.env = key, label, Path(binary), env or {}

    @property
    def library(self):
        return self.binary.parent / "libswiftjit.so"


def run_with_rss(command, extra_env=None):
    """Runs `command` in its own process and returns (stdout, stderr, code, peak RSS MiB)."""
    env = dict(os.environ)
    for name in ("SWIFTJIT_CACHE_DIR", "SWIFTJIT_CPU_FEATURES", "OPENBLAS_CORETYPE"):
        env.pop(name, None)
    env.update(extra_env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), code, usage.ru_maxrss / 1024


def thread_env(threads):
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def last_line(text, code):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {code}"


def compile_seconds(variant, net_path, kernel_cache, threads):
    """`swiftjit time --backward --iterations 1` on the TRAIN net in a new process: its "compile: X s"
    (graph to executable), the kernels it compiled and the cache entries it rejected."""
    out, err, code, _ = run_with_rss([str(variant.binary), "time", str(net_path), "--backward", "--iterations", "1"],
                                       {**variant.env, **thread_env(threads), "SWIFTJIT_CACHE_DIR": str(kernel_cache)})
    if code != 0:
        raise RuntimeError(last_line(err, code))
    found = re.search(r"compile: ([0-9.]+) s \(.*?(\d+) kernels: (\d+) compiled, (\d+) from the kernel cache[^)]*?(?:(\d+) cache entr)?", out)
    if not found:
        raise RuntimeError(f"no compile line in: {out.strip().splitlines()[-4:]}")
    return float(found.group(1)), int(found.group(3)), int(found.group(5) or 0)


def training_iteration_ms(variant, net_path, solver_path, kernel_cache, iterations, threads):
    """`swiftjit time --backward --solver S --iterations N` in a new process: "Average Training
    iteration" (ms, a mean over N whole iterations with the solver's update, arena-planned net) and
    its peak RSS MiB."""
    out, err, code, rss = run_with_rss([str(variant.binary), "time", str(net_path), "--backward", "--solver", str(solver_path),
                                        "--iterations", str(iterations)],
                                       {**variant.env, **thread_env(threads), "SWIFTJIT_CACHE_DIR": str(kernel_cache)})
    if code != 0:
        raise RuntimeError(last_line(err, code))
    found = re.search(r"Average Training iteration \(.*?\): ([0-9.]+) ms", out)
    if not found:
        raise RuntimeError(f"no training iteration line in: {out.strip().splitlines()[-3:]}")
    return float(found.group(1)), rss


def forward_backward_ms(variant, net_path, kernel_cache, iterations, threads):
    """`swiftjit time --backward --iterations N` in a new process: "Average Forward-Backward" (ms,
    a mean over N unprofiled passes: forward and backward, no update) and its peak RSS MiB."""
    out, err, code, rss = run_with_rss([str(variant.binary), "time", str(net_path), "--backward", "--iterations", str(iterations)],
                                       {**variant.env, **thread_env(threads), "SWIFTJIT_CACHE_DIR": str(kernel_cache)})
    if code != 0:
        raise RuntimeError(last_line(err, code))
    return float(re.search(r"Average Forward-Backward: ([0-9.]+) ms", out).group(1)), rss


def worker_command(kind, name, folder, args):
    return [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--net", name, "--folder", str(folder),
            "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--seed", str(args.seed)]


def bench(name, args, folder, ours):
    """Compile times per swiftjit variant, then `rounds` interleaved rounds (each variant, then
    PyTorch, each in its own process); each runtime keeps its best median."""
    net_path, solver_path = write_net(name, folder, args.seed)
    _, size, _, _, label, _ = NETS[name]
    row = {"net": name, "label": label, "batch": size}
    caches = {}
    for v in ours:
        caches[v.key] = Path(tempfile.mkdtemp(prefix=f"kernels-{name}-{v.key}-", dir=folder))
        try:
            row[f"{v.key}_compile_cold_s"], row[f"{v.key}_kernels"], _ = compile_seconds(v, net_path, caches[v.key], args.threads)
            row[f"{v.key}_compile_warm_s"], compiled, rejected = compile_seconds(v, net_path, caches[v.key], args.threads)
            if compiled:
                row[f"{v.key}_warm_note"] = (f"the warm compile compiled {compiled} of {row[f'{v.key}_kernels']} kernels"
                                             + (f" ({rejected} kernel cache entries rejected)" if rejected else ""))
        except RuntimeError as error:
            row[f"{v.key}_compile_error"] = str(error)
    runs = {k: [] for k in [v.key for v in ours] + ["torch"] + [f"{v.key}_py" for v in ours]
            + ([f"{v.key}_fb" for v in ours] if args.time_backward else [])}
    for _ in range(args.rounds):
        for v in ours:
            if f"{v.key}_iteration_error" in row:
                continue
            try:
                ms, rss = training_iteration_ms(v, net_path, solver_path, caches[v.key], args.iterations, args.threads)
                runs[v.key].append(ms)
                row[f"{v.key}_rss"] = max(row.get(f"{v.key}_rss", 0), rss)
            except RuntimeError as error:
                row[f"{v.key}_iteration_error"] = str(error)
        for v in ours if args.time_backward else []:
            if f"{v.key}_fb_error" in row:
                continue
            try:
                ms, _ = forward_backward_ms(v, net_path, caches[v.key], args.iterations, args.threads)
                runs[f"{v.key}_fb"].append(ms)
            except RuntimeError as error:
                row[f"{v.key}_fb_error"] = str(error)
        jobs = [(v.key, "swiftjit", {**v.env, "SWIFTJIT_LIBRARY": str(v.library), "SWIFTJIT_CACHE_DIR": str(caches[v.key])})
                for v in ours] + [("torch", "torch", {})]
        for key, kind, env in jobs:
            if f"{key}_error" in row:
                continue
            out, err, code, rss = run_with_rss(worker_command(kind, name, folder, args), {**env, **thread_env(args.threads)})
            if code != 0:
                row[f"{key}_error"] = last_line(err, code)
                continue
            result = json.loads(out.strip().splitlines()[-1])
            # swiftjit's Python solver: the same-computation check and the pycaffe column.
            timed = key if kind == "torch" else f"{key}_py"
            runs[timed].append(result["ms_median"])
            row[f"{timed}_rss"] = max(row.get(f"{timed}_rss", 0), rss)
            row[f"{key}_parameters"] = result["parameters"]
            row.setdefault(f"{key}_first_ms", result["first_ms"])  # the first round's
            row.setdefault(f"{key}_losses", [round(loss, 4) for loss in result["losses"]])
            row[f"{key}_cores"] = min(row.get(f"{key}_cores", 99), round(result["cores"], 2))
    for key, values in runs.items():
        if values:
            row[f"{key}_ms"], row[f"{key}_runs"] = min(values), [round(v, 2) for v in values]
    counts = {key: row[f"{key}_parameters"] for key in [v.key for v in ours] + ["torch"] if f"{key}_parameters" in row}
    if len(set(counts.values())) > 1:
        row["parameters_error"] = f"learnable parameter counts differ: {counts} (not the same architecture)"
    elif counts:
        row["parameters"] = next(iter(counts.values()))
    # Same initial weights and batch: the first iteration's loss (before any update) must agree.
    first = {key: row[f"{key}_losses"][0] for key in [v.key for v in ours] + ["torch"] if row.get(f"{key}_losses")}
    if "torch" in first and len(first) > 1 and max(first.values()) - min(first.values()) > 1e-3 * max(1.0, abs(first["torch"])):
        row["loss_error"] = f"first-iteration losses differ from the same weights and batch: {first} (not the same computation)"
    return row


def fmt(value, spec):
    return format(value, spec) if value is not None else "—"


def table(rows, ours, time_backward=False):
    """One row per net: ms/iter of each swiftjit variant and of PyTorch, PyTorch's time over each
    variant's (above 1: swiftjit is faster), peak RSS, swiftjit's compile times, first iterations;
    with `time_backward`, also `swiftjit time --backward`'s forward + backward ms (no update)."""
    backward = [(f"{v.key}_fb", f"{v.label} fwd+bwd ms (time --backward)") for v in ours] if time_backward else []
    pycaffe = [(f"{v.key}_py", f"{v.label} pycaffe Solver.step ms") for v in ours]
    names = "/".join(v.label for v in ours)
    header = ("| net | batch | parameters | " + "".join(f"{v.label} ms/iter | " for v in ours) + "PyTorch ms/iter | "
              + "".join(f"PyTorch/{v.label} | " for v in ours) + "".join(f"{label} | " for _, label in backward + pycaffe)
              + f"peak RSS MiB ({names}/PyTorch) | swiftjit peak RSS MiB, pycaffe solver | " + "".join(f"{v.label} compile s cold/warm | " for v in ours)
              + f"first iteration ms (pycaffe {names}/PyTorch) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    keys = [v.key for v in ours] + ["torch"]
    labels = [(v.key, v.label) for v in ours] + [("torch", "PyTorch")]
    for r in rows:
        # No ratio between nets that are not the same architecture.
        ratio = lambda a, b: fmt(a / b if a and b and "parameters_error" not in r and "loss_error" not in r else None, ".2f") + "×"
        cells = ([fmt(r.get("parameters"), ",")] + [fmt(r.get(f"{k}_ms"), ".1f") for k in keys]
                 + [ratio(r.get("torch_ms"), r.get(f"{v.key}_ms")) for v in ours]
                 + [fmt(r.get(f"{k}_ms"), ".1f") for k, _ in backward + pycaffe]
                 + ["/".join(fmt(r.get(f"{k}_rss"), ".0f") for k in keys), fmt(r.get(f"{ours[0].key}_py_rss"), ".0f")]
                 + [f"{fmt(r.get(f'{v.key}_compile_cold_s'), '.2f')}/{fmt(r.get(f'{v.key}_compile_warm_s'), '.2f')}" for v in ours]
                 + ["/".join(fmt(r.get(f"{k}_first_ms"), ".0f") for k in keys)])
        lines.append(f"| {r['label']} | {r['batch']} | " + " | ".join(cells) + " |")
    notes = []
    for r in rows:
        losses = "; ".join(f"{label} {r[f'{k}_losses'][0]:.3f} → {r[f'{k}_losses'][-1]:.3f}" for k, label in labels if r.get(f"{k}_losses"))
        cores = ", ".join(f"{label} {r[f'{k}_cores']:.2f}" for k, label in labels if r.get(f"{k}_cores") is not None)
        notes.append(f"- {r['label']}: loss over the first round's iterations: {losses}. CPU time / wall time over the timed "
                     f"iterations (2.00 = both threads busy; lowest round): {cores}.")
    notes += [f"- {r['label']}: {k.rsplit('_', 1)[0]}: {v}" for r in rows for k, v in r.items()
              if k.endswith("_error") or k.endswith("_note")]
    return "\n".join(lines + [""] + notes)


def isa():
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return "AVX-512 (avx512f)" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def machine():
    """CPU model (with family/model numbers: VMs often name only "AMD EPYC"), cores, vector ISA, memory, OS."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    except OSError:
        pass
    model = fields.get("model name", "unknown CPU")
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, ISA {isa()}, {memory:.0f} GiB, {platform.system()} {platform.release()}"


def torch_version():
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or "not installed"


def replace_section(path, section):
    """Replaces this benchmark's section of `path` (its heading up to the next top-level heading) or appends it."""
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    if HEADING in lines:
        start = lines.index(HEADING)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ")), len(lines))
        lines[start:end] = section.rstrip("\n").splitlines() + ([""] if end < len(lines) else [])
    else:
        lines += ([""] if lines and lines[-1] else []) + section.rstrip("\n").splitlines()
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per process (median kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations after the first, before timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each runtime per net (the best median is kept)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--swiftjit", default=str(SWIFTJIT), help="the swiftjit binary (default $SWIFTJIT, else .build/release/swiftjit); "
                        "libswiftjit.so is taken from beside it")
    parser.add_argument("--avx2", action="store_true", help="also run swiftjit's AVX2 path (SWIFTJIT_CPU_FEATURES=-avx512f, OPENBLAS_CORETYPE=Zen)")
    parser.add_argument("--time-backward", action="store_true", help="also run `swiftjit time --backward` (forward + backward, "
                        "no update, arena-planned net) in the rounds, as a column")
    parser.add_argument("--markdown", help="replace (or append) this benchmark's section in this file, with the machine described")
    parser.add_argument("--worker", choices=["swiftjit", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--net", choices=list(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (swiftjit_worker if args.worker == "swiftjit" else torch_worker)(args)
        return
    ours = [Variant("swiftjit", "swiftjit", args.swiftjit)] + ([Variant("swiftjit_avx2", "swiftjit AVX2", args.swiftjit, AVX2_ENV)]
                                                               if args.avx2 else [])
    for v in ours:
        for needed in (v.binary, v.library):
            if not needed.exists():
                sys.exit(f"error: {needed} is missing; build it with `swift build -c release --product swiftjit` "
                         "(or point --swiftjit / $SWIFTJIT at a release build)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="swiftjit-train-bench-") as folder:
        for name in args.nets:
            row = bench(name, args, Path(folder), ours)
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = table(rows, ours, args.time_backward)
    print(text)
    mismatched = [r["label"] for r in rows if "parameters_error" in r or "loss_error" in r]
    if mismatched:
        sys.exit(f"error: the swiftjit and PyTorch nets of {', '.join(mismatched)} differ (parameter counts or first "
                 "losses; see the notes); nothing written")
    if args.markdown:
        stamp = time.strftime("%Y-%m-%d")
        replace_section(args.markdown, (
            f"{HEADING}\n\nMeasured {stamp} on {machine()}; PyTorch {torch_version()} (CPU). {args.threads} threads per runtime; "
            f"one SGD iteration = forward + backward + update (momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}, lr {LEARNING_RATE}) "
            f"on one random batch held in memory; median of {args.iterations} iterations after {1 + args.warmup} untimed ones, "
            f"best of {args.rounds} interleaved rounds (each runtime in its own process per round). swiftjit: `swiftjit time --backward "
            f"--solver` (the arena-planned training net `swiftjit train` runs; whole iterations with the update); its Python solver "
            f"(`swiftjit.Solver.step(1)`, pycaffe-style, every blob kept) is timed too and checked against PyTorch on the same batch "
            f"and weights (first losses agree); compile = `swiftjit time --backward`'s graph-to-executable time for the same TRAIN net, cold (empty "
            f"kernel cache) / warm (from it). PyTorch compiles nothing: the last column's first iteration is its setup cost. "
            + ("The AVX2 column is swiftjit with SWIFTJIT_CPU_FEATURES=-avx512f OPENBLAS_CORETYPE=Zen (what an AVX2-only host runs). "
               if args.avx2 else "")
            + f"Reproduce with `python3 Benchmarks/train_compare.py --iterations {args.iterations} --rounds {args.rounds}"
            + (" --avx2" if args.avx2 else "") + (" --time-backward" if args.time_backward else "") + " --markdown BENCHMARKS.md`.\n\n" + text + "\n"))


if __name__ == "__main__":
    main()
