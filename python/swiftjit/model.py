"""``swiftjit.Net``: inference over a loaded model (sj_model) with one session per thread."""

import ctypes
import os
import threading

import numpy as np

from . import _capi, errors
from ._capi import lib

_PHASES = {"test": _capi.PHASE_TEST, "train": _capi.PHASE_TRAIN}


class _Session:
    """One sj_session (one thread's activation arena) and the input shapes it was compiled for."""

    def __init__(self, model):
        self.model = model            # keeps the model alive while the session exists
        out = ctypes.c_void_p()
        errors.check(lib.sj_session_create(model.pointer, ctypes.byref(out)))
        self.pointer = out.value
        self.shapes = dict(model.input_shapes)
        self._free = lib.sj_session_free

    def __del__(self):
        if getattr(self, "pointer", None):
            self._free(self.pointer)
            self.pointer = None

    def reshape(self, shapes):
        names = [_capi.text(n) for n in shapes]
        dims = [_capi.dims_array(s) for s in shapes.values()]
        tensors = (_capi.Tensor * len(shapes))()
        for t, name, (array, ndim) in zip(tensors, names, dims):
            t.name, t.ndim, t.dims, t.data = name, ndim, ctypes.cast(array, ctypes.POINTER(ctypes.c_int64)), None
        errors.check(lib.sj_session_reshape(self.pointer, tensors, len(shapes)))
        self.shapes.update({n: tuple(int(d) for d in s) for n, s in shapes.items()})


class _Model:
    """Owns an sj_model."""

    def __init__(self, pointer):
        self.pointer = pointer
        self.input_shapes = {}
        self.output_shapes = {}
        for count, get, target in ((lib.sj_model_input_count, lib.sj_model_input, self.input_shapes),
                                   (lib.sj_model_output_count, lib.sj_model_output, self.output_shapes)):
            for i in range(count(pointer)):
                info = _capi.Tensor()
                errors.check(get(pointer, i, ctypes.byref(info)))
                target[_capi.decode(info.name)] = tuple(int(info.dims[d]) for d in range(info.ndim))
        self._free = lib.sj_model_free

    def __del__(self):
        if getattr(self, "pointer", None):
            self._free(self.pointer)
            self.pointer = None


