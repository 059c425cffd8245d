"""A NumPy stand-in for libswiftjit.so, to test the Python binding before the engine exists.

It implements the functions of include/swiftjit.h that the binding calls, with the same calling
conventions as seen through ctypes (handles are ints, statuses are ints or None, out-parameters
arrive as ``ctypes.byref`` objects), for a handful of layers (Input, DummyData, Convolution,
InnerProduct, ReLU, Pooling (max, forward only), Softmax, SoftmaxWithLoss, Silence, Python)
and an SGD solver. "Python" layers go through the real ctypes callback with real sj_blob_ref
structs, so the binding's callback path is exercised as it will be against the library.

It is a test double, not a reference: numbers are checked against NumPy in the tests, and the
library's own behaviour is the engine's tests' business. Use it with ``SWIFTJIT_FAKE=1``
(see conftest.py) or ``pytest -p fake_swiftjit``.
"""

import ctypes
import itertools

import numpy as np

from swiftjit import _capi

_ids = itertools.count(1)
_objects = {}
FREED = []          # handles freed, for the tests of object lifetime


def _new(obj):
    key = next(_ids)
    _objects[key] = obj
    return key


def _status(code, message):
    return _new(("status", code, message))


def _out(ref):
    return ref._obj


class _Error(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def _guard(fn):
    def wrapper(*args):
        try:
            fn(*args)
            return None
        except _Error as e:
            return _status(e.code, e.message)
    wrapper.__name__ = fn.__name__
    return wrapper


# --- the net ---------------------------------------------------------------------------------

def _read_net(path):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    with open(path) as f:
        text_format.Merge(f.read(), net)
    if len(net.input):   # legacy inputs become an Input layer, as Caffe's upgrade does
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(net.input)
        for i, name in enumerate(net.input):
            shape = layer.input_param.shape.add()
            if len(net.input_shape):
                shape.dim.extend(net.input_shape[i].dim)
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer] + list(net.layer)
        del net.layer[:]
        net.layer.extend(layers)
        del net.input[:]
    return net


def _meets(rule, phase, level, stages):
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def _included(layer, phase, level, stages):
    if len(layer.include):
        return any(_meets(r, phase, level, stages) for r in layer.include)
    return not any(_meets(r, phase, level, stages) for r in layer.exclude)


def _fill(filler, shape, rng):
    kind = filler.type if filler.HasField("type") else "constant"
    if kind == "constant":
        return np.full(shape, filler.value, np.float32)
    if kind == "gaussian":
        return (rng.standard_normal(shape) * filler.std + filler.mean).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max if filler.HasField("max") else 1, shape).astype(np.float32)
    if kind == "xavier":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(3.0 / max(fan_in, 1))
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    raise _Error(_capi.INVALID_MODEL, "fake: filler %r not supported" % kind)


class _Blob:
    def __init__(self, shape=()):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)
        self.name_bytes = b""

    def reshape(self, shape):
        shape = tuple(int(d) for d in shape)
        if self.data.shape != shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)


def _conv_out(size, k, p, s, ceil=False):
    if ceil:
        return int(np.ceil((size + 2 * p - k) / float(s))) + 1
    return (size + 2 * p - k) // s + 1


def _first(values, default):
    return int(values[0]) if len(values) else default


