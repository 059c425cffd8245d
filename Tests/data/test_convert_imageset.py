"""`swiftjit convert-imageset` and `compute-image-mean` against Python's lmdb, caffe_pb2 and
OpenCV/Pillow decoding of the same files."""

import lmdb
import numpy as np
import cv2
from PIL import Image

from data_helpers import MT19937, caffe_pb2, caffe_shuffle, swiftjit


def test_the_reference_mt19937_is_the_standard_one():
    assert MT19937(5489)() == 3499211612
    generator = MT19937(1234)
    assert [generator() for _ in range(3)] == [822569775, 2137449171, 2671936806]


def read_lmdb(path):
    """[(key, Datum)] in key order, with Python's lmdb and caffe_pb2."""
    out = []
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        for key, value in txn.cursor():
            datum = caffe_pb2.Datum()
            datum.ParseFromString(value)
            out.append((key.decode(), datum))
    return out


def datum_pixels(datum):
    return np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)


def list_entries(folder):
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in (folder / "list.txt").read_text().splitlines()]


def opencv_chw(path, color=True):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    return img.transpose(2, 0, 1) if color else img[np.newaxis]


def test_lmdb_holds_the_opencv_pixels_and_labels_in_list_order(image_folder):
    db = image_folder / "db"
    swiftjit("convert-imageset", "--quiet", str(image_folder / "images") + "/", image_folder / "list.txt", db)
    records = read_lmdb(db)
    entries = list_entries(image_folder)
    assert [k for k, _ in records] == ["%08d_%s" % (i, p) for i, (p, _) in enumerate(entries)]
    for (key, datum), (path, label) in zip(records, entries):
        assert datum.label == label and not datum.encoded
        np.testing.assert_array_equal(datum_pixels(datum), opencv_chw(image_folder / "images" / path), err_msg=key)
        if path.endswith(".png"):
            rgb = np.asarray(Image.open(image_folder / "images" / path).convert("RGB"))
            np.testing.assert_array_equal(datum_pixels(datum), rgb[:, :, ::-1].transpose(2, 0, 1))


def test_shuffle_with_a_seed_gives_caffes_order(image_folder):
    db = image_folder / "shuffled"
    swiftjit("convert-imageset", "--quiet", "--shuffle", "--seed", 1234, str(image_folder / "images") + "/",
             image_folder / "list.txt", db)
    expected = caffe_shuffle(list_entries(image_folder), MT19937(1234))
    assert expected != list_entries(image_folder)
    records = read_lmdb(db)
    assert [k for k, _ in records] == ["%08d_%s" % (i, p) for i, (p, _) in enumerate(expected)]
    assert [d.label for _, d in records] == [label for _, label in expected]


def test_resize_equals_cv2_resize_in_grey_and_colour(image_folder):
    for flags, mode in ((["--gray"], cv2.IMREAD_GRAYSCALE), ([], cv2.IMREAD_COLOR)):
        db = image_folder / ("small%d" % len(flags))
        swiftjit("convert-imageset", "--quiet", *flags, "--resize-height", 11, "--resize_width", 27,
                 str(image_folder / "images") + "/", image_folder / "list.txt", db)
        for (key, datum), (path, _) in zip(read_lmdb(db), list_entries(image_folder)):
            theirs = cv2.resize(cv2.imread(str(image_folder / "images" / path), mode), (27, 11))
            theirs = theirs[np.newaxis] if theirs.ndim == 2 else theirs.transpose(2, 0, 1)
            np.testing.assert_array_equal(datum_pixels(datum), theirs, err_msg=key)
        upscaled = image_folder / ("large%d" % len(flags))
        swiftjit("convert-imageset", "--quiet", *flags, "--resize-height", 37, "--resize-width", 45,
                 str(image_folder / "images") + "/", image_folder / "list.txt", upscaled)
        for (key, datum), (path, _) in zip(read_lmdb(upscaled), list_entries(image_folder)):
            theirs = cv2.resize(cv2.imread(str(image_folder / "images" / path), mode), (45, 37))
            theirs = theirs[np.newaxis] if theirs.ndim == 2 else theirs.transpose(2, 0, 1)
            np.testing.assert_array_equal(datum_pixels(datum), theirs, err_msg=key)


