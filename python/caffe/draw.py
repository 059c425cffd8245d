"""Drawing a net's graph with Graphviz (pycaffe's caffe.draw; needs pydot and graphviz's ``dot``).

Layers are boxes (colored by type; in-place layers such as ReLU are green), blobs are octagons,
and edges out of a layer are labeled with its output size where that is known::

    from google.protobuf import text_format
    net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge(open("lenet.prototxt").read(), net)
    caffe.draw.draw_net_to_file(net, "lenet.png", rankdir="LR", phase=caffe.TRAIN)
"""

import pydot

from .proto import caffe_pb2

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

_TYPE_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                "InnerProduct": "#CC33FF"}


def get_pooling_types_dict():
    """{pooling method number: name}, e.g. {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}."""
    return {value.number: name
            for name, value in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer):
    """The label of a layer's outgoing edges: its batch size (Data) or output count."""
    if layer.type == "Data":
        return "Batch %d" % layer.data_param.batch_size
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weights lr_mult, bias lr_mult) of a Convolution, Deconvolution or InnerProduct layer."""
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        raise ValueError("%s layers do not have a learning rate multiplier" % layer.type)
    multipliers = [p.lr_mult for p in layer.param]
    if len(multipliers) > 2:
        raise ValueError("layer %r has %d param entries; expected at most 2" % (layer.name, len(multipliers)))
    return tuple(multipliers + [1.0] * (2 - len(multipliers)))


def _first(values, default):
    return values[0] if len(values) else default


def get_layer_label(layer, rankdir, display_lrm=False):
    """The text of a layer's node: name, type, and geometry for convolution and pooling."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append("(%s %s)" % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool]))
    else:
        parts.append("(%s)" % layer.type)
    if layer.type == "Pooling":
        p = layer.pooling_param
        kernel, stride, pad = p.kernel_size, p.stride, p.pad
    elif layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel, stride, pad = _first(p.kernel_size, 1), _first(p.stride, 1), _first(p.pad, 0)
    else:
        kernel = None
    if kernel is not None:
        parts.append(separator.join(["kernel size: %d" % kernel, "stride: %d" % stride, "pad: %d" % pad]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        weights_mult, bias_mult = get_layer_lr_mult(layer)
        if weights_mult or bias_mult:
            parts.append("lr mult: %.1f, %.1f" % (weights_mult, bias_mult))
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype):
    """The fill color of a layer's node."""
    return _TYPE_COLORS.get(layertype, "#6495ED")


def _in_phase(layer, phase):
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise ValueError("layer %r has both include and exclude rules" % layer.name)
    if len(layer.include):
        return any(rule.phase == phase for rule in layer.include)
    return not any(rule.phase == phase for rule in layer.exclude)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """A pydot.Dot of `caffe_net` (a caffe_pb2.NetParameter); `phase` keeps only that phase's layers."""
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes = {}
    edges = []
    for layer in caffe_net.layer:
        if not _in_phase(layer, phase):
            continue
        layer_node = "%s_%s" % (layer.name, layer.type)
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        if in_place:
            style = NEURON_LAYER_STYLE
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
        nodes[layer_node] = pydot.Node(label, **style)
        for bottom in layer.bottom:
            nodes[bottom + "_blob"] = pydot.Node(bottom, **BLOB_STYLE)
            edges.append((bottom + "_blob", layer_node, '""'))
        for top in layer.top:
            nodes[top + "_blob"] = pydot.Node(top)
            edges.append((layer_node, top + "_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for source, destination, label in edges:
        graph.add_edge(pydot.Edge(nodes[source], nodes[destination], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing of `caffe_net` as bytes in format `ext` ("png", "svg", "pdf", "raw" ...)."""
    return get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm).create(format=ext)


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Writes the drawing of `caffe_net` to `filename`, in the format its extension names."""
    extension = filename[filename.rfind(".") + 1:]
    with open(filename, "wb") as f:
        f.write(draw_net(caffe_net, rankdir, extension, phase, display_lrm))
