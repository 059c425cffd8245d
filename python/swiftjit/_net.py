"""The runtime's pycaffe-style net (sj_net) and solver (sj_solver) as owned Python handles, and
the bridge that runs Caffe "Python" layers (:class:`Layer` subclasses) inside them.

Ownership: a :class:`NetHandle` frees its sj_net when the last Python reference goes (the net
object, a blob, or a NumPy view of a blob). Nets that belong to a solver hold the
:class:`SolverHandle`, so they (and views of their blobs) outlive the solver object.
"""

import ctypes
import importlib
import os

from . import _capi, errors
from ._blob import Blob, BlobVec, CallbackBlob, view
from ._capi import lib


class Layer:
    """Base class of layers written in Python (prototxt ``type: "Python"``).

    A net that has a layer such as::

        layer { name: "scale" type: "Python" bottom: "data" top: "scaled"
                python_param { module: "my_layers" layer: "Scale" param_str: "10" } }

    imports ``my_layers`` (from ``sys.path``), creates ``my_layers.Scale()``, sets
    ``self.param_str`` (the string from the prototxt) and ``self.phase`` (``caffe.TRAIN`` or
    ``caffe.TEST``), and calls, with lists of blobs (``.data``, ``.diff``, ``.reshape``)::

        setup(bottom, top)                     once: read param_str, check bottoms
        reshape(bottom, top)                   set every top's shape: top[0].reshape(*shape)
        forward(bottom, top)                   write top[i].data from bottom[j].data
        backward(top, propagate_down, bottom)  write bottom[j].diff where propagate_down[j]

    Example::

        class Scale(caffe.Layer):
            def setup(self, bottom, top):
                self.factor = float(self.param_str)
            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)
            def forward(self, bottom, top):
                top[0].data[...] = self.factor * bottom[0].data
            def backward(self, top, propagate_down, bottom):
                if propagate_down[0]:
                    bottom[0].diff[...] = self.factor * top[0].diff

    An exception raised in any of these stops the pass, and the Python call that ran it
    (``caffe.Net(...)``, ``net.forward()``, ``solver.step(1)`` ...) raises that same exception
    with its traceback. ``self.blobs`` holds the layer's own parameters (``self.blobs.add_blob(*shape)``);
    they are saved and loaded by ``net.save``/``net.copy_from`` like any other layer's.
    """

    param_str = ""
    phase = _capi.PHASE_TEST

    @property
    def blobs(self):
        """The layer's own parameter blobs (a list with ``add_blob(*shape)``)."""
        blobs = self.__dict__.get("_blobs")
        if blobs is None:
            blobs = self.__dict__["_blobs"] = BlobVec()
        return blobs

    @property
    def type(self):
        return "Python"

    def setup(self, bottom, top):
        """Called once when the net is built; read ``self.param_str`` here."""

    def reshape(self, bottom, top):
        """Set each top's shape with ``top[i].reshape(*shape)``."""
        raise NotImplementedError("%s must implement reshape(bottom, top)" % type(self).__name__)

    def forward(self, bottom, top):
        """Compute ``top[i].data`` from ``bottom[j].data``."""
        raise NotImplementedError("%s must implement forward(bottom, top)" % type(self).__name__)

    def backward(self, top, propagate_down, bottom):
        """Compute ``bottom[j].diff`` from ``top[i].diff`` where ``propagate_down[j]`` is true."""


def _read_prototxt(path, message):
    from google.protobuf import text_format
    with open(path, "r") as f:
        content = f.read()
    try:
        text_format.Merge(content, message, allow_unknown_field=True)
    except TypeError:  # older protobuf without allow_unknown_field
        text_format.Merge(content, message)
    return message


def _phase_allows(layer, phase):
    """Caffe's include/exclude rules, judged on the phase only (stages and levels are the runtime's)."""
    def phase_of(rule):
        return rule.phase if rule.HasField("phase") else None
    if len(layer.include):
        return any(phase_of(rule) in (None, phase) for rule in layer.include)
    return not any(phase_of(rule) == phase for rule in layer.exclude)


