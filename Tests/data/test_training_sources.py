"""Training from every data source: LeNet from ImageData over PNGs, HDF5Data, LevelDB and LMDB of
the same pixels gives the same losses; BVLC's hdf5_classification trains from h5py files; bad
inputs give one-line errors naming the file (and the list line)."""

import csv
import os

import cv2
import h5py
import numpy as np
import pytest

from data_helpers import REPO, swiftjit

LENET_BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1" inner_product_param { num_output: 32 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score" inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""

SCALE = "transform_param { scale: 0.00390625 }"


def digits(count, seed):
    """Grey 28×28 images: a bright bar whose position and angle depend on the label, plus noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label = i % 10
        img = rng.integers(0, 60, (28, 28)).astype(np.uint8)
        cv2.line(img, (4 + 2 * label, 3), (24 - label, 25), 255, 2)
        images.append(img)
        labels.append(label)
    return np.stack(images), np.array(labels)


def train_losses(folder, name, data_layer, iterations=40):
    (folder / (name + ".prototxt")).write_text('name: "lenet"\n' + data_layer + LENET_BODY)
    (folder / (name + "_solver.prototxt")).write_text("""
train_net: "%s"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75
max_iter: %d display: 0 snapshot: 0 snapshot_after_train: false random_seed: 51966
snapshot_prefix: "%s"
""" % (folder / (name + ".prototxt"), iterations, folder / name))
    swiftjit("train", "--solver", folder / (name + "_solver.prototxt"), "--loss-csv", folder / (name + ".csv"), "--plain")
    with open(folder / (name + ".csv")) as f:
        return np.array([float(row["loss"]) for row in csv.DictReader(f)], np.float32)


def test_lenet_losses_are_the_same_from_imagedata_hdf5_leveldb_and_lmdb(tmp_path):
    images, labels = digits(48, 5)
    (tmp_path / "png").mkdir()
    lines = []
    for i, (img, label) in enumerate(zip(images, labels)):
        cv2.imwrite(str(tmp_path / "png" / ("%03d.png" % i)), img)
        lines.append("%03d.png %d" % (i, label))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    root = str(tmp_path / "png") + "/"
    swiftjit("convert-imageset", "--quiet", "--gray", root, tmp_path / "list.txt", tmp_path / "lmdb")
    swiftjit("convert-imageset", "--quiet", "--gray", "--backend", "leveldb", root, tmp_path / "list.txt", tmp_path / "leveldb")
    with h5py.File(tmp_path / "digits.h5", "w") as f:
        f["data"] = (images[:, np.newaxis].astype(np.float32) * np.float32(0.00390625))
        f["label"] = labels.astype(np.float32)
    (tmp_path / "h5list.txt").write_text(str(tmp_path / "digits.h5") + "\n")

    top = 'top: "data" top: "label"'
    losses = {
        "imagedata": train_losses(tmp_path, "imagedata", 'layer { name: "data" type: "ImageData" %s %s image_data_param '
                                  '{ source: "%s" root_folder: "%s" batch_size: 16 is_color: false } }'
                                  % (top, SCALE, tmp_path / "list.txt", root)),
        "hdf5": train_losses(tmp_path, "hdf5", 'layer { name: "data" type: "HDF5Data" %s hdf5_data_param '
                             '{ source: "%s" batch_size: 16 } }' % (top, tmp_path / "h5list.txt")),
        "leveldb": train_losses(tmp_path, "leveldb", 'layer { name: "data" type: "Data" %s %s data_param '
                                '{ source: "%s" batch_size: 16 backend: LEVELDB } }' % (top, SCALE, tmp_path / "leveldb")),
        "lmdb": train_losses(tmp_path, "lmdb", 'layer { name: "data" type: "Data" %s %s data_param '
                             '{ source: "%s" batch_size: 16 backend: LMDB } }' % (top, SCALE, tmp_path / "lmdb")),
    }
    assert len(losses["lmdb"]) == 40 and np.all(np.isfinite(losses["lmdb"]))
    assert losses["lmdb"][-5:].mean() < losses["lmdb"][:5].mean()
    for name, values in losses.items():
        np.testing.assert_allclose(values, losses["lmdb"], rtol=1e-5, atol=1e-6, err_msg=name)


def write_classification(folder, name, rows, seed, files=1):
    """hdf5_classification's data: 4 features, label = a linear rule; written with h5py in `files` parts."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0], np.float32) > 0).astype(np.float32)
    paths = []
    for part, (xs, ys) in enumerate(zip(np.array_split(x, files), np.array_split(y, files))):
        path = folder / ("%s_%d.h5" % (name, part))
        with h5py.File(path, "w") as f:
            f["data"], f["label"] = xs, ys
        paths.append(str(path))
    (folder / (name + ".txt")).write_text("\n".join(paths) + "\n")


