"""SegNet's and ENet's DenseImageData layer: batches of images and label images read through the
training data path (`extract-features` dumps its tops) equal OpenCV's reading of the same PNGs as
the fork's DenseImageDataLayer does it (cv2.imread, INTER_LINEAR for images and INTER_NEAREST for
labels, transform_param's scale and mean on images only, mirror and crop applied to both with
Caffe's random draws), and bad pairs give one-line errors naming the list line."""

import cv2
import numpy as np

from data_helpers import MT19937, caffe_pb2, caffe_shuffle, swiftjit

HEIGHT, WIDTH, PAIRS = 20, 30, 5


def write_pairs(folder):
    """Colour images and label images of class ids 0..11 (with a label region per image)."""
    rng = np.random.default_rng(4)
    (folder / "img").mkdir()
    (folder / "lab").mkdir()
    images, labels, lines = [], [], []
    for i in range(PAIRS):
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        label = rng.integers(0, 12, (HEIGHT, WIDTH), dtype=np.uint8)
        label[2:9, 4:17] = i
        cv2.imwrite(str(folder / "img" / ("%d.png" % i)), image)
        cv2.imwrite(str(folder / "lab" / ("%d.png" % i)), label)
        images.append(image)
        labels.append(label)
        lines.append("img/%d.png lab/%d.png\n" % (i, i))
    (folder / "list.txt").write_text("".join(lines))
    return images, labels


def extract(folder, dense_param, transform="", batches=3):
    (folder / "net.prototxt").write_text(
        'layer { name: "data" type: "DenseImageData" top: "data" top: "label" %s '
        'dense_image_data_param { source: "%s" root_folder: "%s/" %s } }\n' % (transform, folder / "list.txt", folder, dense_param))
    weights = caffe_pb2.NetParameter()
    weights.name = "no parameters"
    (folder / "empty.caffemodel").write_bytes(weights.SerializeToString())
    swiftjit("extract-features", "--quiet", folder / "net.prototxt", folder / "empty.caffemodel", "data,label",
             "%s,%s" % (folder / "data.npz", folder / "label.npz"), batches)
    return np.load(folder / "data.npz")["data"], np.load(folder / "label.npz")["label"]


