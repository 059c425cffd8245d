"""caffe.NetSpec / layers / params, coord_map, draw, layer_type_list: pure Python."""

import os
import re

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
import nets

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def small_spec():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, param=[dict(lr_mult=1), dict(lr_mult=2)],
                           weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.relu = L.ReLU(n.pool, in_place=True)
    return n


def test_net_spec_writes_the_prototxt_caffe_would_read():
    net = small_spec().to_proto()
    assert [layer.name for layer in net.layer] == ["data", "conv", "pool", "relu"]
    conv = net.layer[1]
    assert conv.convolution_param.num_output == 4 and list(conv.convolution_param.kernel_size) == [3]
    assert [p.lr_mult for p in conv.param] == [1, 2]          # *_param / param go to the layer
    assert net.layer[2].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert list(net.layer[3].bottom) == list(net.layer[3].top) == ["pool"]   # in place
    text = str(net)
    assert text_format.Parse(text, caffe_pb2.NetParameter()) == net
    assert 'type: "Convolution"' in text and "weight_filler {\n      type: \"xavier\"" in text


def test_unnamed_tops_get_type_and_counter_names():
    data, label = L.DummyData(shape=[dict(dim=[2, 3]), dict(dim=[2])], ntop=2)
    loss = L.SoftmaxWithLoss(L.InnerProduct(data, num_output=3), label)
    net = loss.to_proto()
    assert [layer.name for layer in net.layer] == ["DummyData1", "InnerProduct1", "SoftmaxWithLoss1"]
    assert list(net.layer[0].top) == ["DummyData1", "DummyData2"]
    assert list(net.layer[2].bottom) == ["InnerProduct1", "DummyData2"]


def test_layers_reject_inputs_that_are_not_tops():
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'int'>\)$"):
        L.Silence(3, ntop=0)


def test_coord_map_of_a_stride_two_convolution():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 32, 32]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, stride=2, pad=1)
    axis, a, b = caffe.coord_map.coord_map_from_to(n.conv, n.data)
    assert axis == 1 and a == 2 and b == 0     # output x sits over input 2x


def test_draw_net_makes_a_png_with_every_layer():
    net = small_spec().to_proto()
    graph = caffe.draw.get_pydot_graph(net, "TB")
    names = " ".join(node.get_name() for node in graph.get_nodes())
    for layer in ("conv", "pool", "relu"):
        assert layer in names
    png = caffe.draw.draw_net(net, "LR", ext="png")
    assert png.startswith(b"\x89PNG")


def test_layer_type_list_matches_the_compiler_and_python_layers():
    with open(os.path.join(REPO, "Sources", "Graph", "OpKind.swift")) as f:
        swift = f.read()
    body = swift.split("public enum OpKind", 1)[1].split("public var isLoss", 1)[0]
    compiler_types = set(re.findall(r'= "([A-Za-z0-9]+)"', body))
    assert set(caffe.layer_type_list()) == compiler_types | {"Python"}


def test_gpu_mode_warns_and_nets_keep_running_on_the_cpu(write):
    caffe.set_device(0)
    with pytest.warns(caffe.GPUUnavailableWarning, match="CPU only"):
        caffe.set_mode_gpu()
    net = caffe.Net(write("linear.prototxt", nets.LINEAR), caffe.TEST)
    net.blobs["data"].data[...] = 1
    weights, bias = (p.data for p in net.params["ip"])
    expected = np.maximum(nets.inner_product(np.ones((2, 3, 2, 2)), weights, bias), 0)
    np.testing.assert_allclose(net.forward()["ip"], expected, rtol=1e-5)
    caffe.set_mode_cpu()