def test_hdf5_classification_trains_end_to_end(tmp_path):
    write_classification(tmp_path, "train", 600, 1, files=3)
    write_classification(tmp_path, "test", 200, 2)
    net = open(os.path.join(REPO, "..", "shared", "zoo", "hdf5_classification", "train_val.prototxt")).read()
    net = net.replace("examples/hdf5_classification/data/train.txt", str(tmp_path / "train.txt"))
    net = net.replace("examples/hdf5_classification/data/test.txt", str(tmp_path / "test.txt"))
    (tmp_path / "train_val.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text("""
net: "%s"
test_iter: 20 test_interval: 300 base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.1
stepsize: 5000 max_iter: 300 display: 0 snapshot: 0 snapshot_after_train: false random_seed: 7 snapshot_prefix: "%s"
""" % (tmp_path / "train_val.prototxt", tmp_path / "lr"))
    result = swiftjit("train", "--solver", tmp_path / "solver.prototxt", "--loss-csv", tmp_path / "loss.csv", "--plain")
    accuracies = [float(line.split("=")[1]) for line in result.stdout.splitlines() + result.stderr.splitlines()
                  if "Test net output" in line and "accuracy" in line]
    assert accuracies, result.stdout + result.stderr
    assert accuracies[-1] > 0.9
    with open(tmp_path / "loss.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert np.mean(losses[-20:]) < np.mean(losses[:20])


# ------------------------------------------------------------------ one-line errors


def failing_train(folder, data_layer):
    (folder / "bad.prototxt").write_text('name: "bad"\n' + data_layer + LENET_BODY)
    (folder / "bad_solver.prototxt").write_text('train_net: "%s" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 0 '
                                               'snapshot: 0 snapshot_after_train: false snapshot_prefix: "%s"'
                                               % (folder / "bad.prototxt", folder / "bad"))
    result = swiftjit("train", "--solver", folder / "bad_solver.prototxt", "--plain", ok=False)
    assert result.returncode > 0, "swiftjit was killed by signal %d:\n%s" % (-result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Fatal error" not in result.stderr
    return errors[0]


def image_data_layer(folder):
    return ('layer { name: "data" type: "ImageData" top: "data" top: "label" image_data_param '
            '{ source: "%s" root_folder: "%s/" batch_size: 4 is_color: false } }' % (folder / "list.txt", folder))


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_imagedata_names_the_list_line_of_a_missing_or_corrupt_image(tmp_path, problem):
    images, _ = digits(3, 1)
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / ("%d.png" % i)), img)
    if problem == "corrupt":
        (tmp_path / "bad.png").write_bytes((tmp_path / "0.png").read_bytes()[:60])
    (tmp_path / "list.txt").write_text("0.png 0\n1.png 1\n%s 2\n2.png 3\n" % ("bad.png" if problem == "corrupt" else "gone.png"))
    error = failing_train(tmp_path, image_data_layer(tmp_path))
    assert "list.txt:3:1:" in error and "layer 'data'" in error
    assert ("gone.png" in error and "does not exist" in error) if problem == "missing" else ("bad.png" in error and "PNG" in error)


def hdf5_layer(folder):
    return ('layer { name: "data" type: "HDF5Data" top: "data" top: "label" hdf5_data_param '
            '{ source: "%s" batch_size: 4 } }' % (folder / "h5list.txt"))


def test_hdf5data_names_a_truncated_file(tmp_path):
    with h5py.File(tmp_path / "full.h5", "w") as f:
        f["data"] = np.zeros((8, 1, 28, 28), np.float32)
        f["label"] = np.zeros(8, np.float32)
    data = (tmp_path / "full.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "h5list.txt").write_text(str(tmp_path / "cut.h5") + "\n")
    error = failing_train(tmp_path, hdf5_layer(tmp_path))
    assert "cut.h5" in error and ("truncated" in error or "damaged" in error)


def test_hdf5data_file_that_crashes_libhdf5_is_an_error_not_a_crash(tmp_path):
    """libhdf5 1.10 dereferences NULL decoding this fuzzed file's local heap (Tests/Fuzz/libhdf5-crashes):
    swiftjit reads HDF5 files in a child process, so `train` ends with one error line naming the file and
    the signal, and a nonzero exit status, not death by SIGSEGV."""
    crash = os.path.join(REPO, "Tests", "Fuzz", "libhdf5-crashes", "segv-in-H5HL_protect-local-heap.h5")
    (tmp_path / "h5list.txt").write_text(crash + "\n")
    error = failing_train(tmp_path, hdf5_layer(tmp_path))
    assert crash in error and "layer 'data'" in error
    assert "libhdf5 crashed (SIGSEGV) reading dataset 'data': the file is damaged" in error


@pytest.mark.parametrize("problem", ["rows", "second file"])
def test_hdf5data_names_a_file_whose_dataset_has_the_wrong_shape(tmp_path, problem):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((4, 1, 28, 28), np.float32)
        f["label"] = np.zeros(3 if problem == "rows" else 4, np.float32)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["data"] = np.zeros((4, 1, 27, 28), np.float32)
        f["label"] = np.zeros(4, np.float32)
    (tmp_path / "h5list.txt").write_text("%s\n%s\n" % (tmp_path / "a.h5", tmp_path / "b.h5"))
    error = failing_train(tmp_path, hdf5_layer(tmp_path))
    if problem == "rows":
        assert "a.h5" in error and "'label' has 3 rows but 'data' has 4" in error
    else:
        assert "b.h5" in error and "1×27×28" in error and "a.h5" in error


def test_hdf5output_writes_what_numpy_expects(tmp_path):
    """HDF5Output (through `swiftjit run`) writes its bottoms as 'data' and 'label', Caffe's 4-D shapes."""
    (tmp_path / "net.prototxt").write_text("""
layer { name: "in" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 dim: 2 dim: 5 } shape { dim: 4 } } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
layer { name: "flat" type: "Flatten" bottom: "relu" top: "flat" }
layer { name: "out" type: "HDF5Output" bottom: "relu" bottom: "label" hdf5_output_param { file_name: "%s" } }
""" % (tmp_path / "out.h5"))
    rng = np.random.default_rng(4)
    data = rng.normal(size=(4, 3, 2, 5)).astype(np.float32)
    label = np.arange(4, dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", data=data, label=label)
    swiftjit("run", tmp_path / "net.prototxt", "--input", tmp_path / "inputs.npz", "-o", tmp_path / "blobs.npz")
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert sorted(f.keys()) == ["data", "label"]
        assert f["data"].dtype == np.float32 and f["data"].shape == (4, 3, 2, 5)
        np.testing.assert_array_equal(f["data"][()], np.maximum(data, 0))
        assert f["label"].shape == (4, 1, 1, 1)
        np.testing.assert_array_equal(f["label"][()].reshape(4), label)
    np.testing.assert_array_equal(np.load(tmp_path / "blobs.npz")["flat"], np.maximum(data, 0).reshape(4, 30))


def test_extract_features_writes_the_forward_blobs_per_item(tmp_path):
    """extract-features over an LMDB equals `swiftjit run` on the same pixels; LMDB Datums and .npz agree."""
    import lmdb
    from data_helpers import caffe_pb2

    images, labels = digits(24, 9)
    (tmp_path / "png").mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(tmp_path / "png" / ("%02d.png" % i)), img)
    (tmp_path / "list.txt").write_text("".join("%02d.png %d\n" % (i, l) for i, l in enumerate(labels)))
    swiftjit("convert-imageset", "--quiet", "--gray", str(tmp_path / "png") + "/", tmp_path / "list.txt", tmp_path / "lmdb")
    body = LENET_BODY.split('layer { name: "loss"')[0]
    (tmp_path / "net.prototxt").write_text('layer { name: "data" type: "Data" top: "data" top: "label" %s '
                                           'data_param { source: "%s" batch_size: 8 backend: LMDB } }\n'
                                           % (SCALE, tmp_path / "lmdb") + body)
    (tmp_path / "deploy.prototxt").write_text('layer { name: "data" type: "Input" top: "data" '
                                              'input_param { shape { dim: 24 dim: 1 dim: 28 dim: 28 } } }\n' + body)
    swiftjit("init", tmp_path / "deploy.prototxt", "--seed", 3, "-o", tmp_path / "w.caffemodel")
    swiftjit("extract-features", "--quiet", tmp_path / "net.prototxt", tmp_path / "w.caffemodel", "score,fc1",
             "%s,%s" % (tmp_path / "score_lmdb", tmp_path / "fc1.npz"), 3)
    np.save(tmp_path / "x.npy", images[:, np.newaxis].astype(np.float32) * np.float32(0.00390625))
    swiftjit("run", tmp_path / "deploy.prototxt", "--weights", tmp_path / "w.caffemodel", "--input",
             "data=%s" % (tmp_path / "x.npy"), "-o", tmp_path / "ref.npz", "--blobs", "score,fc1")
    reference = np.load(tmp_path / "ref.npz")
    np.testing.assert_allclose(np.load(tmp_path / "fc1.npz")["fc1"], reference["fc1"], rtol=1e-5, atol=1e-6)
    with lmdb.open(str(tmp_path / "score_lmdb"), readonly=True, lock=False) as env, env.begin() as txn:
        records = list(txn.cursor())
    assert [k.decode() for k, _ in records] == ["%010d" % i for i in range(24)]
    scores = []
    for _, value in records:
        datum = caffe_pb2.Datum()
        datum.ParseFromString(value)
        assert (datum.channels, datum.height, datum.width) == (10, 1, 1)
        scores.append(datum.float_data)
    np.testing.assert_allclose(np.array(scores), reference["score"], rtol=1e-5, atol=1e-6)


def c_round(x):
    """C's round(): half away from zero, on a float32 value."""
    x = np.float32(x)
    return int(np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)))