def test_resized_batches_equal_opencv(tmp_path):
    images, labels = write_pairs(tmp_path)
    data, label = extract(tmp_path, "batch_size: 2 new_height: 13 new_width: 17",
                          "transform_param { scale: 0.5 mean_value: 10 mean_value: 20 mean_value: 30 }")
    assert data.shape == (6, 3, 13, 17) and label.shape == (6, 1, 13, 17)
    for item in range(6):
        i = item % PAIRS   # the list wraps after 5 pairs
        image = cv2.resize(images[i], (17, 13), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        expected = ((image - np.array([10, 20, 30], np.float32)) * np.float32(0.5)).transpose(2, 0, 1)
        np.testing.assert_array_equal(data[item], expected, err_msg="image %d" % item)
        np.testing.assert_array_equal(label[item, 0], cv2.resize(labels[i], (17, 13), interpolation=cv2.INTER_NEAREST),
                                      err_msg="label %d" % item)


def test_shuffle_mirror_and_crop_move_image_and_label_together(tmp_path):
    images, labels = write_pairs(tmp_path)
    data, label = extract(tmp_path, "batch_size: 3 shuffle: true mirror: true crop_height: 8 crop_width: 11 is_color: false", batches=2)
    assert data.shape == (6, 1, 8, 11) and label.shape == (6, 1, 8, 11)
    global_rng = MT19937(1)               # extract-features seeds the net with 1
    shuffle_rng = MT19937(global_rng())
    order = caffe_shuffle(list(range(PAIRS)), shuffle_rng)
    item_rng = MT19937(global_rng())      # the prefetch thread's generator
    mirrored, position = 0, 0
    for item in range(6):
        i = order[position]
        position += 1
        if position == PAIRS:             # the list wraps and is shuffled again
            position, order = 0, caffe_shuffle(order, shuffle_rng)
        grey, lab = cv2.imread(str(tmp_path / "img" / ("%d.png" % i)), cv2.IMREAD_GRAYSCALE), labels[i]
        if item_rng() % 2:
            grey, lab = cv2.flip(grey, 1), cv2.flip(lab, 1)
            mirrored += 1
        top, left = item_rng() % (HEIGHT - 8 + 1), item_rng() % (WIDTH - 11 + 1)
        np.testing.assert_array_equal(data[item, 0], grey[top:top + 8, left:left + 11].astype(np.float32), err_msg="image %d" % item)
        np.testing.assert_array_equal(label[item, 0], lab[top:top + 8, left:left + 11], err_msg="label %d" % item)
    assert 0 < mirrored < 6


def failing_extract(folder, lines):
    (folder / "list.txt").write_text(lines)
    (folder / "net.prototxt").write_text(
        'layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
        'dense_image_data_param { source: "%s" root_folder: "%s/" batch_size: 2 } }\n' % (folder / "list.txt", folder))
    weights = caffe_pb2.NetParameter()
    weights.name = "no parameters"
    (folder / "empty.caffemodel").write_bytes(weights.SerializeToString())
    result = swiftjit("extract-features", "--quiet", folder / "net.prototxt", folder / "empty.caffemodel", "data,label",
                      "%s,%s" % (folder / "data.npz", folder / "label.npz"), 2, ok=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Fatal error" not in result.stderr
    return errors[0]


def test_a_missing_label_image_names_its_list_line(tmp_path):
    write_pairs(tmp_path)
    error = failing_extract(tmp_path, "img/0.png lab/0.png\nimg/1.png lab/gone.png\nimg/2.png lab/2.png\n")
    assert "list.txt:2:1:" in error and "gone.png" in error and "does not exist" in error, error


def test_a_label_image_of_another_size_names_its_list_line(tmp_path):
    write_pairs(tmp_path)
    cv2.imwrite(str(tmp_path / "lab" / "small.png"), np.zeros((HEIGHT - 1, WIDTH), np.uint8))
    error = failing_extract(tmp_path, "img/0.png lab/0.png\nimg/1.png lab/1.png\nimg/2.png lab/small.png\n")
    assert "list.txt:3:1:" in error and "small.png" in error and "19×30, but its image 'img/2.png' is 20×30" in error, error


def test_label_divide_factor_resizes_labels_nearest_to_a_fraction_of_new_size(tmp_path):
    """ENet's encoder nets: the label image is read as ReadImageToCVMat(label, new_height / f,
    new_width / f, grey, INTER_NEAREST) (integer division), mirrored with its image."""
    images, labels = write_pairs(tmp_path)
    for new_height, new_width, factor in [(16, 24, 4), (13, 17, 3)]:
        data, label = extract(tmp_path, "batch_size: 3 mirror: true new_height: %d new_width: %d label_divide_factor: %d"
                              % (new_height, new_width, factor), batches=2)
        small = (new_height // factor, new_width // factor)
        assert data.shape == (6, 3, new_height, new_width) and label.shape == (6, 1) + small
        item_rng = MT19937(MT19937(1)())   # no shuffle: the prefetch generator is the first draw
        for item in range(6):
            i = item % PAIRS
            image = cv2.resize(images[i], (new_width, new_height), interpolation=cv2.INTER_LINEAR)
            lab = cv2.resize(labels[i], (small[1], small[0]), interpolation=cv2.INTER_NEAREST)
            if item_rng() % 2:
                image, lab = cv2.flip(image, 1), cv2.flip(lab, 1)
            np.testing.assert_array_equal(data[item], image.astype(np.float32).transpose(2, 0, 1), err_msg="image %d" % item)
            np.testing.assert_array_equal(label[item, 0], lab, err_msg="label %d, factor %d" % (item, factor))
