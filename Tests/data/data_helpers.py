"""Helpers for the data-path tests: the swiftjit CLI, caffe_pb2, Caffe's RNG and shuffle, and a
fixture with a small folder of images (conftest.py re-exports it; the module has its own name
because Tests/python has a conftest of its own in the same pytest run).

The CLI is $SWIFTJIT_CLI, else the checkout's .build/release/swiftjit (tools/test.sh builds it).
caffe_pb2 is the caffe package's, or, when that package cannot be imported (no C library), loaded
from python/caffe/proto by itself, so these tests need only the CLI.
"""

import importlib.util
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The package's own module when the caffe package imports (tools/test.sh installs it), so that
# Tests/python in the same pytest run sees one caffe.proto.caffe_pb2, attribute of its package;
# otherwise loaded from its file alone (the CLI is all these tests need).
try:
    from caffe.proto import caffe_pb2
except ImportError:
    # One copy per pytest run (Tests/peers may have loaded it already): caffe.proto registers once.
    caffe_pb2 = sys.modules.get("caffe_pb2")
    if caffe_pb2 is None:
        _spec = importlib.util.spec_from_file_location("caffe_pb2", os.path.join(REPO, "python", "caffe", "proto", "caffe_pb2.py"))
        caffe_pb2 = sys.modules["caffe_pb2"] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(caffe_pb2)


def cli_path():
    return os.environ.get("SWIFTJIT_CLI") or os.path.join(REPO, ".build", "release", "swiftjit")


def swiftjit(*args, ok=True, cwd=None):
    """Runs the CLI; with ok=True it must succeed, else it must fail. Returns the CompletedProcess."""
    result = subprocess.run([cli_path()] + [str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    if ok:
        assert result.returncode == 0, "swiftjit %s failed:\n%s%s" % (" ".join(map(str, args)), result.stdout, result.stderr)
    else:
        assert result.returncode != 0, "swiftjit %s should have failed:\n%s" % (" ".join(map(str, args)), result.stdout)
    return result


class MT19937:
    """std::mt19937 / boost::mt19937 seeded with one 32-bit value (init_genrand), from its definition."""

    def __init__(self, seed):
        self.state = [seed & 0xFFFFFFFF]
        for i in range(1, 624):
            self.state.append((1812433253 * (self.state[-1] ^ (self.state[-1] >> 30)) + i) & 0xFFFFFFFF)
        self.index = 624

    def __call__(self):
        if self.index >= 624:
            for i in range(624):
                y = (self.state[i] & 0x80000000) | (self.state[(i + 1) % 624] & 0x7FFFFFFF)
                self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.index = 0
        y = self.state[self.index]
        self.index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y


def boost_uniform_int(gen, upper):
    """boost::uniform_int<>(0, upper)(gen) for a 32-bit engine (boost's generate_uniform_int)."""
    if upper == 0:
        return 0
    brange = 0xFFFFFFFF
    bucket = brange // (upper + 1)
    if brange % (upper + 1) == upper:
        bucket += 1
    while True:
        r = gen() // bucket
        if r <= upper:
            return r


def caffe_shuffle(items, gen):
    """caffe::shuffle (util/rng.hpp) over a list, in place."""
    for i in range(len(items) - 1, 0, -1):
        j = boost_uniform_int(gen, i)
        items[i], items[j] = items[j], items[i]
    return items


@pytest.fixture
def image_folder(tmp_path):
    """12 images, 20 wide and 16 high: colour and grey PNGs, colour JPEGs, a colour and a grey BMP,
    with a list file."""
    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    (root / "sub dir").mkdir(parents=True)
    lines = []
    for i in range(12):
        if i % 3 == 2:
            name, img = "sub dir/%02d.png" % i, rng.integers(0, 256, (16, 20), dtype=np.uint8)
        elif i % 3 == 1:
            name = "%02d.jpg" % i
            y, x = np.mgrid[0:16, 0:20]
            img = np.stack([(x * 12 + i) % 256, (y * 15) % 256, ((x + y) * 7 + 3 * i) % 256], -1).astype(np.uint8)
        else:
            name, img = "%02d.png" % i, rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        if i in (3, 8):
            name = name[:-4] + ".bmp"
        assert cv2.imwrite(str(root / name), img)
        lines.append("%s %d" % (name, i % 5))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path
