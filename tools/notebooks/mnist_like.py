"""MNIST-shaped data made locally: 28×28 uint8 digit-like images with labels 0–9, written as the
Caffe `Datum` LMDBs `examples/mnist/create_mnist.sh` would make (keys "%08d", 1×28×28, encoded
false), so nets and solvers that read MNIST run without downloading it.

Each digit is drawn from seven-segment strokes, shifted by up to 2 pixels, thickened at random and
noised, from a seeded generator: the same arguments give the same bytes.

    python3 mnist_like.py OUT_DIR [--train 2000] [--test 1000] [--seed 0]
        → OUT_DIR/mnist_train_lmdb, OUT_DIR/mnist_test_lmdb
"""
import argparse
import os

import numpy as np

# Segments a..g of a seven-segment digit as (row0, row1, col0, col1) on a 20×12 canvas.
_SEGMENTS = {
    "a": (0, 2, 1, 11), "b": (1, 10, 10, 12), "c": (10, 19, 10, 12), "d": (18, 20, 1, 11),
    "e": (10, 19, 0, 2), "f": (1, 10, 0, 2), "g": (9, 11, 1, 11),
}
_DIGITS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def digit_images(count, seed):
    """`count` images (count×28×28 uint8) and their labels (count int64, uniform over 0–9)."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 10, size=count)
    images = np.zeros((count, 28, 28), np.float32)
    for i, label in enumerate(labels):
        canvas = np.zeros((20, 12), np.float32)
        for s in _DIGITS[label]:
            r0, r1, c0, c1 = _SEGMENTS[s]
            canvas[r0:r1, c0:c1] = 1.0
        dy, dx = rng.randint(-2, 3, size=2)
        images[i, 4 + dy:24 + dy, 8 + dx:20 + dx] = canvas
    images = images * rng.uniform(0.6, 1.0, size=(count, 1, 1)) + rng.normal(0, 0.08, images.shape)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels.astype(np.int64)


def write_lmdb(path, images, labels):
    """Writes images (N×H×W uint8) with labels as Datum records keyed "%08d", as convert_mnist_data."""
    import lmdb
    from caffe.proto import caffe_pb2
    env = lmdb.open(path, map_size=max(1 << 24, images.nbytes * 4), subdir=True)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images, labels)):
            datum = caffe_pb2.Datum(channels=1, height=image.shape[0], width=image.shape[1],
                                    data=image.tobytes(), label=int(label))
            txn.put(b"%08d" % i, datum.SerializeToString())
    env.close()


def rotated_lmdb(source, target, shift):
    """A copy of a Datum LMDB whose records start `shift` records later (and wrap around): what a
    Data layer reads after `shift` records were consumed, for a reader that starts at the first."""
    import lmdb
    with lmdb.open(source, readonly=True, lock=False).begin() as txn:
        values = [v for _, v in txn.cursor()]
    shift %= len(values)
    values = values[shift:] + values[:shift]
    env = lmdb.open(target, map_size=max(1 << 24, 4 * sum(map(len, values))))
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(b"%08d" % i, v)
    env.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name, count, seed in (("train", args.train, args.seed), ("test", args.test, args.seed + 1)):
        images, labels = digit_images(count, seed)
        write_lmdb(os.path.join(args.out_dir, "mnist_%s_lmdb" % name), images, labels)


if __name__ == "__main__":
    main()
