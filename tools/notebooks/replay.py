"""Replays BVLC Caffe's example notebooks against our `caffe` package and checks their numbers
against the `swiftjit` CLI. Driven by tools/replay-pycaffe-notebooks.sh, which prepares the scratch
folder (BVLC's examples/, models/ and mean file, our weights and data in swiftjit-data/).

    python3 replay.py run NOTEBOOK.ipynb OUT_PREFIX    # OUT_PREFIX.py (what ran), OUT_PREFIX.npz (probes)
    python3 replay.py check NAME OUT_PREFIX.npz        # PASS/FAIL lines; exit status 1 on FAIL

What is changed in a notebook's code, and nothing else, is in NOTEBOOKS below:
- `paths`: exact (old, new) file-path substitutions; each must occur, or the replay stops. BVLC's
  mean file is read from swiftjit-data/, not python/caffe/imagenet/: a python/caffe folder beside
  examples/ would be the namespace package `import caffe` finds after `sys.path.insert(0, '../python')`.
- `python3`: rewrites Python 3 needs besides 2to3's print, dict and zip fixers (which run on every cell).
- IPython lines: `%matplotlib` and `%%time` are dropped, `%timeit STMT` runs STMT once, `!CMD` runs
  in a shell unless it downloads or builds data (DROPPED_SHELL), which the wrapper made locally.
- Plotting is headless (matplotlib's Agg backend; figures are closed after each cell).
`probes` run after the named cell in the notebook's namespace and record arrays for `check`; they
read the notebook's state and change nothing.
"""
import ast
import csv
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np

CAFFENET_WEIGHTS = "../swiftjit-data/caffenet_seed7.caffemodel"   # from `swiftjit init --seed 7`
SWIFTJIT = os.environ.get("SWIFTJIT_CLI", "swiftjit")

NOTEBOOKS = {
    "00-classification": {
        "paths": [
            ("caffe_root + 'models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel'",
             "caffe_root + 'swiftjit-data/caffenet_seed7.caffemodel'"),
            ("caffe_root + 'data/ilsvrc12/synset_words.txt'", "caffe_root + 'swiftjit-data/synset_words.txt'"),
            ("caffe_root + 'python/caffe/imagenet/ilsvrc_2012_mean.npy'",
             "caffe_root + 'swiftjit-data/ilsvrc_2012_mean.npy'"),
            ("caffe.io.load_image('image.jpg')", "caffe.io.load_image(caffe_root + 'examples/images/cat.jpg')"),
        ],
        "python3": [],
        "probes": {
            16: "_probe['input'] = transformed_image; _probe['prob'] = output_prob.copy()",
            20: "_probe['top_inds'] = top_inds",
            45: "_probe['prob_again'] = output_prob.copy()",
        },
    },
    "net_surgery": {
        "paths": [
            ("'../models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel'", repr(CAFFENET_WEIGHTS)),
            ("'../python/caffe/imagenet/ilsvrc_2012_mean.npy'", "'../swiftjit-data/ilsvrc_2012_mean.npy'"),
        ],
        "python3": [],
        "probes": {
            5: "_probe['conv0_mean_before'] = np.float32(net.blobs['conv'].data[0, 0].mean())",
            7: "_probe['conv0_mean_after'] = np.float32(conv0.mean())",
            9: "_probe.update(conv_data=net.blobs['data'].data.copy(), conv_w=net.params['conv'][0].data.copy(), "
               "conv_b=net.params['conv'][1].data.copy(), conv_out=net.blobs['conv'].data.copy())",
            22: "_probe.update(full_conv_input=net_full_conv.blobs['data'].data.copy(), full_conv_prob=out['prob'].copy())",
        },
    },
    "01-learning-lenet": {
        "paths": [
            ("'mnist/mnist_train_lmdb'", "'../swiftjit-data/mnist_train_lmdb'"),
            ("'mnist/mnist_test_lmdb'", "'../swiftjit-data/mnist_test_lmdb'"),
        ],
        # Python 2's integer division, which the notebook relies on for an array index.
        "python3": [("test_interval = niter / 10", "test_interval = niter // 10")],
        "probes": {
            24: "_probe['lenet_loss_0'] = np.float32(solver.net.blobs['loss'].data)",
            28: "_probe['lenet_train_loss'] = train_loss.copy(); _probe['lenet_test_acc'] = test_acc.copy()",
            36: "_probe['custom_train_loss'] = train_loss.copy(); _probe['custom_test_acc'] = test_acc.copy()",
        },
    },
}