class Net:
    """A Caffe net compiled for inference.

    ``Net(prototxt, weights=None, phase="test", inputs=None, threads=None, seed=None)``:
    `weights` is a .caffemodel (without it, parameters come from the prototxt's fillers);
    `inputs` overrides input shapes, e.g. ``{"data": (8, 3, 224, 224)}``.

    ``net.forward(data=x)`` runs the net and returns {output name: array} (copies, yours to
    keep). The compiled model (weights, packed constants, kernels) is shared; each thread that
    calls ``forward`` gets its own session (activation memory), so one Net can serve many
    threads at once::

        net = swiftjit.Net("lenet.prototxt", weights="lenet.caffemodel")
        print(net.inputs)                     # {'data': (64, 1, 28, 28)}
        probabilities = net.forward(data=images)["prob"]

    Errors: a wrong input shape or dtype raises ValueError (naming the blob and both shapes), an
    unknown input name KeyError; both are also :class:`swiftjit.Error`.
    """

    def __init__(self, prototxt, weights=None, phase="test", inputs=None, threads=None, seed=None):
        from ._net import _Options, _existing_file
        if isinstance(phase, str):
            if phase.lower() not in _PHASES:
                raise ValueError("phase must be 'test' or 'train', got %r" % phase)
            phase = _PHASES[phase.lower()]
        prototxt = _existing_file(prototxt, "net prototxt")
        if weights is not None:
            weights = _existing_file(weights, "weights file")
        out = ctypes.c_void_p()
        with _Options(phase=phase, inputs=inputs, threads=threads, seed=seed) as options:
            errors.check(lib.sj_model_load(_capi.text(prototxt), _capi.text(weights), options.pointer, ctypes.byref(out)))
        self._model = _Model(out.value)
        self._local = threading.local()
        self._phase, self._seed, self._params = phase, seed, None
        self.prototxt = prototxt
        self.weights = weights

    @property
    def inputs(self):
        """{input name: shape} as the model was loaded (a thread's session may be reshaped)."""
        return dict(self._model.input_shapes)

    @property
    def outputs(self):
        """{output name: shape} for the loaded input shapes."""
        return dict(self._model.output_shapes)

    @property
    def constant_bytes(self):
        """Bytes of weights and prepared constants, shared by all sessions."""
        return int(lib.sj_model_constant_bytes(self._model.pointer))

    @property
    def blobs(self):
        """{name: array} of this thread's last ``forward``: its inputs and outputs. An inference
        model fuses the blobs in between away (BatchNorm into convolutions, ReLUs into their
        producers); for every blob, in place, use ``caffe.Net``."""
        return dict(getattr(self._local, "blobs", {}))

    @property
    def params(self):
        """{layer name: [arrays]} of the weights, in Caffe's order ([0] weights, [1] bias ...),
        for layers that have parameters. Read from the files on first use (a separate, read-only
        copy: the model itself holds them only as compiled constants)."""
        if self._params is None:
            from collections import OrderedDict
            from ._net import NetHandle, ParamBlob
            handle = NetHandle.create(self.prototxt, self.weights, phase=self._phase, seed=self._seed)
            self._params = OrderedDict(
                (name, [ParamBlob(handle, i, k).data.copy() for k in range(handle.layer_param_count(i))])
                for i, name in enumerate(handle.layer_names()) if handle.layer_param_count(i) > 0)
        return self._params

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _Session(self._model)
        return session

    def reshape(self, **shapes):
        """Recompiles (or reuses) this thread's session for new input shapes: ``net.reshape(data=(1, 3, 64, 64))``."""
        session = self._session()
        for name in shapes:
            if name not in session.shapes:
                raise errors.NotFoundError("reshape(): the net has no input %r (inputs: %s)"
                                           % (name, ", ".join(session.shapes)))
        session.reshape(shapes)

    def forward(self, outputs=None, **inputs):
        """Runs the net on `inputs` (name=array, every input, float32-convertible, of exactly the
        session's shape) and returns {name: array} for `outputs` (default: all outputs)."""
        session = self._session()
        # Names and shapes are checked by the library, so Python and C report the same message
        # (an unknown input: KeyError; a wrong shape: ValueError). The dtype (the C API takes
        # float32) and completeness (sj_session_run may read inputs written in place) are Python's.
        arrays = []
        for name, value in inputs.items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise errors.InvalidArgumentError("input %r has dtype %s; it must be a real number array (float32)"
                                                  % (name, array.dtype))
            arrays.append((name, np.ascontiguousarray(array, dtype=np.float32)))
        missing = [n for n in session.shapes if n not in inputs]
        if missing:
            raise errors.InvalidArgumentError("forward(): input %s is missing (the net's inputs: %s)"
                                              % (", ".join(repr(n) for n in missing), ", ".join(session.shapes)))
        tensors = (_capi.Tensor * max(len(arrays), 1))()
        keep = []
        for t, (name, array) in zip(tensors, arrays):
            dims, ndim = _capi.dims_array(array.shape)
            keep.append(dims)
            t.name, t.ndim = _capi.text(name), ndim
            t.dims = ctypes.cast(dims, ctypes.POINTER(ctypes.c_int64))
            t.data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        names = list(outputs) if outputs is not None else None
        count = len(names) if names is not None else len(self._model.output_shapes)
        c_names = (ctypes.c_char_p * count)(*[_capi.text(n) for n in names]) if names is not None else None
        results = (_capi.Tensor * max(count, 1))()
        errors.check(lib.sj_session_run(session.pointer, tensors, len(arrays), c_names, count, results))
        out = {}
        for i in range(count):
            t = results[i]
            shape = tuple(int(t.dims[d]) for d in range(t.ndim))
            size = int(np.prod(shape, dtype=np.int64))
            if size and t.data:
                values = np.ctypeslib.as_array(t.data, shape=(size,)).reshape(shape).copy()
            else:
                values = np.zeros(shape, np.float32)
            out[_capi.decode(t.name) or names[i]] = values
        self._local.blobs = dict((name, array) for name, array in arrays)
        self._local.blobs.update(out)
        return out

    def __repr__(self):
        return "<swiftjit.Net %s inputs=%s outputs=%s>" % (os.path.basename(self.prototxt), self.inputs,
                                                           list(self._model.output_shapes))
