"""caffe.proto.caffe_pb2 and caffe.io: pure Python, no library needed."""

import os
import re

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_caffe_pb2_round_trips_a_net_through_text_and_binary():
    text = """name: "tiny"
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
      convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } }
      param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 } }
    layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 } }"""
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert again.layer[0].convolution_param.kernel_size == [3]
    assert again.layer[0].param[1].lr_mult == 2.0
    assert again.layer[1].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert text_format.Parse(text_format.MessageToString(again), caffe_pb2.NetParameter()) == net


def test_caffe_pb2_keeps_bvlc_field_numbers_and_phases():
    assert (caffe.TRAIN, caffe.TEST) == (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert fields["convolution_param"].number == 106
    assert fields["python_param"].number == 130
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["shape"].number == 7


def test_caffe_pb2_is_generated_from_our_proto():
    """Every message of Sources/CaffeFormat/Proto/caffe.proto is in the generated module."""
    with open(os.path.join(REPO, "Sources", "CaffeFormat", "Proto", "caffe.proto")) as f:
        declared = set(re.findall(r"^message (\w+)", f.read(), re.M))
    assert declared and declared <= set(caffe_pb2.DESCRIPTOR.message_types_by_name)


def test_blobproto_round_trip_keeps_shape_values_and_diff():
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    gradient = -values
    blob = caffe.io.array_to_blobproto(values, gradient)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_allclose(caffe.io.blobproto_to_array(blob), values, rtol=1e-6)
    np.testing.assert_allclose(caffe.io.blobproto_to_array(blob, return_diff=True), gradient, rtol=1e-6)


def test_blobproto_legacy_four_dimensions_win_over_shape():
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    assert caffe.io.blobproto_to_array(blob).shape == (1, 2, 1, 3)


def test_blobproto_without_shape_is_an_error_unless_it_is_one_value():
    with pytest.raises(ValueError, match="no shape"):
        caffe.io.blobproto_to_array(caffe_pb2.BlobProto(data=[1, 2]))
    assert caffe.io.blobproto_to_array(caffe_pb2.BlobProto(data=[5])) == 5


def test_blobprotovector_string_round_trip():
    arrays = [np.ones((2, 2)), np.arange(3.0)]
    back = caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str(arrays))
    assert [a.shape for a in back] == [(2, 2), (3,)]
    np.testing.assert_array_equal(back[1], [0, 1, 2])


def test_datum_keeps_uint8_as_bytes_and_floats_as_floats():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(pixels, label=7)
    assert datum.data == pixels.tobytes() and datum.label == 7 and len(datum.float_data) == 0
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), pixels)
    floats = caffe.io.array_to_datum(pixels.astype(np.float32) / 2)
    assert not floats.HasField("label") and len(floats.data) == 0
    np.testing.assert_allclose(caffe.io.datum_to_array(floats), pixels / 2)
    with pytest.raises(ValueError, match="3-d"):
        caffe.io.array_to_datum(np.zeros((2, 2)))


def test_transformer_preprocess_matches_numpy_and_deprocess_inverts_it():
    rng = np.random.default_rng(0)
    image = rng.random((5, 6, 3)).astype(np.float32)           # H x W x RGB in [0, 1]
    mean = np.array([10.0, 20.0, 30.0])
    t = caffe.io.Transformer({"data": (1, 3, 5, 6)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    expected = ((image.transpose(2, 0, 1)[[2, 1, 0]] * 255.0) - mean[:, None, None]) * 0.5
    result = t.preprocess("data", image)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5)
    np.testing.assert_allclose(t.deprocess("data", result), image, rtol=1e-5, atol=1e-6)


def test_transformer_resizes_to_the_input_size_and_checks_its_arguments():
    t = caffe.io.Transformer({"data": (1, 3, 8, 8)})
    t.set_transpose("data", (2, 0, 1))
    assert t.preprocess("data", np.ones((4, 4, 3), np.float32)).shape == (3, 8, 8)
    with pytest.raises(ValueError):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError):
        t.set_mean("data", np.zeros(2))
    with pytest.raises(KeyError):
        t.set_raw_scale("label", 1)


def test_resize_image_keeps_constant_images_and_value_range():
    constant = np.full((4, 5, 3), 0.25, np.float32)
    np.testing.assert_array_equal(caffe.io.resize_image(constant, (7, 9)), np.full((7, 9, 3), 0.25, np.float32))
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4, 1)
    resized = caffe.io.resize_image(ramp, (8, 8))
    assert resized.shape == (8, 8, 1) and resized.min() >= 0 and resized.max() <= 1
    many_channels = np.ones((4, 4, 5), np.float32)
    assert caffe.io.resize_image(many_channels, (2, 2)).shape == (2, 2, 5)


def test_oversample_gives_corners_center_and_mirrors():
    image = np.arange(6 * 8, dtype=np.float32).reshape(6, 8, 1)
    crops = caffe.io.oversample([image], (4, 4))
    assert crops.shape == (10, 4, 4, 1)
    expected = [image[:4, :4], image[:4, 4:], image[2:, :4], image[2:, 4:], image[1:5, 2:6]]
    for i, crop in enumerate(expected):
        np.testing.assert_array_equal(crops[i], crop)
        np.testing.assert_array_equal(crops[5 + i], crop[:, ::-1])


def test_load_image_returns_rgb_floats_in_unit_range(tmp_path):
    import skimage.io
    pixels = np.zeros((3, 4, 3), np.uint8)
    pixels[..., 0] = 255
    path = str(tmp_path / "red.png")
    skimage.io.imsave(path, pixels, check_contrast=False)
    image = caffe.io.load_image(path)
    assert image.shape == (3, 4, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], 1.0)
    np.testing.assert_allclose(image[..., 1:], 0.0)
    assert caffe.io.load_image(path, color=False).shape == (3, 4, 1)
