"""Writing Caffe nets in Python (pycaffe's net_spec): ``caffe.NetSpec``, ``caffe.layers``, ``caffe.params``.

Calling ``caffe.layers.<Type>(bottoms..., **parameters)`` describes one layer and returns its top
(or a tuple of tops with ``ntop=N``; the layer itself with ``ntop=0``). Keyword arguments go into
the layer's ``<type>_param`` message when it has that field (``num_output=`` of a Convolution
goes to ``convolution_param``), otherwise into the LayerParameter itself (``param=``,
``include=`` ...); dicts become messages, lists become repeated fields. ``in_place=True``
makes the top the same blob as the bottom. ``caffe.params.<Type>.<CONSTANT>`` gives enum values.

Assign tops to a ``NetSpec`` to name them, then ``to_proto()`` gives a ``caffe_pb2.NetParameter``::

    from caffe import layers as L, params as P
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 28, 28]))
    n.conv = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.relu = L.ReLU(n.pool, in_place=True)
    open("net.prototxt", "w").write(str(n.to_proto()))

Tops that are not assigned get generated names (the layer type and a counter, e.g. "ReLU1").
"""

from collections import Counter, OrderedDict

from .proto import caffe_pb2


def param_name_dict():
    """{message type without "Parameter": LayerParameter field without "_param"}, e.g.
    {"Convolution": "convolution", "InnerProduct": "inner_product", ...}."""
    mapping = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                mapping.setdefault(type_name[:-len("Parameter")], field.name[:-len("_param")])
    return mapping


def assign_proto(proto, name, val):
    """Sets field `name` of message `proto` from a Python value: a dict fills a sub-message,
    a list fills a repeated field (a list of dicts adds one message per dict), and a single
    value given for a repeated field is treated as a one-element list."""
    current = getattr(proto, name)
    repeated = hasattr(current, "extend")
    if repeated and not isinstance(val, (list, tuple)):
        val = [val]
    if isinstance(val, (list, tuple)):
        if val and isinstance(val[0], dict):
            for item in val:
                message = current.add()
                for key, value in item.items():
                    assign_proto(message, key, value)
        else:
            current.extend(val)
    elif isinstance(val, dict):
        for key, value in val.items():
            assign_proto(current, key, value)
    else:
        setattr(proto, name, val)


def to_proto(*tops):
    """A NetParameter with every layer needed to compute `tops` (intermediate blobs get
    generated names)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """One output blob of a layer description (a Function): output number `n` of `fn`."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer description: its type, its input Tops and its parameters (a dict)."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, value in enumerate(inputs):
            if not isinstance(value, Top):
                raise TypeError("%s input %d is not a Top (type is %s)" % (type_name, index, type(value)))
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = "%s%d" % (top.fn.type_name, autonames[top.fn.type_name])
        return names[top]

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = "%s%d" % (self.type_name, autonames[self.type_name])
        return names[self]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for top in self.inputs:
            top._to_proto(layers, names, autonames)
            bottoms.append(layers[top.fn].top[top.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._get_top_name(top, names, autonames) for top in self.tops)
        layer.name = self._get_name(names, autonames)
        own_param = _param_names.get(self.type_name)
        for key, value in self.params.items():
            if key.endswith("param") or own_param is None:
                assign_proto(layer, key, value)
                continue
            try:
                assign_proto(getattr(layer, own_param + "_param"), key, value)
            except (AttributeError, KeyError, ValueError):
                assign_proto(layer, key, value)
        layers[self] = layer


class NetSpec:
    """Named tops: assign ``spec.name = top`` (or ``spec["name"] = top``), then ``to_proto()``
    builds the NetParameter with those names for the blobs and their layers."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError("NetSpec has no top named %r" % name) from None

    def __setitem__(self, key, value):
        self.tops[key] = value

    def __getitem__(self, key):
        return self.tops[key]

    def __delattr__(self, name):
        del self.tops[name]

    def to_proto(self):
        """A NetParameter with the layers of every assigned top, named as assigned."""
        names = {value: key for key, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``caffe.layers``: ``layers.Convolution(bottom, num_output=8, kernel_size=3)`` describes a layer."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def describe(*inputs, **params):
            fn = Function(type_name, inputs, params)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        describe.__name__ = type_name
        describe.__doc__ = "Describes a %s layer; returns its top(s)." % type_name
        return describe


class Parameters:
    """``caffe.params``: ``params.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX``."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        message = getattr(caffe_pb2, type_name + "Parameter")

        class Constants:
            def __getattr__(self, constant):
                return getattr(message, constant)
        return Constants()


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