# Shell lines that fetch or build data: the wrapper made their results locally.
DROPPED_SHELL = re.compile(r"download_model_binary|get_ilsvrc_aux|get_mnist|create_mnist|wget ")


def translate_magics(source):
    """IPython's line and cell magics → plain Python (see the module docstring)."""
    lines = []
    for line in source.split("\n"):
        indent, body = re.match(r"(\s*)(.*)", line).groups()
        if body.startswith("%matplotlib") or body.startswith("%%time"):
            lines.append(indent + "pass  # dropped: " + body)
        elif body.startswith("%timeit "):
            lines.append(indent + body[len("%timeit "):] + "  # was: " + body)
        elif body.startswith("!"):
            if DROPPED_SHELL.search(body):
                lines.append(indent + "pass  # dropped (data made locally): " + body)
            else:
                lines.append(indent + "_shell(%r)" % body[1:])
        else:
            lines.append(line)
    return "\n".join(lines)


def python3(source):
    """2to3's print, dict and zip fixers: `print x` → `print(x)`, `d.iteritems()` → `d.items()`,
    `zip(a, b)` → `list(zip(a, b))` where a list is shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from lib2to3 import refactor
    tool = refactor.RefactoringTool(["lib2to3.fixes.fix_print", "lib2to3.fixes.fix_dict", "lib2to3.fixes.fix_zip"])
    return str(tool.refactor_string(source.rstrip("\n") + "\n", "<cell>"))


def substitute(source, table, what, used):
    for old, new in table:
        if old in source:
            source = source.replace(old, new)
            used.add(old)
    return source


def cells_of(notebook_path, name):
    """[(cell index, translated source)] of the notebook's code cells."""
    spec = NOTEBOOKS[name]
    cells = json.load(open(notebook_path))["cells"]
    used = set()
    out = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = substitute(source, spec["paths"], "path", used)
        source = substitute(source, spec["python3"], "python3", used)
        out.append((index, python3(translate_magics(source))))
    missing = [old for old, _ in spec["paths"] + spec["python3"] if old not in used]
    if missing:
        sys.exit("replay.py: %s: these substitutions no longer match the notebook: %s" % (name, missing))
    return out


def _shell(command):
    print("$ " + command)
    subprocess.run(command, shell=True)