def test_encoded_keeps_the_files_and_encode_type_reencodes(image_folder):
    db = image_folder / "encoded"
    swiftjit("convert-imageset", "--quiet", "--encoded", str(image_folder / "images") + "/", image_folder / "list.txt", db)
    for (key, datum), (path, label) in zip(read_lmdb(db), list_entries(image_folder)):
        assert datum.encoded and datum.label == label
        assert datum.data == (image_folder / "images" / path).read_bytes()
        decoded = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decoded, cv2.imread(str(image_folder / "images" / path), cv2.IMREAD_COLOR))
    png = image_folder / "png"
    swiftjit("convert-imageset", "--quiet", "--encode-type", "png", "--resize-height", 8, "--resize-width", 10,
             str(image_folder / "images") + "/", image_folder / "list.txt", png)
    raw = image_folder / "raw"
    swiftjit("convert-imageset", "--quiet", "--resize-height", 8, "--resize-width", 10,
             str(image_folder / "images") + "/", image_folder / "list.txt", raw)
    for (_, encoded), (_, plain) in zip(read_lmdb(png), read_lmdb(raw)):
        assert encoded.encoded and encoded.data[:4] == b"\x89PNG"
        decoded = cv2.imdecode(np.frombuffer(encoded.data, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decoded.transpose(2, 0, 1), datum_pixels(plain))


def test_compute_image_mean_equals_numpy_for_lmdb_and_leveldb(image_folder):
    lmdb_path, leveldb_path = image_folder / "db", image_folder / "ldb"
    swiftjit("convert-imageset", "--quiet", str(image_folder / "images") + "/", image_folder / "list.txt", lmdb_path)
    swiftjit("convert-imageset", "--quiet", "--backend", "leveldb", str(image_folder / "images") + "/",
             image_folder / "list.txt", leveldb_path)
    assert (leveldb_path / "CURRENT").exists()
    expected = np.mean([opencv_chw(image_folder / "images" / p).astype(np.float64) for p, _ in list_entries(image_folder)], 0)
    for db, backend in ((lmdb_path, []), (leveldb_path, ["--backend", "leveldb"])):
        out = image_folder / ("mean_%s.binaryproto" % db.name)
        result = swiftjit("compute-image-mean", "--quiet", *backend, db, out)
        blob = caffe_pb2.BlobProto()
        blob.ParseFromString(out.read_bytes())
        assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 16, 20)
        np.testing.assert_allclose(np.array(blob.data).reshape(3, 16, 20), expected, atol=1e-4)
        for c in range(3):
            assert "mean_value channel [%d]: " % c in result.stdout
            value = float(result.stdout.split("mean_value channel [%d]: " % c)[1].split()[0])
            assert abs(value - expected[c].mean()) < 1e-4


def test_unreadable_images_are_skipped_with_their_list_line(image_folder):
    (image_folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with open(image_folder / "list.txt", "a") as f:
        f.write("missing.jpg 1\nbroken.png 2\n")
    db = image_folder / "db"
    result = swiftjit("convert-imageset", "--quiet", str(image_folder / "images") + "/", image_folder / "list.txt", db)
    assert "list.txt:13: skipping image" in result.stderr and "missing.jpg" in result.stderr and "no such file" in result.stderr
    assert "list.txt:14: skipping image" in result.stderr and "broken.png" in result.stderr
    assert len(read_lmdb(db)) == 12


def test_a_failed_conversion_leaves_no_database(image_folder):
    """--check-size stops at the first image of another size; nothing named like the database remains."""
    cv2.imwrite(str(image_folder / "images" / "big.png"), np.zeros((30, 30, 3), np.uint8))
    with open(image_folder / "list.txt", "a") as f:
        f.write("big.png 0\n")
    db = image_folder / "db"
    result = swiftjit("convert-imageset", "--quiet", "--check-size", str(image_folder / "images") + "/",
                      image_folder / "list.txt", db, ok=False)
    assert "list.txt:13:1: image" in result.stderr and "big.png" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert not db.exists() and not (image_folder / "db.incomplete").exists()
    swiftjit("convert-imageset", "--quiet", str(image_folder / "images") + "/", image_folder / "list.txt", db)
    assert len(read_lmdb(db)) == 13
    assert not (image_folder / "db.incomplete").exists()


def test_a_killed_conversion_leaves_only_an_incomplete_folder(tmp_path):
    import signal
    import subprocess
    import time
    from data_helpers import cli_path

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3000):
        cv2.imwrite(str(tmp_path / "images" / ("%04d.png" % i)), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
        lines.append("%04d.png %d" % (i, i % 7))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    db = tmp_path / "db"
    process = subprocess.Popen([cli_path(), "convert-imageset", "--quiet", str(tmp_path / "images") + "/",
                                str(tmp_path / "list.txt"), str(db)], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (tmp_path / "db.incomplete").exists() and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "db.incomplete").exists() and not db.exists()
    swiftjit("convert-imageset", "--quiet", str(tmp_path / "images") + "/", tmp_path / "list.txt", db)
    assert not (tmp_path / "db.incomplete").exists()
    assert len(read_lmdb(db)) == 3000