class _Layer:
    def __init__(self, net, index, proto):
        self.net, self.index, self.proto = net, index, proto
        self.name, self.type = proto.name, proto.type
        self.bottoms, self.tops = list(proto.bottom), list(proto.top)
        self.params = []
        self.loss_weight = list(proto.loss_weight)

    # shapes -----------------------------------------------------------------
    def setup(self):
        p, rng = self.proto, self.net.rng
        bshapes = [self.net.blobs[b].data.shape for b in self.bottoms]
        if self.type == "Convolution":
            c = p.convolution_param
            k = _first(c.kernel_size, 1)
            shape = (c.num_output, bshapes[0][1], k, k)
            self.params = [_Blob(shape), _Blob((c.num_output,))]
            self.params[0].data[...] = _fill(c.weight_filler, shape, rng)
            self.params[1].data[...] = _fill(c.bias_filler, (c.num_output,), rng)
        elif self.type == "InnerProduct":
            c = p.inner_product_param
            fan_in = int(np.prod(bshapes[0][1:]))
            self.params = [_Blob((c.num_output, fan_in)), _Blob((c.num_output,))]
            self.params[0].data[...] = _fill(c.weight_filler, (c.num_output, fan_in), rng)
            self.params[1].data[...] = _fill(c.bias_filler, (c.num_output,), rng)
        elif self.type == "DummyData":
            self.fill_each_forward = []
            c = p.dummy_data_param
            for i, top in enumerate(self.tops):
                filler = c.data_filler[i] if len(c.data_filler) > 1 else (c.data_filler[0] if len(c.data_filler) else None)
                self.fill_each_forward.append(filler is not None and filler.type not in ("", "constant"))
        if self.type in ("SoftmaxWithLoss", "EuclideanLoss") and not self.loss_weight:
            self.loss_weight = [1.0]

    def reshape(self):
        p = self.proto
        b = [self.net.blobs[name].data for name in self.bottoms]
        t = self.tops
        if self.type == "Input":
            shapes = list(p.input_param.shape)
            return [tuple(shapes[i if len(shapes) > 1 else 0].dim) for i in range(len(t))]
        if self.type == "DummyData":
            c = p.dummy_data_param
            if len(c.shape):
                return [tuple(c.shape[i if len(c.shape) > 1 else 0].dim) for i in range(len(t))]
            pick = lambda f, i: f[i if len(f) > 1 else 0]
            return [(pick(c.num, i), pick(c.channels, i), pick(c.height, i), pick(c.width, i)) for i in range(len(t))]
        if self.type == "Convolution":
            c = p.convolution_param
            k, s, pad = _first(c.kernel_size, 1), _first(c.stride, 1), _first(c.pad, 0)
            n, _, h, w = b[0].shape
            return [(n, c.num_output, _conv_out(h, k, pad, s), _conv_out(w, k, pad, s))]
        if self.type == "Pooling":
            c = p.pooling_param
            n, ch, h, w = b[0].shape
            return [(n, ch, _conv_out(h, c.kernel_size, c.pad, c.stride, True),
                     _conv_out(w, c.kernel_size, c.pad, c.stride, True))]
        if self.type == "InnerProduct":
            return [(b[0].shape[0], p.inner_product_param.num_output)]
        if self.type in ("ReLU", "Softmax"):
            return [b[0].shape]
        if self.type == "SoftmaxWithLoss":
            return [()]
        if self.type == "Silence":
            return []
        raise _Error(_capi.INVALID_MODEL, "fake: layer type %r not supported" % self.type)

    # passes -----------------------------------------------------------------
    def forward(self):
        blobs = self.net.blobs
        b = [blobs[n] for n in self.bottoms]
        t = [blobs[n] for n in self.tops]
        if self.type == "DummyData":
            for i, blob in enumerate(t):
                c = self.proto.dummy_data_param
                if self.fill_each_forward[i] or not self.net.filled:
                    filler = c.data_filler[i if len(c.data_filler) > 1 else 0] if len(c.data_filler) else None
                    if filler is not None:
                        blob.data[...] = _fill(filler, blob.data.shape, self.net.rng)
        elif self.type == "Convolution":
            c = self.proto.convolution_param
            k, s, pad = _first(c.kernel_size, 1), _first(c.stride, 1), _first(c.pad, 0)
            cols = self._columns(b[0].data, k, s, pad, t[0].data.shape)
            t[0].data[...] = np.einsum("nchwij,ocij->nohw", cols, self.params[0].data) + \
                self.params[1].data[None, :, None, None]
        elif self.type == "InnerProduct":
            x = b[0].data.reshape(b[0].data.shape[0], -1)
            t[0].data[...] = x @ self.params[0].data.T + self.params[1].data
        elif self.type == "ReLU":
            t[0].data[...] = np.maximum(b[0].data, 0)
        elif self.type == "Pooling":
            c = self.proto.pooling_param
            n, ch, oh, ow = t[0].data.shape
            x = b[0].data
            for i in range(oh):
                for j in range(ow):
                    y0, x0 = i * c.stride - c.pad, j * c.stride - c.pad
                    window = x[:, :, max(y0, 0):y0 + c.kernel_size, max(x0, 0):x0 + c.kernel_size]
                    t[0].data[:, :, i, j] = window.max(axis=(2, 3))
        elif self.type == "Softmax":
            t[0].data[...] = self._softmax(b[0].data)
        elif self.type == "SoftmaxWithLoss":
            prob = self._softmax(b[0].data)
            labels = b[1].data.reshape(len(prob)).astype(int)
            self.prob = prob
            t[0].data[...] = -np.mean(np.log(np.maximum(prob[np.arange(len(prob)), labels], 1e-37)))

    def backward(self):
        blobs = self.net.blobs
        b = [blobs[n] for n in self.bottoms]
        t = [blobs[n] for n in self.tops]
        if self.type == "Convolution":
            c = self.proto.convolution_param
            k, s, pad = _first(c.kernel_size, 1), _first(c.stride, 1), _first(c.pad, 0)
            cols = self._columns(b[0].data, k, s, pad, t[0].data.shape)
            dy = t[0].diff
            self.params[0].diff[...] += np.einsum("nchwij,nohw->ocij", cols, dy)
            self.params[1].diff[...] += dy.sum(axis=(0, 2, 3))
            dcols = np.einsum("nohw,ocij->nchwij", dy, self.params[0].data)
            n, ch, h, w = b[0].data.shape
            padded = np.zeros((n, ch, h + 2 * pad, w + 2 * pad), np.float32)
            oh, ow = dy.shape[2:]
            for i in range(k):
                for j in range(k):
                    padded[:, :, i:i + s * oh:s, j:j + s * ow:s] += dcols[:, :, :, :, i, j]
            b[0].diff[...] = padded[:, :, pad:pad + h, pad:pad + w]
        elif self.type == "InnerProduct":
            x = b[0].data.reshape(b[0].data.shape[0], -1)
            self.params[0].diff[...] += t[0].diff.T @ x
            self.params[1].diff[...] += t[0].diff.sum(axis=0)
            b[0].diff[...] = (t[0].diff @ self.params[0].data).reshape(b[0].data.shape)
        elif self.type == "ReLU":
            b[0].diff[...] = t[0].diff * (b[0].data > 0)
        elif self.type == "SoftmaxWithLoss":
            prob = self.prob.copy()
            labels = b[1].data.reshape(len(prob)).astype(int)
            prob[np.arange(len(prob)), labels] -= 1
            b[0].diff[...] = prob / len(prob) * float(t[0].diff)
        elif self.type in ("Input", "DummyData", "Silence"):
            pass
        else:
            raise _Error(_capi.RUNTIME, "fake: no backward for %r" % self.type)

    @staticmethod
    def _softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    @staticmethod
    def _columns(x, k, s, pad, out_shape):
        n, c, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        oh, ow = out_shape[2:]
        cols = np.empty((n, c, oh, ow, k, k), np.float32)
        for i in range(k):
            for j in range(k):
                cols[:, :, :, :, i, j] = padded[:, :, i:i + s * oh:s, j:j + s * ow:s]
        return cols