def python_params(net_param, phase):
    """{layer name: (module, class, param_str)} for the Python layers of `net_param` in `phase`."""
    found = {}
    for layer in net_param.layer:
        if layer.type == "Python" and _phase_allows(layer, phase):
            p = layer.python_param
            found.setdefault(layer.name, (p.module, p.layer, p.param_str))
    return found


class PythonLayerHost:
    """Runs the Python layers of one net, or of all the nets of one solver, for the runtime.

    The runtime calls :meth:`callback` (through a ctypes function pointer this object keeps alive)
    for every stage of every "Python" layer. Exceptions never cross into C: the first one is kept
    in ``self.error``, the callback returns 1, and :func:`errors.check` re-raises it.

    A solver's nets share one callback; the runtime tells them apart in ``layer_index``, which is
    ``net * 65536 + layer`` there (net 0: the train net, net i + 1: test net i) and the plain layer
    index for a net of its own. Each (net, layer) gets its own instance, with its net's
    param_str and phase.
    """

    NET_STRIDE = 65536

    def __init__(self, roles_loader):
        # roles_loader() -> [(phase, {name: (module, class, param_str)})], one entry per net:
        # the net itself, or a solver's train net then its test nets.
        self._roles_loader = roles_loader
        self._roles = None
        self.layers = {}          # (net, layer index, layer name) -> Layer instance
        self.error = None
        self.function = _capi.LAYER_FUNCTION(self.callback)

    def take(self):
        error, self.error = self.error, None
        return error

    def layer(self, index, name, net=0):
        """The object of Python layer `name` (at `index` in net `net`), or None."""
        instance = self.layers.get((net, index, name))
        if instance is None:
            # The callback's layer index and sj_net_layer_name's should agree; if a library
            # counts differently (e.g. hidden Split layers), a unique name still identifies it.
            matches = [layer for (n, _, layer_name), layer in self.layers.items() if n == net and layer_name == name]
            instance = matches[0] if len(matches) == 1 else None
        return instance

    def _create(self, net, name):
        if self._roles is None:
            self._roles = self._roles_loader()
        if not 0 <= net < len(self._roles):
            raise RuntimeError("Python layer %r: the runtime named net %d, but the prototxt describes %d"
                               % (name, net, len(self._roles)))
        phase, params = self._roles[net]
        if name not in params:
            raise KeyError("Python layer %r: no python_param found for it in the prototxt" % name)
        module_name, class_name, param_str = params[name]
        if not module_name or not class_name:
            raise ValueError("Python layer %r needs python_param { module: ... layer: ... }" % name)
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name, None)
        if cls is None:
            raise AttributeError("Python layer %r: module %r (%s) has no class %r"
                                 % (name, module_name, getattr(module, "__file__", "?"), class_name))
        instance = cls()
        instance.param_str = param_str
        instance.phase = phase
        return instance

    def callback(self, user, index, name, stage, bottom_count, bottoms, top_count, tops, propagate_down):
        try:
            name = _capi.decode(name)
            bottom = [CallbackBlob(bottoms[i], self) for i in range(bottom_count)]
            top = [CallbackBlob(tops[i], self) for i in range(top_count)]
            net, layer = divmod(int(index), self.NET_STRIDE)
            key = (net, layer, name)
            if stage == _capi.LAYER_SETUP:
                instance = self.layers.get(key)
                if instance is None:
                    instance = self._create(net, name)
                    instance.setup(bottom, top)
                    self.layers[key] = instance
                instance.reshape(bottom, top)
                return 0
            instance = self.layers.get(key)
            if instance is None:
                raise RuntimeError("the runtime asked Python layer %r (index %d) for stage %d before setting it up"
                                   % (name, index, stage))
            if stage == _capi.LAYER_RESHAPE:
                instance.reshape(bottom, top)
            elif stage == _capi.LAYER_FORWARD:
                instance.forward(bottom, top)
            elif stage == _capi.LAYER_BACKWARD:
                down = [bool(propagate_down[i]) if propagate_down else True for i in range(bottom_count)]
                instance.backward(top, down, bottom)
            else:
                raise RuntimeError("unknown layer stage %d for Python layer %r" % (stage, name))
            return 0
        except BaseException as error:  # noqa: B902 — nothing may unwind through C
            if self.error is None:
                self.error = error
            return 1