def window_reference(image, box, crop, pad, mirrored, mean, scale):
    """Caffe's WindowDataLayer::load_batch for one window (warp mode), with cv2 for resize and flip."""
    x1, y1, x2, y2 = box
    pad_w = pad_h = 0
    size = (crop, crop)
    if pad > 0:
        f = np.float32
        context_scale = f(crop) / f(crop - 2 * pad)
        half_h, half_w = f(y2 - y1 + 1) / f(2), f(x2 - x1 + 1) / f(2)
        cx, cy = f(x1) + half_w, f(y1) + half_h
        x1, x2 = c_round(cx - half_w * context_scale), c_round(cx + half_w * context_scale)
        y1, y2 = c_round(cy - half_h * context_scale), c_round(cy + half_h * context_scale)
        uh, uw = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - image.shape[1] + 1), max(0, y2 - image.shape[0] + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f(crop) / f(uw), f(crop) / f(uh)
        width, height = c_round(f(x2 - x1 + 1) * sx), c_round(f(y2 - y1 + 1) * sy)
        px1, px2, py1 = c_round(f(px1) * sx), c_round(f(px2) * sx), c_round(f(py1) * sy)
        pad_h, pad_w = py1, (px2 if mirrored else px1)
        height, width = min(height, crop - pad_h), min(width, crop - pad_w)
        size = (width, height)
    warped = cv2.resize(image[y1:y2 + 1, x1:x2 + 1], size, interpolation=cv2.INTER_LINEAR)
    if mirrored:
        warped = cv2.flip(warped, 1)
    out = np.zeros((3, crop, crop), np.float32)
    region = (warped.astype(np.float32) - np.array(mean, np.float32)) * np.float32(scale)
    out[:, pad_h:pad_h + warped.shape[0], pad_w:pad_w + warped.shape[1]] = region.transpose(2, 0, 1)
    return out


def test_windowdata_batches_follow_caffes_sampling_and_geometry(tmp_path):
    from data_helpers import MT19937, caffe_pb2

    rng = np.random.default_rng(11)
    pictures = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), rng.integers(0, 256, (36, 28, 3), dtype=np.uint8)]
    for i, picture in enumerate(pictures):
        cv2.imwrite(str(tmp_path / ("%d.png" % i)), picture)
    windows = [[(1, 0.9, 2, 3, 20, 25), (0, 0.1, 0, 0, 39, 29), (2, 0.7, 30, 10, 39, 29), (0, 0.3, 5, 5, 12, 9)],
               [(3, 0.8, 0, 0, 27, 35), (0, 0.2, 10, 20, 27, 35), (1, 0.45, 1, 1, 5, 5)]]
    text = ""
    for i, (picture, boxes) in enumerate(zip(pictures, windows)):
        text += "# %d\n%d.png\n3\n%d\n%d\n%d\n" % (i, i, picture.shape[0], picture.shape[1], len(boxes))
        text += "".join("%d %g %d %d %d %d\n" % b for b in boxes)
    (tmp_path / "windows.txt").write_text(text)
    (tmp_path / "net.prototxt").write_text("""
layer { name: "data" type: "WindowData" top: "data" top: "label"
  transform_param { crop_size: 16 mirror: true mean_value: 10 mean_value: 20 mean_value: 30 }
  window_data_param { source: "%s" root_folder: "%s/" batch_size: 6 fg_threshold: 0.5 bg_threshold: 0.5
                      fg_fraction: 0.5 context_pad: 3 scale: 0.5 } }
""" % (tmp_path / "windows.txt", tmp_path))
    weights = caffe_pb2.NetParameter()
    weights.name = "no parameters"
    (tmp_path / "empty.caffemodel").write_bytes(weights.SerializeToString())
    swiftjit("extract-features", "--quiet", tmp_path / "net.prototxt", tmp_path / "empty.caffemodel", "data,label",
             "%s,%s" % (tmp_path / "data.npz", tmp_path / "label.npz"), 2)
    data, labels = np.load(tmp_path / "data.npz")["data"], np.load(tmp_path / "label.npz")["label"]
    assert data.shape == (12, 3, 16, 16) and labels.shape == (12,)

    foreground = [(i, b) for i, boxes in enumerate(windows) for b in boxes if b[1] >= 0.5]
    background = [(i, (0,) + b[1:]) for i, boxes in enumerate(windows) for b in boxes if b[1] < 0.5]
    global_rng = MT19937(1)      # extract-features seeds the net with 1; TEST phase
    global_rng()                 # the transformer's InitRand (mirror is set)
    prefetch = MT19937(global_rng())
    item = 0
    for _ in range(2):
        for pool, count in ((background, 3), (foreground, 3)):
            for _ in range(count):
                image, box = pool[prefetch() % len(pool)]
                mirrored = prefetch() % 2 == 1
                expected = window_reference(pictures[image], box[2:], 16, 3, mirrored, (10, 20, 30), 0.5)
                np.testing.assert_array_equal(data[item], expected, err_msg="item %d" % item)
                assert labels[item] == box[0]
                item += 1


def test_compile_reads_imagedata_and_hdf5data_shapes_from_their_sources(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30), np.uint8))
    (tmp_path / "list.txt").write_text("a.png 1\n")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["features"], f["target"] = np.zeros((5, 7), np.float32), np.zeros((5, 2), np.float32)
    (tmp_path / "h5.txt").write_text("x.h5\n")
    (tmp_path / "net.prototxt").write_text("""
layer { name: "images" type: "ImageData" top: "data" top: "label" image_data_param { source: "list.txt" batch_size: 2 is_color: false } }
layer { name: "h5" type: "HDF5Data" top: "features" top: "target" hdf5_data_param { source: "h5.txt" batch_size: 3 } }
""")
    out = swiftjit("compile", "net.prototxt", cwd=tmp_path).stdout
    assert "data 2×1×20×30" in out and "features 3×7" in out and "target 3×2" in out, out