class _PythonLayer(_Layer):
    def _refs(self, names, with_memory):
        refs = (_capi.BlobRef * max(len(names), 1))()
        for ref, name in zip(refs, names):
            blob = self.net.blobs[name]
            blob.name_bytes = name.encode()
            ref.name = blob.name_bytes
            ref.ndim = blob.data.ndim
            for d, size in enumerate(blob.data.shape):
                ref.dims[d] = size
            if with_memory:
                ref.data = blob.data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
                ref.diff = blob.diff.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        return refs

    def _call(self, stage, with_memory, propagate=None):
        function = self.net.layer_function
        if function is None:
            raise _Error(_capi.INVALID_MODEL, "layer %r: Python layers need sj_options_set_layer_function" % self.name)
        bottoms = self._refs(self.bottoms, with_memory)
        tops = self._refs(self.tops, with_memory)
        down = (ctypes.c_int32 * max(len(self.bottoms), 1))(*([1] * len(self.bottoms))) if propagate else None
        index = self.net.number * 65536 + self.index   # a solver's nets: net * 65536 + layer
        result = function(None, index, self.name.encode(), stage, len(self.bottoms), bottoms,
                          len(self.tops), tops, down)
        if result != 0:
            raise _Error(_capi.CALLBACK, "layer %r (Python): the caller's layer function failed" % self.name)
        return [tuple(tops[i].dims[d] for d in range(tops[i].ndim)) for i in range(len(self.tops))]

    def setup(self):
        self.shapes = self._call(_capi.LAYER_SETUP, False)

    def reshape(self):
        if getattr(self, "shapes", None) is not None:
            shapes, self.shapes = self.shapes, None
            return shapes
        return self._call(_capi.LAYER_RESHAPE, False)

    def forward(self):
        self._call(_capi.LAYER_FORWARD, True)

    def backward(self):
        self._call(_capi.LAYER_BACKWARD, True, propagate=True)


