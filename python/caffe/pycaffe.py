"""pycaffe's ``Net`` and solvers, over SwiftJIT's C API (sj_net, sj_solver).

Existing pycaffe scripts run unchanged::

    import caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)   # legacy order
    net = caffe.Net("deploy.prototxt", caffe.TEST, weights="weights.caffemodel")
    net.blobs["data"].data[...] = image_batch       # writes into the net's own memory
    out = net.forward()                              # {output name: array}
    probabilities = out["prob"]

Blob ``.data``/``.diff`` arrays are views of the runtime's memory: no copies are made, writes go
straight into the net, and a view keeps the net's memory alive even after the ``Net`` object is
deleted. A reshape of the net moves that memory, so take ``.data`` again after ``net.reshape()``.
"""

import os
import tempfile
import warnings
from collections import OrderedDict
from itertools import zip_longest

import numpy as np

from swiftjit import _capi, errors
from swiftjit._blob import BlobVec
from swiftjit._net import NetBlob, NetHandle, ParamBlob, SolverHandle, _read_prototxt
from . import _config

TRAIN = _capi.PHASE_TRAIN
TEST = _capi.PHASE_TEST


class UnknownLayerError(errors.NotFoundError, ValueError):
    """A layer name given to forward/backward (start=, end=) that the net does not have."""


class LayerView:
    """One layer of a Net, as pycaffe's ``net.layers[i]``: its ``type``, its parameter ``blobs``
    (views of the net's weights: ``blobs[0]`` weights, ``blobs[1]`` bias), and ``reshape()``."""

    def __init__(self, net, index):
        self._net = net
        self._index = index
        self.name = net._layer_names[index]
        self.type = net._handle.layer_type(index)
        self.blobs = BlobVec(ParamBlob(net._handle, index, i) for i in range(net._handle.layer_param_count(index)))

    def reshape(self):
        """Re-runs shape propagation for the whole net (the runtime reshapes nets as a whole)."""
        self._net.reshape()

    def __repr__(self):
        return "<layer %r type=%s with %d blobs>" % (self.name, self.type, len(self.blobs))


def _parse_net_arguments(args, kwargs):
    """Sorts out pycaffe's two constructor forms into (weights, phase, level, stages)."""
    weights = kwargs.pop("weights", None)
    phase = kwargs.pop("phase", None)
    level = kwargs.pop("level", 0)
    stages = kwargs.pop("stages", None)
    if kwargs:
        raise TypeError("caffe.Net() got unexpected keyword arguments: %s" % ", ".join(sorted(kwargs)))
    args = list(args)
    if len(args) == 2:      # Net(prototxt, weights, phase): the legacy order
        if weights is not None:
            raise TypeError("caffe.Net(): weights given twice (positionally and as weights=)")
        weights, phase = args
        warnings.warn("caffe.Net(prototxt, weights, phase) is deprecated; use "
                      "caffe.Net(prototxt, phase, weights=weights)", DeprecationWarning, stacklevel=3)
    elif len(args) == 1:
        phase = args[0]
    elif len(args) > 2:
        raise TypeError("caffe.Net() takes (prototxt, phase) or (prototxt, weights, phase)")
    if phase is None:
        raise TypeError("caffe.Net() needs a phase: caffe.TRAIN or caffe.TEST")
    if phase not in (TRAIN, TEST):
        raise ValueError("phase must be caffe.TRAIN (0) or caffe.TEST (1), got %r" % (phase,))
    return weights, int(phase), level, stages