def run(notebook_path, prefix):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    name = os.path.splitext(os.path.basename(notebook_path))[0]
    cells = cells_of(notebook_path, name)
    with open(prefix + ".py", "w") as f:
        for index, source in cells:
            f.write("# ---- cell %d\n%s\n" % (index, source))
    probe = {}
    namespace = {"__name__": "__main__", "_shell": _shell, "_probe": probe}
    for index, source in cells:
        print("---- cell %d" % index, flush=True)
        tree = ast.parse(source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell %d>" % index, "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<cell %d>" % index, "eval"), namespace)
            if value is not None:
                if isinstance(value, zip):
                    value = list(value)   # Python 2's zip returned a list, which the notebook shows
                print("Out[%d]: %s" % (index, _short(repr(value))))
        if index in NOTEBOOKS[name]["probes"]:
            exec(NOTEBOOKS[name]["probes"][index], namespace)
        plt.close("all")
    np.savez(prefix + ".npz", **{k: np.asarray(v) for k, v in probe.items()})


def _short(text, limit=600):
    return text if len(text) <= limit else text[:limit] + " ... (%d chars)" % len(text)


# ---------------------------------------------------------------- checks against the CLI

class Checks:
    def __init__(self, name):
        self.name, self.failed = name, False

    def compare(self, what, ours, theirs, rtol=1e-4, atol=1e-6):
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        if ours.shape != theirs.shape:
            self.report(what, False, "shapes differ: notebook %s, swiftjit %s" % (ours.shape, theirs.shape))
            return
        diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
        scale = float(np.abs(theirs).max()) if theirs.size else 0.0
        self.report(what, diff <= atol + rtol * scale, "max |diff| %.3g (of max |value| %.3g)" % (diff, scale))

    def equal(self, what, ours, theirs):
        same = np.array_equal(np.asarray(ours), np.asarray(theirs))
        self.report(what, same, "notebook %s, swiftjit %s" % (_short(str(ours), 200), _short(str(theirs), 200)))

    def report(self, what, ok, detail):
        self.failed |= not ok
        print("%s  %s: %s — %s" % ("ok  " if ok else "FAIL", self.name, what, detail), flush=True)


def swiftjit(*args):
    command = [SWIFTJIT] + [str(a) for a in args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("%s failed:\n%s%s" % (" ".join(command), result.stdout, result.stderr))
    return result.stdout


def swiftjit_run(prototxt, weights, inputs, blobs="outputs"):
    np.savez("_check_inputs.npz", **inputs)
    swiftjit("run", prototxt, "--weights", weights, "--input", "_check_inputs.npz", "-o", "_check_out.npz",
             "--blobs", blobs)
    return dict(np.load("_check_out.npz"))


def caffemodel_blobs(path):
    """{layer: [arrays]} read with protobuf alone (not through our caffe.Net)."""
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    return {layer.name: [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in layer.blobs]
            for layer in net.layer}


def write_caffemodel(path, layers):
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    for name, arrays in layers.items():
        layer = net.layer.add(name=name)
        for a in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(a.ravel().tolist())
    with open(path, "wb") as f:
        f.write(net.SerializeToString())


def check_classification(c, p):
    out = swiftjit_run("../models/bvlc_reference_caffenet/deploy.prototxt", CAFFENET_WEIGHTS,
                       {"data": p["input"][np.newaxis]})
    theirs = out["prob"][0]
    c.equal("predicted class", int(p["prob"].argmax()), int(theirs.argmax()))
    c.equal("top-5 classes", p["top_inds"], theirs.argsort()[::-1][:5])
    c.compare("top-5 probabilities %s" % np.array2string(p["prob"][p["top_inds"]], precision=6),
              p["prob"][p["top_inds"]], theirs[p["top_inds"]])
    c.compare("all 1000 probabilities", p["prob"], theirs)
    c.compare("cell 45 (same image again) probabilities", p["prob_again"], theirs)


def check_net_surgery(c, p):
    write_caffemodel("_check_conv.caffemodel", {"conv": [p["conv_w"], p["conv_b"]]})
    out = swiftjit_run("net_surgery/conv.prototxt", "_check_conv.caffemodel", {"data": p["conv_data"]})
    c.compare("conv.prototxt after Gaussian/Sobel surgery: conv output", p["conv_out"], out["conv"])
    before, after = float(p["conv0_mean_before"]), float(p["conv0_mean_after"])
    c.report("bias 0 → 1 raises filter 0's mean output by 1 (seen through the view `conv0`)",
             abs(after - before - 1) < 1e-5, "%.6f → %.6f" % (before, after))
    fc = caffemodel_blobs(CAFFENET_WEIGHTS)
    saved = caffemodel_blobs("net_surgery/bvlc_caffenet_full_conv.caffemodel")
    for a, b in (("fc6", "fc6-conv"), ("fc7", "fc7-conv"), ("fc8", "fc8-conv")):
        same = np.array_equal(fc[a][0].ravel(), saved[b][0].ravel()) and np.array_equal(fc[a][1], saved[b][1])
        c.report("%s %s → %s %s in the saved caffemodel" % (a, fc[a][0].shape, b, saved[b][0].shape), same,
                 "identical values" if same else "values differ")
    for name in ("conv1", "conv5"):
        same = all(np.array_equal(x, y) for x, y in zip(fc[name], saved[name]))
        c.report("%s kept from the init caffemodel" % name, same, "identical values" if same else "values differ")
    out = swiftjit_run("net_surgery/bvlc_caffenet_full_conv.prototxt",
                       "net_surgery/bvlc_caffenet_full_conv.caffemodel", {"data": p["full_conv_input"]})
    c.compare("full-conv prob %s" % (p["full_conv_prob"].shape,), p["full_conv_prob"], out["prob"])
    ours, theirs = p["full_conv_prob"][0].argmax(0), out["prob"][0].argmax(0)
    c.report("8×8 classification map (argmax per location)", np.array_equal(ours, theirs),
             "%d of 64 locations agree; classes %s" % ((ours == theirs).sum(), sorted(set(ours.ravel().tolist()))))


def train_losses(solver_path, edits, iterations):
    """`swiftjit train` on a copy of the solver with max_iter = iterations and no snapshots; the
    per-iteration losses from --loss-csv."""
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    s = caffe_pb2.SolverParameter()
    text_format.Merge(open(solver_path).read(), s)
    s.max_iter, s.snapshot = iterations, 0
    s.snapshot_after_train = False
    for field, value in edits.items():
        setattr(s, field, value)
    with open("_check_solver.prototxt", "w") as f:
        f.write(text_format.MessageToString(s))
    swiftjit("train", "--solver", "_check_solver.prototxt", "--loss-csv", "_check_loss.csv", "--plain")
    with open("_check_loss.csv") as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["loss"]) for r in rows], np.float32)