class FakeNet:
    def __init__(self, path, weights, options):
        opts = _objects[options] if options else {}
        self.phase = opts.get("phase", _capi.PHASE_TEST)
        self.layer_function = opts.get("layer_function")
        self.number = opts.get("net_number", 0)
        self.rng = np.random.default_rng(opts.get("seed", 1))
        proto = _read_net(path)
        self.name = proto.name
        self.blobs = {}
        self.blob_order = []
        self.layers = []
        self.filled = False
        level, stages = opts.get("level", 0), opts.get("stages", [])
        for p in proto.layer:
            if not _included(p, self.phase, level, stages):
                continue
            cls = _PythonLayer if p.type == "Python" else _Layer
            layer = cls(self, len(self.layers), p)
            for name in layer.bottoms:
                if name not in self.blobs:
                    raise _Error(_capi.INVALID_MODEL, "%s: layer %r: unknown bottom %r" % (path, p.name, name))
            for name in layer.tops:
                if name not in self.blobs:
                    self.blobs[name] = _Blob()
                    self.blob_order.append(name)
            layer.setup()
            for name, shape in zip(layer.tops, layer.reshape()):
                self.blobs[name].reshape(shape)
            self.layers.append(layer)
        available = []
        for layer in self.layers:   # Caffe's rule: tops nobody consumes afterwards (in place counts)
            available = [b for b in available if b not in layer.bottoms] + list(layer.tops)
        self.inputs = [t for layer in self.layers if layer.type == "Input" for t in layer.tops]
        self.outputs = [n for n in self.blob_order if n in available]
        self.loss_weights = {}
        for layer in self.layers:
            for i, top in enumerate(layer.tops):
                if i < len(layer.loss_weight):
                    self.loss_weights[top] = layer.loss_weight[i]
        self.pending_shapes = {}
        if weights:
            self.copy_from(weights)

    def reshape(self):
        for name, shape in self.pending_shapes.items():
            self.blobs[name].reshape(shape)
        self.pending_shapes = {}
        for layer in self.layers:
            if layer.type == "Input":
                continue
            for name, shape in zip(layer.tops, layer.reshape()):
                self.blobs[name].reshape(shape)

    def forward(self, start, end):
        start = 0 if start < 0 else start
        end = len(self.layers) - 1 if end < 0 else end
        for layer in self.layers[start:end + 1]:
            layer.forward()
        self.filled = True
        loss = 0.0
        for name, weight in self.loss_weights.items():
            loss += weight * float(self.blobs[name].data.sum())
            if start == 0 and end == len(self.layers) - 1:
                self.blobs[name].diff[...] = weight
        return loss

    def backward(self, start, end):
        start = 0 if start < 0 else start
        end = len(self.layers) - 1 if end < 0 else end
        for layer in reversed(self.layers[start:end + 1]):
            layer.backward()

    def save(self, path):
        from caffe.proto import caffe_pb2
        model = caffe_pb2.NetParameter(name=self.name)
        for layer in self.layers:
            entry = model.layer.add(name=layer.name, type=layer.type)
            for blob in layer.params:
                proto = entry.blobs.add()
                proto.shape.dim.extend(blob.data.shape)
                proto.data.extend(blob.data.ravel().tolist())
        with open(path, "wb") as f:
            f.write(model.SerializeToString())

    def copy_from(self, path):
        from caffe.proto import caffe_pb2
        model = caffe_pb2.NetParameter()
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
        by_name = {layer.name: layer for layer in self.layers}
        for entry in model.layer:
            layer = by_name.get(entry.name)
            if layer is None or not layer.params:
                continue
            for blob, proto in zip(layer.params, entry.blobs):
                blob.data[...] = np.array(proto.data, np.float32).reshape(blob.data.shape)