class _Options:
    """An sj_options built from keyword arguments, freed on exit of the `with` block."""

    def __init__(self, phase=None, inputs=None, threads=None, seed=None, level=None, stages=(),
                 host=None, cache_dir=None):
        self.pointer = lib.sj_options_create()
        try:
            if phase is not None:
                lib.sj_options_set_phase(self.pointer, int(phase))
            for name, shape in (inputs or {}).items():
                dims, ndim = _capi.dims_array(shape)
                errors.check(lib.sj_options_set_input_shape(self.pointer, _capi.text(name), dims, ndim))
            if threads is not None:
                lib.sj_options_set_threads(self.pointer, int(threads))
            if seed is not None:
                lib.sj_options_set_seed(self.pointer, int(seed) & 0xFFFFFFFFFFFFFFFF)
            if level is not None:
                lib.sj_options_set_level(self.pointer, int(level))
            for stage in stages or ():
                lib.sj_options_add_stage(self.pointer, _capi.text(stage))
            if cache_dir is not None:
                lib.sj_options_set_kernel_cache_dir(self.pointer, _capi.text(cache_dir))
            if host is not None:
                lib.sj_options_set_layer_function(self.pointer, host.function, None)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.pointer:
            lib.sj_options_free(self.pointer)
            self.pointer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _existing_file(path, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError("%s %r does not exist (current directory: %s)" % (what, path, os.getcwd()))
    return path


def _contains_python_layer(path):
    try:
        with open(path, "rb") as f:
            return b"Python" in f.read()
    except OSError:
        return False


class NetHandle:
    """Owns one sj_net (or borrows one from a solver) and everything it calls back into."""

    def __init__(self, pointer, host=None, owner=None, position=0):
        self.pointer = pointer
        self.host = host          # PythonLayerHost or None
        self.owner = owner        # SolverHandle for a solver's nets (which it frees)
        self.position = position  # 0: a net of its own or a solver's train net; i + 1: test net i
        self.needs_reshape = False
        self._free = lib.sj_net_free

    @classmethod
    def create(cls, prototxt, weights=None, phase=_capi.PHASE_TEST, level=None, stages=(), seed=None,
               threads=None, inputs=None):
        prototxt = _existing_file(prototxt, "net prototxt")
        if weights is not None:
            weights = _existing_file(weights, "weights file")
        host = None
        if _contains_python_layer(prototxt):
            def loader():
                from caffe.proto import caffe_pb2
                return [(int(phase), python_params(_read_prototxt(prototxt, caffe_pb2.NetParameter()), phase))]
            host = PythonLayerHost(loader)
        out = ctypes.c_void_p()
        with _Options(phase=phase, level=level, stages=stages, seed=seed, threads=threads, inputs=inputs,
                      host=host) as options:
            status = lib.sj_net_create(_capi.text(prototxt), _capi.text(weights), options.pointer, ctypes.byref(out))
        errors.check(status, host)
        return cls(out.value, host)

    def __del__(self):
        if self.owner is None and getattr(self, "pointer", None):
            self._free(self.pointer)
            self.pointer = None

    def check(self, status):
        errors.check(status, self.host)

    def _run(self, function, *args):
        self.check(function(self.pointer, *args))

    # --- structure ---------------------------------------------------------------------------
    def layer_names(self):
        return [_capi.decode(lib.sj_net_layer_name(self.pointer, i)) for i in range(lib.sj_net_layer_count(self.pointer))]

    def layer_type(self, i):
        return _capi.decode(lib.sj_net_layer_type(self.pointer, i))

    def layer_bottoms(self, i):
        return [_capi.decode(lib.sj_net_layer_bottom(self.pointer, i, j))
                for j in range(lib.sj_net_layer_bottom_count(self.pointer, i))]

    def layer_tops(self, i):
        return [_capi.decode(lib.sj_net_layer_top(self.pointer, i, j))
                for j in range(lib.sj_net_layer_top_count(self.pointer, i))]

    def layer_param_count(self, i):
        return int(lib.sj_net_layer_param_count(self.pointer, i))

    def blob_names(self):
        return [_capi.decode(lib.sj_net_blob_name(self.pointer, i)) for i in range(lib.sj_net_blob_count(self.pointer))]

    def input_names(self):
        return [_capi.decode(lib.sj_net_input_name(self.pointer, i)) for i in range(lib.sj_net_input_count(self.pointer))]

    def output_names(self):
        return [_capi.decode(lib.sj_net_output_name(self.pointer, i)) for i in range(lib.sj_net_output_count(self.pointer))]

    def loss_weight(self, name):
        return float(lib.sj_net_blob_loss_weight(self.pointer, _capi.text(name)))

    # --- memory ------------------------------------------------------------------------------
    def blob_ref(self, name):
        self.reshape_if_needed()
        ref = _capi.BlobRef()
        self.check(lib.sj_net_blob(self.pointer, _capi.text(name), ctypes.byref(ref)))
        return ref

    def param_ref(self, layer, index):
        self.reshape_if_needed()
        ref = _capi.BlobRef()
        self.check(lib.sj_net_param(self.pointer, int(layer), int(index), ctypes.byref(ref)))
        return ref

    def set_input_shape(self, name, shape):
        dims, ndim = _capi.dims_array(shape)
        self.check(lib.sj_net_set_input_shape(self.pointer, _capi.text(name), dims, ndim))
        self.needs_reshape = True

    def reshape(self):
        self.needs_reshape = False
        self._run(lib.sj_net_reshape)

    def reshape_if_needed(self):
        if self.needs_reshape:
            self.reshape()

    # --- passes ------------------------------------------------------------------------------
    def forward(self, start=-1, end=-1):
        self.reshape_if_needed()
        loss = ctypes.c_float()
        self._run(lib.sj_net_forward, int(start), int(end), ctypes.byref(loss))
        return float(loss.value)

    def backward(self, start=-1, end=-1):
        self.reshape_if_needed()
        self._run(lib.sj_net_backward, int(start), int(end))

    def clear_param_diffs(self):
        lib.sj_net_clear_param_diffs(self.pointer)

    def save(self, path):
        self.check(lib.sj_net_save(self.pointer, _capi.text(path)))

    def copy_from(self, path):
        self.check(lib.sj_net_copy_from(self.pointer, _capi.text(_existing_file(path, "weights file"))))

    def share_with(self, other):
        self.check(lib.sj_net_share_with(self.pointer, other.pointer))


class NetBlob(Blob):
    """A blob of a runtime net, by name; ``data``/``diff`` are views of the net's memory."""

    def __init__(self, handle, name):
        self._handle = handle
        self.name = name

    @property
    def data(self):
        ref = self._handle.blob_ref(self.name)
        return view(ref.data, ref.shape, self._handle)

    @property
    def diff(self):
        ref = self._handle.blob_ref(self.name)
        return view(ref.diff, ref.shape, self._handle)

    @property
    def shape(self):
        return self._handle.blob_ref(self.name).shape

    def reshape(self, *shape):
        """Gives this input blob a new shape; the net propagates it on the next forward (or at
        ``net.reshape()``). Only the net's inputs can be reshaped this way."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self._handle.set_input_shape(self.name, shape)


class ParamBlob(Blob):
    """A layer's parameter blob (0: weights, 1: bias ...) as views of the net's memory."""

    def __init__(self, handle, layer, index):
        self._handle = handle
        self._layer = layer
        self._index = index

    @property
    def data(self):
        ref = self._handle.param_ref(self._layer, self._index)
        return view(ref.data, ref.shape, self._handle)

    @property
    def diff(self):
        ref = self._handle.param_ref(self._layer, self._index)
        return view(ref.diff, ref.shape, self._handle)

    @property
    def shape(self):
        return self._handle.param_ref(self._layer, self._index).shape

    def reshape(self, *shape):
        raise ValueError("the runtime's parameter blobs have the shape the layer gives them and cannot be reshaped")


class SolverHandle:
    """Owns one sj_solver; its nets are NetHandles that keep this handle alive."""

    def __init__(self, pointer, host=None):
        self.pointer = pointer
        self.host = host
        self._free = lib.sj_solver_free

    @classmethod
    def create(cls, solver_path, seed=None, threads=None):
        solver_path = _existing_file(solver_path, "solver prototxt")
        host = None
        if _solver_has_python_layers(solver_path):
            host = PythonLayerHost(lambda: _solver_python_roles(solver_path))
        out = ctypes.c_void_p()
        with _Options(seed=seed, threads=threads, host=host) as options:
            status = lib.sj_solver_create(_capi.text(solver_path), options.pointer, ctypes.byref(out))
        errors.check(status, host)
        return cls(out.value, host)

    def __del__(self):
        if getattr(self, "pointer", None):
            self._free(self.pointer)
            self.pointer = None

    def check(self, status):
        errors.check(status, self.host)

    def run(self, function, *args):
        self.check(function(self.pointer, *args))

    def net(self):
        return NetHandle(lib.sj_solver_net(self.pointer), self.host, owner=self, position=0)

    def test_nets(self):
        return [NetHandle(lib.sj_solver_test_net(self.pointer, i), self.host, owner=self, position=i + 1)
                for i in range(lib.sj_solver_test_net_count(self.pointer))]


def _resolve(path, solver_dir):
    if os.path.isabs(path) or os.path.exists(path):
        return path
    beside = os.path.join(solver_dir, path)
    return beside if os.path.exists(beside) else path


def _solver_nets(solver_path):
    """The solver's nets in the order Caffe builds them, as (phase, NetParameter): the train net
    (train_net_param, train_net, net_param or net), then the test nets (test_net_param entries,
    test_net files, then net_param/net for the remaining test_iter entries)."""
    from caffe.proto import caffe_pb2
    solver = _read_prototxt(solver_path, caffe_pb2.SolverParameter())
    folder = os.path.dirname(os.path.abspath(solver_path))

    def from_file(path):
        return _read_prototxt(_resolve(path, folder), caffe_pb2.NetParameter())
    if solver.HasField("train_net_param"):
        train = solver.train_net_param
    elif solver.train_net:
        train = from_file(solver.train_net)
    elif solver.HasField("net_param"):
        train = solver.net_param
    elif solver.net:
        train = from_file(solver.net)
    else:
        train = None
    nets = [] if train is None else [(_capi.PHASE_TRAIN, train)]
    tests = list(solver.test_net_param) + [from_file(p) for p in solver.test_net]
    generic = solver.net_param if solver.HasField("net_param") else (from_file(solver.net) if solver.net else None)
    if generic is not None:
        tests += [generic] * max(0, len(solver.test_iter) - len(tests))
    return nets + [(_capi.PHASE_TEST, net) for net in tests]


def _solver_has_python_layers(solver_path):
    try:
        return any(layer.type == "Python" for _, net in _solver_nets(solver_path) for layer in net.layer)
    except Exception:  # an unreadable file: the runtime reports it, with its position
        return False


def _solver_python_roles(solver_path):
    return [(phase, python_params(net, phase)) for phase, net in _solver_nets(solver_path)]