class Net:
    """A Caffe net you can drive layer by layer, like pycaffe's ``caffe.Net``.

    ``Net(prototxt, phase, level=0, stages=None, weights=None)`` or the legacy
    ``Net(prototxt, weights, phase)``. ``phase`` is ``caffe.TRAIN`` or ``caffe.TEST``; ``level``
    and ``stages`` select layers by their include/exclude rules; without weights the parameters
    come from the prototxt's fillers (seeded by ``caffe.set_random_seed``).

    Main attributes (all as in pycaffe):
        blobs             OrderedDict blob name -> Blob (``.data``, ``.diff`` views; ``.reshape``)
        params            OrderedDict layer name -> [weights Blob, bias Blob, ...] (layers with params)
        layers            list of layers (``.type``, ``.blobs``); Python layers are your objects
        inputs, outputs   lists of blob names
        forward(), backward(), forward_all(), forward_backward_all(), reshape(),
        save(path), copy_from(path), share_with(net), clear_param_diffs()
    """

    def __init__(self, network_file, *args, **kwargs):
        weights, phase, level, stages = _parse_net_arguments(args, kwargs)
        handle = NetHandle.create(network_file, weights, phase=phase, level=level, stages=stages or (),
                                  seed=_config.seed, threads=_config.threads)
        self._attach(handle, phase)
        if weights is not None:
            self._copy_python_layer_blobs(weights)

    @classmethod
    def _from_handle(cls, handle, phase):
        net = cls.__new__(cls)
        net._attach(handle, phase)
        return net

    def _attach(self, handle, phase):
        self._handle = handle
        self.phase = phase
        self._layer_names = handle.layer_names()
        self._blob_names = handle.blob_names()
        self._cache = {}

    def _cached(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # --- structure -----------------------------------------------------------------------------
    @property
    def layers(self):
        """The layers in net order: ``.type``, ``.blobs`` (parameters); Python layers are the
        ``caffe.Layer`` objects the net created."""
        def build():
            layers = []
            host = self._handle.host
            for i, name in enumerate(self._layer_names):
                python_layer = host.layer(i, name, self._handle.position) if host is not None else None
                layers.append(python_layer if python_layer is not None else LayerView(self, i))
            return layers
        return self._cached("layers", build)

    @property
    def layer_dict(self):
        """OrderedDict layer name -> layer."""
        return self._cached("layer_dict", lambda: OrderedDict(zip(self._layer_names, self.layers)))

    @property
    def blobs(self):
        """OrderedDict blob name -> Blob, in the order the net creates them."""
        return self._cached("blobs", lambda: OrderedDict(
            (name, NetBlob(self._handle, name)) for name in self._blob_names))

    @property
    def params(self):
        """OrderedDict layer name -> list of parameter blobs, for layers that have parameters."""
        return self._cached("params", lambda: OrderedDict(
            (name, layer.blobs) for name, layer in zip(self._layer_names, self.layers) if len(layer.blobs)))

    @property
    def blob_loss_weights(self):
        """OrderedDict blob name -> loss weight (0 for blobs that are not losses)."""
        return self._cached("loss_weights", lambda: OrderedDict(
            (name, self._handle.loss_weight(name)) for name in self._blob_names))

    @property
    def inputs(self):
        """Names of the net's input blobs (the tops of its Input layers)."""
        return list(self._cached("inputs", self._handle.input_names))

    @property
    def outputs(self):
        """Names of the net's output blobs (tops no layer consumes)."""
        return list(self._cached("outputs", self._handle.output_names))

    @property
    def top_names(self):
        """OrderedDict layer name -> names of its top blobs."""
        return self._cached("tops", lambda: OrderedDict(
            (name, self._handle.layer_tops(i)) for i, name in enumerate(self._layer_names)))

    @property
    def bottom_names(self):
        """OrderedDict layer name -> names of its bottom blobs."""
        return self._cached("bottoms", lambda: OrderedDict(
            (name, self._handle.layer_bottoms(i)) for i, name in enumerate(self._layer_names)))

    def _layer_index(self, name):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise UnknownLayerError("the net has no layer named %r (layers: %s)"
                                    % (name, ", ".join(self._layer_names))) from None

    # --- passes --------------------------------------------------------------------------------
    def _set_all(self, given, names, field, call, kind):
        """Writes `given` ({blob: values}) into each blob's `field`: all of `names` or none of them."""
        if not given:
            return
        if set(given) != set(names):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise errors.NotFoundError("%s(): %s not among the net's %ss %s"
                                           % (call, ", ".join(repr(u) for u in unknown), kind, names))
            raise errors.InvalidArgumentError("%s(): give every %s of the net (%s), or none" % (call, kind, ", ".join(names)))
        for name, values in given.items():
            self._set_blob_values(name, values, field, kind if field == "data" else kind + " diff")

    def _set_blob_values(self, name, values, field, what):
        blob = self.blobs[name]
        target = getattr(blob, field)
        values = np.asarray(values)
        if values.dtype.kind not in "biuf":
            raise errors.InvalidArgumentError(
                "%s %r: values of dtype %s cannot be converted to float32" % (what, name, values.dtype))
        if values.ndim == 0 or values.shape[0] != target.shape[0]:
            raise errors.InvalidArgumentError(
                "%s %r: got an array of shape %s, the blob has shape %s (the batch sizes differ)"
                % (what, name, values.shape, target.shape))
        try:
            target[...] = values
        except ValueError:
            raise errors.InvalidArgumentError(
                "%s %r: got an array of shape %s, the blob has shape %s"
                % (what, name, values.shape, target.shape)) from None

    def _forward(self, start, end):
        if start == 0:
            self._feed_memory_data()
        return self._handle.forward(start, end)

    def _feed_memory_data(self):
        """MemoryDataLayer::Forward_cpu: the next batch of the arrays given to set_input_arrays
        into the first layer's tops, wrapping around at the end."""
        memory = getattr(self, "_memory_data", None)
        if memory is None:
            return
        data, labels, tops = memory["data"], memory["labels"], memory["tops"]
        batch, position = self.blobs[tops[0]].data.shape[0], memory["position"]
        self.blobs[tops[0]].data[...] = data[position:position + batch]
        if len(tops) > 1:
            self.blobs[tops[1]].data[...] = labels[position:position + batch].reshape(self.blobs[tops[1]].data.shape)
        memory["position"] = (position + batch) % data.shape[0]

    def _backward(self, start, end):
        # pycaffe counts backward from `start` (the later layer) down to `end`; the C API takes
        # the lower index first.
        self._handle.backward(end, start)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Runs the net forward, from layer `start` to layer `end` (names; default: all of it).

        Keyword arguments set the net's inputs first (each an array with the input's batch size),
        e.g. ``net.forward(data=batch)``; all inputs must be given, or none.

        Returns {blob name: data view} for the net's outputs (or, with `end`, that layer's tops),
        plus the blobs named in `blobs`.
        """
        blobs = list(blobs or [])
        first = self._layer_index(start) if start is not None else 0
        if end is not None:
            last = self._layer_index(end)
            names = list(self.top_names[end]) + blobs
        else:
            last = len(self._layer_names) - 1
            names = self.outputs + blobs
        self._set_all(kwargs, self.inputs, "data", "forward", "input")
        self._forward(first, last)
        return {name: self.blobs[name].data for name in OrderedDict.fromkeys(names)}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Runs the net backward, from layer `start` down to layer `end` (names; default: all).

        Keyword arguments set the diffs of the net's outputs first, e.g.
        ``net.backward(prob=gradient)``; all outputs must be given, or none.

        Returns {blob name: diff view} for the net's inputs (or, with `end`, that layer's
        bottoms), plus the blobs named in `diffs`.
        """
        diffs = list(diffs or [])
        first = self._layer_index(start) if start is not None else len(self._layer_names) - 1
        if end is not None:
            last = self._layer_index(end)
            names = list(self.bottom_names[end]) + diffs
        else:
            last = 0
            names = self.inputs + diffs
        self._set_all(kwargs, self.outputs, "diff", "backward", "output")
        self._backward(first, last)
        return {name: self.blobs[name].diff for name in OrderedDict.fromkeys(names)}

    def _batch(self, arrays):
        """Splits {name: array of N items} into batches of the net's batch size, zero-padding the last."""
        count = len(next(iter(arrays.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        for begin in range(0, count - count % batch_size, batch_size):
            yield {name: values[begin:begin + batch_size] for name, values in arrays.items()}
        remainder = count % batch_size
        if remainder:
            padded = {}
            for name, values in arrays.items():
                values = np.asarray(values)
                padding = np.zeros((batch_size - remainder,) + values.shape[1:], values.dtype)
                padded[name] = np.concatenate([values[-remainder:], padding])
            yield padded

    def forward_all(self, blobs=None, **kwargs):
        """Runs forward over inputs of any length, batch by batch (the last one zero-padded).

        ``net.forward_all(data=images)`` returns {output name: array of len(images) items}
        (plus the blobs named in `blobs`).
        """
        if not kwargs:   # nothing to batch: one forward over what the blobs hold
            return {name: values.copy() for name, values in self.forward(blobs=blobs).items()}
        results = OrderedDict((name, []) for name in OrderedDict.fromkeys(self.outputs + list(blobs or [])))
        for batch in self._batch(kwargs):
            for name, values in self.forward(blobs=blobs, **batch).items():
                results[name].extend(values.copy())
        count = len(next(iter(kwargs.values())))
        return {name: np.asarray(values)[:count] for name, values in results.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """Forward and backward over inputs (and output diffs) of any length, batch by batch.

        Keyword arguments name inputs (for forward) and outputs (their diffs, for backward).
        Returns ({blob: data array}, {blob: diff array}), each with one item per input item.
        """
        outs = OrderedDict((name, []) for name in OrderedDict.fromkeys(self.outputs + list(blobs or [])))
        grads = OrderedDict((name, []) for name in OrderedDict.fromkeys(self.inputs + list(diffs or [])))
        forward_inputs = {name: kwargs[name] for name in self.inputs if name in kwargs}
        backward_inputs = {name: kwargs[name] for name in self.outputs if name in kwargs}
        forward_batches = self._batch(forward_inputs) if forward_inputs else iter(())
        backward_batches = self._batch(backward_inputs) if backward_inputs else iter(())
        for forward_batch, backward_batch in zip_longest(forward_batches, backward_batches, fillvalue={}):
            for name, values in self.forward(blobs=blobs, **forward_batch).items():
                outs[name].extend(values.copy())
            for name, values in self.backward(diffs=diffs, **backward_batch).items():
                grads[name].extend(values.copy())
        count = len(next(iter(kwargs.values()))) if kwargs else None
        outs = {name: np.asarray(values)[:count] for name, values in outs.items()}
        grads = {name: np.asarray(values)[:count] for name, values in grads.items()}
        return outs, grads

    def reshape(self):
        """Propagates input shapes (set with ``net.blobs[name].reshape(...)``) through the net."""
        self._handle.reshape()

    def clear_param_diffs(self):
        """Sets every parameter's diff to zero."""
        self._handle.clear_param_diffs()
        for layer in self._python_layers():
            for blob in layer.blobs:
                blob.diff[...] = 0

    def set_input_arrays(self, data, labels):
        """Feeds a net whose first layer is MemoryData from arrays, as pycaffe does: each forward
        pass from the first layer takes the next batch of `data` (N×C×H×W float32, C-contiguous)
        and `labels` (N values, or N×1×1×1), wrapping around; N must be a multiple of the batch
        size. The arrays are used as given (kept, not copied, as Caffe keeps their memory)."""
        if not self._layer_names or self._handle.layer_type(0) != "MemoryData":
            raise errors.InvalidArgumentError("set_input_arrays may only be called if the first layer is a MemoryData layer")
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        for what, array in (("data", data), ("labels", labels)):
            if array.dtype != np.float32 or not array.flags["C_CONTIGUOUS"]:
                raise errors.InvalidArgumentError("set_input_arrays: %s must be a C-contiguous float32 array, got %s%s"
                                                  % (what, array.dtype, "" if array.flags["C_CONTIGUOUS"] else " (not contiguous)"))
            if array.ndim != 4:
                raise errors.InvalidArgumentError("set_input_arrays: %s must be 4-D, got shape %s" % (what, array.shape))
        tops = list(self.top_names[self._layer_names[0]])
        shape = self.blobs[tops[0]].data.shape
        if data.shape[0] != labels.shape[0]:
            raise errors.InvalidArgumentError("set_input_arrays: data and labels must have the same first dimension, got %d and %d"
                                              % (data.shape[0], labels.shape[0]))
        if data.shape[0] == 0 or data.shape[0] % shape[0] != 0:
            raise errors.InvalidArgumentError("set_input_arrays: the first dimension (%d) must be a multiple of the batch size (%d)"
                                              % (data.shape[0], shape[0]))
        if tuple(data.shape[1:]) != tuple(shape[1:]):
            raise errors.InvalidArgumentError("set_input_arrays: data items are %s, the MemoryData layer makes %s"
                                              % (tuple(data.shape[1:]), tuple(shape[1:])))
        self._memory_data = {"data": data, "labels": labels, "tops": tops, "position": 0}

    # --- parameters on disk --------------------------------------------------------------------
    def _python_layers_by_name(self):
        """[(layer name, caffe.Layer object)] for the net's Python layers."""
        host = self._handle.host
        if host is None:
            return []
        found = ((name, host.layer(i, name, self._handle.position)) for i, name in enumerate(self._layer_names))
        return [(name, layer) for name, layer in found if layer is not None]

    def _python_layers(self):
        return [layer for _, layer in self._python_layers_by_name()]

    def _python_layers_with_blobs(self):
        return [(name, layer) for name, layer in self._python_layers_by_name() if len(layer.blobs)]

    def save(self, filename):
        """Writes the parameters as a .caffemodel (Caffe's binary NetParameter)."""
        self._handle.save(filename)
        python_layers = self._python_layers_with_blobs()
        if python_layers:
            # The runtime does not know Python layers' own blobs: add them to its file.
            from .proto import caffe_pb2
            model = caffe_pb2.NetParameter()
            with open(filename, "rb") as f:
                model.ParseFromString(f.read())
            by_name = {layer.name: layer for layer in model.layer}
            for name, layer in python_layers:
                entry = by_name.get(name)
                if entry is None:
                    entry = model.layer.add(name=name, type="Python")
                del entry.blobs[:]
                for blob in layer.blobs:
                    proto = entry.blobs.add()
                    proto.shape.dim.extend(blob.data.shape)
                    proto.data.extend(blob.data.astype(np.float32).ravel().tolist())
            with open(filename, "wb") as f:
                f.write(model.SerializeToString())

    def copy_from(self, filename):
        """Loads parameters from a .caffemodel, layer by layer by name (Caffe's CopyTrainedLayersFrom)."""
        self._handle.copy_from(filename)
        self._copy_python_layer_blobs(filename)

    def _copy_python_layer_blobs(self, filename):
        python_layers = self._python_layers_with_blobs()
        if not python_layers:
            return
        from .proto import caffe_pb2
        from . import io as caffe_io
        model = caffe_pb2.NetParameter()
        with open(filename, "rb") as f:
            model.ParseFromString(f.read())
        by_name = {layer.name: layer for layer in model.layer}
        for name, layer in python_layers:
            entry = by_name.get(name)
            if entry is None:
                continue
            if len(entry.blobs) != len(layer.blobs):
                raise errors.InvalidModelError("layer %r: %s has %d blobs, the Python layer has %d"
                                               % (name, filename, len(entry.blobs), len(layer.blobs)))
            for blob, proto in zip(layer.blobs, entry.blobs):
                values = caffe_io.blobproto_to_array(proto)
                if values.size != blob.data.size:
                    raise errors.InvalidModelError("layer %r: %s holds a blob of shape %s, the layer's has shape %s"
                                                   % (name, filename, values.shape, blob.data.shape))
                blob.data[...] = values.reshape(blob.data.shape)

    def share_with(self, other):
        """Makes this net's parameters the same memory as `other`'s, for layers with the same
        name and parameter shapes (Caffe's ShareTrainedLayersWith)."""
        self._handle.share_with(other._handle)
        theirs = dict(other._python_layers_with_blobs())
        for name, layer in self._python_layers_with_blobs():
            if name in theirs:
                layer.blobs[:] = theirs[name].blobs
        self._cache.pop("params", None)

    def save_hdf5(self, filename):
        """Writes the parameters as Caffe's HDF5 weights (groups data/<layer>/<index>); needs h5py."""
        import h5py
        with h5py.File(filename, "w") as f:
            data = f.create_group("data")
            for name, blobs in self.params.items():
                group = data.create_group(name)
                for i, blob in enumerate(blobs):
                    group.create_dataset(str(i), data=np.array(blob.data, np.float32))

    def load_hdf5(self, filename):
        """Loads parameters written by :meth:`save_hdf5` (or Caffe's Net::ToHDF5); needs h5py."""
        import h5py
        with h5py.File(filename, "r") as f:
            data = f["data"]
            for name, blobs in self.params.items():
                if name not in data:
                    continue
                group = data[name]
                for i, blob in enumerate(blobs):
                    values = np.asarray(group[str(i)], np.float32)
                    if values.size != blob.data.size:
                        raise errors.InvalidModelError("layer %r blob %d: %s holds shape %s, the net has %s"
                                                       % (name, i, filename, values.shape, blob.data.shape))
                    blob.data[...] = values.reshape(blob.data.shape)

    def __repr__(self):
        return "<caffe.Net %d layers, inputs %s, outputs %s>" % (len(self._layer_names), self.inputs, self.outputs)


# --- solvers ---------------------------------------------------------------------------------

_LEGACY_SOLVER_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def _solver_type(param):
    if param.HasField("type"):
        return param.type
    if param.HasField("solver_type"):
        return _LEGACY_SOLVER_TYPES.get(int(param.solver_type), "SGD")
    return "SGD"


class Solver:
    """Caffe's solver loop over a train net and its test nets, from a solver prototxt.

    Use one of :class:`SGDSolver`, :class:`NesterovSolver`, :class:`AdaGradSolver`,
    :class:`RMSPropSolver`, :class:`AdaDeltaSolver`, :class:`AdamSolver` (which update rule runs
    is the class's, as in pycaffe), or :func:`get_solver` (the file's ``type:`` decides)::

        solver = caffe.SGDSolver("solver.prototxt")
        solver.net.blobs["data"].data[...] = batch     # the train net, a caffe.Net
        solver.step(10)                                # 10 iterations
        print(solver.iter, solver.test_nets[0].forward())
    """

    type = None   # the update rule; None: whatever the file says

    def __init__(self, filename):
        from .proto import caffe_pb2
        self.param = _read_prototxt(os.fspath(filename), caffe_pb2.SolverParameter())
        path = os.fspath(filename)
        if self.type is not None and _solver_type(self.param) != self.type:
            path = self._retyped_copy(path)
        try:
            self._handle = SolverHandle.create(path, seed=_config.seed, threads=_config.threads)
        finally:
            if path != os.fspath(filename):
                os.remove(path)
        self._net = None
        self._test_nets = None

    def _retyped_copy(self, path):
        """A temporary copy of the solver file with this class's type (and its net paths made
        absolute, since the copy lives elsewhere)."""
        from google.protobuf import text_format
        param = type(self.param)()
        param.CopyFrom(self.param)
        param.type = self.type
        param.ClearField("solver_type")
        folder = os.path.dirname(os.path.abspath(path))

        def absolute(p):
            if os.path.isabs(p) or os.path.exists(p):
                return os.path.abspath(p)
            return os.path.join(folder, p)
        if param.net:
            param.net = absolute(param.net)
        if param.train_net:
            param.train_net = absolute(param.train_net)
        test_nets = [absolute(p) for p in param.test_net]
        del param.test_net[:]
        param.test_net.extend(test_nets)
        handle, copy = tempfile.mkstemp(suffix="_solver.prototxt")
        with os.fdopen(handle, "w") as f:
            f.write(text_format.MessageToString(param))
        return copy

    @property
    def net(self):
        """The train net (a caffe.Net sharing the solver's memory)."""
        if self._net is None:
            self._net = Net._from_handle(self._handle.net(), TRAIN)
        return self._net

    @property
    def test_nets(self):
        """The test nets (caffe.Net objects; they share the train net's parameters)."""
        if self._test_nets is None:
            self._test_nets = [Net._from_handle(h, TEST) for h in self._handle.test_nets()]
        return self._test_nets

    @property
    def iter(self):
        """The current iteration."""
        return int(_capi.lib.sj_solver_iteration(self._handle.pointer))

    def step(self, iters):
        """Runs `iters` iterations (forward, backward, update; tests and snapshots as configured).
        Returns the smoothed loss of the last one."""
        import ctypes
        loss = ctypes.c_float()
        self._handle.run(_capi.lib.sj_solver_step, int(iters), ctypes.byref(loss))
        return float(loss.value)

    def solve(self, resume_file=None):
        """Runs until max_iter (with the final snapshot and test), optionally resuming from a .solverstate."""
        if resume_file is not None:
            self.restore(resume_file)
        self._handle.run(_capi.lib.sj_solver_solve)

    def apply_update(self):
        """Applies one update (learning rate, momentum, decay) from the diffs the train net holds."""
        self._handle.run(_capi.lib.sj_solver_apply_update)

    def snapshot(self):
        """Writes <snapshot_prefix>_iter_<N>.caffemodel and .solverstate; returns their paths."""
        import ctypes
        model, state = ctypes.c_char_p(), ctypes.c_char_p()
        self._handle.run(_capi.lib.sj_solver_snapshot, ctypes.byref(model), ctypes.byref(state))
        return _capi.decode(model.value), _capi.decode(state.value)

    def restore(self, state_file):
        """Restores a .solverstate (and the .caffemodel it names)."""
        path = os.fspath(state_file)
        if not os.path.isfile(path):
            raise FileNotFoundError("solver state %r does not exist" % path)
        self._handle.run(_capi.lib.sj_solver_restore, _capi.text(path))


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe's default)."""
    type = "SGD"


class NesterovSolver(Solver):
    """Nesterov's accelerated gradient."""
    type = "Nesterov"


class AdaGradSolver(Solver):
    """AdaGrad: per-parameter rates from the sum of squared gradients."""
    type = "AdaGrad"


class RMSPropSolver(Solver):
    """RMSProp: per-parameter rates from a moving average of squared gradients (rms_decay)."""
    type = "RMSProp"


class AdaDeltaSolver(Solver):
    """AdaDelta: rates from moving averages of squared gradients and squared updates."""
    type = "AdaDelta"


class AdamSolver(Solver):
    """Adam: moving averages of the gradient and its square (momentum, momentum2, delta)."""
    type = "Adam"


_SOLVER_CLASSES = {cls.type: cls for cls in
                   (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver)}


def get_solver(filename):
    """The solver the file's ``type:`` (or legacy ``solver_type:``) names, e.g. an AdamSolver."""
    from .proto import caffe_pb2
    param = _read_prototxt(os.fspath(filename), caffe_pb2.SolverParameter())
    kind = _solver_type(param)
    if kind not in _SOLVER_CLASSES:
        raise errors.InvalidModelError("%s: unknown solver type %r (known: %s)"
                                       % (filename, kind, ", ".join(_SOLVER_CLASSES)))
    return _SOLVER_CLASSES[kind](filename)