def check_lenet(c, p):
    # Cell 20's solver.net.forward() read the first train batch (64 records) before the first
    # step, as a Caffe Data layer does; `swiftjit train` starts at the first record, so it gets the
    # same records from an LMDB rotated by one batch.
    from mnist_like import rotated_lmdb
    rotated_lmdb("../swiftjit-data/mnist_train_lmdb", "_check_train_lmdb_from_64", 64)
    train = open("mnist/lenet_auto_train.prototxt").read().replace("../swiftjit-data/mnist_train_lmdb",
                                                                  "_check_train_lmdb_from_64")
    with open("_check_lenet_train.prototxt", "w") as f:
        f.write(train)
    ours = np.concatenate([[p["lenet_loss_0"]], p["lenet_train_loss"]])
    theirs = train_losses("mnist/lenet_auto_solver.prototxt", {"train_net": "_check_lenet_train.prototxt"}, len(ours))
    c.compare("LeNet train loss, iterations 0-%d (first %.4f, last %.4f)" % (len(ours) - 1, ours[0], ours[-1]),
              ours, theirs, rtol=1e-3)
    c.compare("LeNet train loss, iteration 0 alone", ours[:1], theirs[:1])
    print("      test accuracy in the notebook's loop: %s" % np.array2string(p["lenet_test_acc"], precision=3))
    ours = p["custom_train_loss"]
    theirs = train_losses("mnist/custom_auto_solver.prototxt", {}, len(ours))
    c.compare("custom net (random_seed 0xCAFFE) train loss, iterations 0-%d (first %.4f, last %.4f)"
              % (len(ours) - 1, ours[0], ours[-1]), ours, theirs, rtol=1e-3)
    print("      custom test accuracy in the notebook's loop: %s" % np.array2string(p["custom_test_acc"], precision=3))


CHECKS = {"00-classification": check_classification, "net_surgery": check_net_surgery,
          "01-learning-lenet": check_lenet}


def check(name, probes):
    c = Checks(name)
    p = dict(np.load(probes))
    try:
        CHECKS[name](c, p)
    except Exception as error:   # a missing probe or a CLI failure is a FAIL with its message
        c.report("check", False, "%s: %s" % (type(error).__name__, error))
    return 1 if c.failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