# --- the C functions -------------------------------------------------------------------------

class FakeLibrary:
    path = "fake_swiftjit (NumPy test double)"

    def sj_version(self):
        return b"0.0.0-fake"

    def sj_api_version(self):
        return 1

    def sj_status_code(self, status):
        return _objects[status][1]

    def sj_status_message(self, status):
        return _objects[status][2].encode()

    def sj_status_free(self, status):
        _objects.pop(status, None)

    def sj_options_create(self):
        return _new({})

    def sj_options_free(self, options):
        _objects.pop(options, None)

    def sj_options_set_phase(self, options, phase):
        _objects[options]["phase"] = phase

    def sj_options_set_seed(self, options, seed):
        _objects[options]["seed"] = seed

    def sj_options_set_level(self, options, level):
        _objects[options]["level"] = level

    def sj_options_add_stage(self, options, stage):
        _objects[options].setdefault("stages", []).append(stage.decode())

    def sj_options_set_threads(self, options, threads):
        pass

    def sj_options_set_layer_function(self, options, function, user):
        _objects[options]["layer_function"] = function

    @_guard
    def sj_options_set_input_shape(self, options, name, dims, ndim):
        _objects[options].setdefault("inputs", {})[name.decode()] = tuple(dims[i] for i in range(ndim))

    @_guard
    def sj_net_create(self, path, weights, options, out):
        try:
            net = FakeNet(path.decode(), weights and weights.decode(), options)
        except FileNotFoundError as e:
            raise _Error(_capi.NOT_FOUND, str(e))
        _out(out).value = _new(net)

    def sj_net_free(self, net):
        FREED.append(net)
        _objects.pop(net, None)

    def sj_net_layer_count(self, net):
        return len(_objects[net].layers)

    def sj_net_layer_name(self, net, i):
        return _objects[net].layers[i].name.encode()

    def sj_net_layer_type(self, net, i):
        return _objects[net].layers[i].type.encode()

    def sj_net_layer_bottom_count(self, net, i):
        return len(_objects[net].layers[i].bottoms)

    def sj_net_layer_bottom(self, net, i, j):
        return _objects[net].layers[i].bottoms[j].encode()

    def sj_net_layer_top_count(self, net, i):
        return len(_objects[net].layers[i].tops)

    def sj_net_layer_top(self, net, i, j):
        return _objects[net].layers[i].tops[j].encode()

    def sj_net_layer_param_count(self, net, i):
        return len(_objects[net].layers[i].params)

    def sj_net_blob_count(self, net):
        return len(_objects[net].blob_order)

    def sj_net_blob_name(self, net, i):
        return _objects[net].blob_order[i].encode()

    def sj_net_input_count(self, net):
        return len(_objects[net].inputs)

    def sj_net_input_name(self, net, i):
        return _objects[net].inputs[i].encode()

    def sj_net_output_count(self, net):
        return len(_objects[net].outputs)

    def sj_net_output_name(self, net, i):
        return _objects[net].outputs[i].encode()

    def sj_net_blob_loss_weight(self, net, name):
        return _objects[net].loss_weights.get(name.decode(), 0.0)

    @staticmethod
    def _fill_ref(blob, ref):
        ref.ndim = blob.data.ndim
        for d, size in enumerate(blob.data.shape):
            ref.dims[d] = size
        ref.data = blob.data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        ref.diff = blob.diff.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    @_guard
    def sj_net_blob(self, net, name, ref):
        net = _objects[net]
        blob = net.blobs.get(name.decode())
        if blob is None:
            raise _Error(_capi.NOT_FOUND, "the net has no blob %r" % name.decode())
        self._fill_ref(blob, _out(ref))

    @_guard
    def sj_net_param(self, net, layer, index, ref):
        self._fill_ref(_objects[net].layers[layer].params[index], _out(ref))

    @_guard
    def sj_net_set_input_shape(self, net, name, dims, ndim):
        net = _objects[net]
        name = name.decode()
        if name not in net.inputs:
            raise _Error(_capi.INVALID_ARGUMENT, "%r is not an input of the net" % name)
        net.pending_shapes[name] = tuple(dims[i] for i in range(ndim))

    @_guard
    def sj_net_reshape(self, net):
        _objects[net].reshape()

    @_guard
    def sj_net_forward(self, net, start, end, loss):
        value = _objects[net].forward(start, end)
        if loss is not None:
            _out(loss).value = value

    @_guard
    def sj_net_backward(self, net, start, end):
        _objects[net].backward(start, end)

    def sj_net_clear_param_diffs(self, net):
        for layer in _objects[net].layers:
            for blob in layer.params:
                blob.diff[...] = 0

    @_guard
    def sj_net_save(self, net, path):
        _objects[net].save(path.decode())

    @_guard
    def sj_net_copy_from(self, net, path):
        _objects[net].copy_from(path.decode())

    @_guard
    def sj_net_share_with(self, net, other):
        mine, theirs = _objects[net], _objects[other]
        by_name = {layer.name: layer for layer in theirs.layers}
        for layer in mine.layers:
            if layer.name in by_name and [p.data.shape for p in layer.params] == \
                    [p.data.shape for p in by_name[layer.name].params]:
                layer.params = by_name[layer.name].params

    # solver -------------------------------------------------------------------------------------
    @_guard
    def sj_solver_create(self, path, options, out):
        from caffe.proto import caffe_pb2
        from google.protobuf import text_format
        param = caffe_pb2.SolverParameter()
        with open(path.decode()) as f:
            text_format.Merge(f.read(), param)
        opts = dict(_objects[options]) if options else {}
        train_options = _new(dict(opts, phase=_capi.PHASE_TRAIN))
        test_options = _new(dict(opts, phase=_capi.PHASE_TEST))
        net_path = param.train_net or param.net
        train = FakeNet(net_path, None, train_options)
        tests = []
        for i in range(len(param.test_iter)):
            _objects[test_options]["net_number"] = i + 1
            test = FakeNet(param.test_net[i] if len(param.test_net) > i else param.net, None, test_options)
            self._share(test, train)
            tests.append(test)
        solver = {"param": param, "train": _new(train), "tests": [_new(t) for t in tests], "iter": 0,
                  "history": {}, "paths": (b"", b"")}
        _out(out).value = _new(solver)

    @staticmethod
    def _share(net, other):
        by_name = {layer.name: layer for layer in other.layers}
        for layer in net.layers:
            if layer.name in by_name:
                layer.params = by_name[layer.name].params

    def sj_solver_free(self, solver):
        s = _objects.pop(solver, None)
        FREED.append(solver)
        if s:
            for key in [s["train"]] + s["tests"]:
                _objects.pop(key, None)

    def sj_solver_net(self, solver):
        return _objects[solver]["train"]

    def sj_solver_test_net_count(self, solver):
        return len(_objects[solver]["tests"])

    def sj_solver_test_net(self, solver, i):
        return _objects[solver]["tests"][i]

    def sj_solver_iteration(self, solver):
        return _objects[solver]["iter"]

    def _rate(self, s):
        p, it = s["param"], s["iter"]
        policy = p.lr_policy or "fixed"
        if policy == "fixed":
            return p.base_lr
        if policy == "inv":
            return p.base_lr * (1 + p.gamma * it) ** (-p.power)
        if policy == "step":
            return p.base_lr * p.gamma ** (it // p.stepsize)
        raise _Error(_capi.INVALID_MODEL, "fake: lr_policy %r not supported" % policy)

    def _update(self, s):
        p = s["param"]
        rate = self._rate(s)
        net = _objects[s["train"]]
        for layer in net.layers:
            for i, blob in enumerate(layer.params):
                blob.diff += p.weight_decay * blob.data
                history = s["history"].setdefault((layer.name, i), np.zeros_like(blob.data))
                history[...] = p.momentum * history + rate * blob.diff
                blob.data -= history

    @_guard
    def sj_solver_apply_update(self, solver):
        self._update(_objects[solver])

    @_guard
    def sj_solver_step(self, solver, iterations, loss):
        s = _objects[solver]
        p = s["param"]
        net = _objects[s["train"]]
        value = 0.0
        for _ in range(iterations):
            if p.test_interval and s["iter"] % p.test_interval == 0 and (s["iter"] > 0 or p.test_initialization):
                for key, count in zip(s["tests"], p.test_iter):
                    for _ in range(count):
                        _objects[key].forward(-1, -1)
            self.sj_net_clear_param_diffs(s["train"])
            value = net.forward(-1, -1)
            net.backward(-1, -1)
            self._update(s)
            s["iter"] += 1
        if loss is not None:
            _out(loss).value = value

    @_guard
    def sj_solver_solve(self, solver):
        s = _objects[solver]
        status = self.sj_solver_step(solver, s["param"].max_iter - s["iter"], None)
        if status:
            raise _Error(_objects[status][1], _objects[status][2])
        if s["param"].snapshot_after_train:
            self.sj_solver_snapshot(solver, None, None)

    @_guard
    def sj_solver_snapshot(self, solver, model_path, state_path):
        from caffe.proto import caffe_pb2
        s = _objects[solver]
        prefix = "%s_iter_%d" % (s["param"].snapshot_prefix, s["iter"])
        _objects[s["train"]].save(prefix + ".caffemodel")
        state = caffe_pb2.SolverState(iter=s["iter"], learned_net=prefix + ".caffemodel")
        with open(prefix + ".solverstate", "wb") as f:
            f.write(state.SerializeToString())
        s["paths"] = ((prefix + ".caffemodel").encode(), (prefix + ".solverstate").encode())
        if model_path is not None:
            _out(model_path).value = s["paths"][0]
        if state_path is not None:
            _out(state_path).value = s["paths"][1]

    @_guard
    def sj_solver_restore(self, solver, path):
        from caffe.proto import caffe_pb2
        s = _objects[solver]
        state = caffe_pb2.SolverState()
        with open(path.decode(), "rb") as f:
            state.ParseFromString(f.read())
        s["iter"] = state.iter
        if state.learned_net:
            _objects[s["train"]].copy_from(state.learned_net)


# --- models and sessions (inference) ---------------------------------------------------------

class FakeLibraryWithSessions(FakeLibrary):
    @_guard
    def sj_model_load(self, path, weights, options, out):
        opts = dict(_objects[options]) if options else {}
        model = {"path": path.decode(), "weights": weights and weights.decode(), "options": opts}
        net = FakeNet(model["path"], model["weights"], _new(opts))
        for name, shape in opts.get("inputs", {}).items():
            net.pending_shapes[name] = shape
        net.reshape()
        model["net"] = net
        model["names"] = {}
        _out(out).value = _new(model)

    def sj_model_free(self, model):
        FREED.append(model)
        _objects.pop(model, None)

    def sj_model_input_count(self, model):
        return len(_objects[model]["net"].inputs)

    def sj_model_output_count(self, model):
        return len(_objects[model]["net"].outputs)

    def _describe(self, model, name, info):
        m = _objects[model]
        shape = m["net"].blobs[name].data.shape
        keep = m["names"].setdefault(name, (name.encode(), (ctypes.c_int64 * max(len(shape), 1))(*shape)))
        info.name, info.ndim = keep[0], len(shape)
        info.dims = ctypes.cast(keep[1], ctypes.POINTER(ctypes.c_int64))
        info.data = None

    @_guard
    def sj_model_input(self, model, i, info):
        self._describe(model, _objects[model]["net"].inputs[i], _out(info))

    @_guard
    def sj_model_output(self, model, i, info):
        self._describe(model, _objects[model]["net"].outputs[i], _out(info))

    def sj_model_constant_bytes(self, model):
        return sum(b.data.nbytes for layer in _objects[model]["net"].layers for b in layer.params)

    @_guard
    def sj_session_create(self, model, out):
        m = _objects[model]
        net = FakeNet(m["path"], None, _new(dict(m["options"])))
        FakeLibrary._share(net, m["net"])
        for name in net.inputs:
            net.pending_shapes[name] = m["net"].blobs[name].data.shape
        net.reshape()
        _out(out).value = _new({"net": net, "model": model, "names": []})

    def sj_session_free(self, session):
        FREED.append(session)
        _objects.pop(session, None)

    @_guard
    def sj_session_reshape(self, session, tensors, count):
        net = _objects[session]["net"]
        for i in range(count):
            t = tensors[i]
            net.pending_shapes[t.name.decode()] = tuple(t.dims[d] for d in range(t.ndim))
        net.reshape()

    @_guard
    def sj_session_run(self, session, tensors, count, names, output_count, outputs):
        s = _objects[session]
        net = s["net"]
        given = set()
        for i in range(count):
            t = tensors[i]
            name = t.name.decode()
            if name not in net.inputs:
                raise _Error(_capi.NOT_FOUND, "the net has no input %r" % name)
            shape = tuple(t.dims[d] for d in range(t.ndim))
            if shape != net.blobs[name].data.shape:
                raise _Error(_capi.INVALID_ARGUMENT, "input %r has shape %s, the session expects %s"
                             % (name, shape, net.blobs[name].data.shape))
            size = int(np.prod(shape, dtype=np.int64))
            net.blobs[name].data[...] = np.ctypeslib.as_array(t.data, shape=(size,)).reshape(shape)
            given.add(name)
        net.forward(-1, -1)
        wanted = [names[i].decode() for i in range(output_count)] if names else list(net.outputs)
        s["names"] = []
        for i, name in enumerate(wanted):
            blob = net.blobs[name]
            entry = (name.encode(), (ctypes.c_int64 * max(blob.data.ndim, 1))(*blob.data.shape))
            s["names"].append(entry)
            outputs[i].name, outputs[i].ndim = entry[0], blob.data.ndim
            outputs[i].dims = ctypes.cast(entry[1], ctypes.POINTER(ctypes.c_int64))
            outputs[i].data = blob.data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def install():
    """Makes the binding call this fake instead of loading libswiftjit.so."""
    fake = FakeLibraryWithSessions()
    lib = _capi.lib
    for name in list(vars(lib)):
        if name.startswith("sj_"):
            delattr(lib, name)
    lib._cdll = fake
    lib.path = fake.path
    return fake


def pytest_configure(config):
    # `pytest -p fake_swiftjit` installs the fake for a whole run (e.g. BVLC's suite).
    install()
