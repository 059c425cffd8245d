"""The ctypes binding of include/swiftjit.h: finding libswiftjit.so and declaring its functions.

Nothing here is public. Two things are lazy on purpose:

* the library is loaded on the first call into it, so ``import swiftjit`` and ``import caffe``
  work (for caffe.io, caffe.net_spec, caffe.proto ...) on a machine where it is not built yet;
* each C function is looked up on its first call, so a library built from an older checkout that
  lacks, say, ``sj_net_forward`` fails with an error naming that function and the file it read,
  not with an ImportError for everything.
"""

import ctypes
import ctypes.util
import os
import threading

MAX_DIMS = 32  # SJ_MAX_DIMS

# sj_code
OK, INVALID_ARGUMENT, NOT_FOUND, INVALID_MODEL, RUNTIME, CALLBACK = range(6)
# sj_phase
PHASE_TRAIN, PHASE_TEST = 0, 1
# sj_layer_stage
LAYER_SETUP, LAYER_RESHAPE, LAYER_FORWARD, LAYER_BACKWARD = range(4)


class Tensor(ctypes.Structure):
    """sj_tensor: a named float32 tensor in C order."""
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("ndim", ctypes.c_int32),
        ("dims", ctypes.POINTER(ctypes.c_int64)),
        ("data", ctypes.POINTER(ctypes.c_float)),
    ]


class BlobRef(ctypes.Structure):
    """sj_blob_ref: a blob's shape and its data and diff pointers."""
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("ndim", ctypes.c_int32),
        ("dims", ctypes.c_int64 * MAX_DIMS),
        ("data", ctypes.POINTER(ctypes.c_float)),
        ("diff", ctypes.POINTER(ctypes.c_float)),
    ]

    @property
    def shape(self):
        return tuple(int(self.dims[i]) for i in range(self.ndim))


LAYER_FUNCTION = ctypes.CFUNCTYPE(
    ctypes.c_int32,                 # return: 0 on success
    ctypes.c_void_p,                # user
    ctypes.c_int32,                 # layer_index
    ctypes.c_char_p,                # layer_name
    ctypes.c_int32,                 # stage
    ctypes.c_int32, ctypes.POINTER(BlobRef),   # bottoms
    ctypes.c_int32, ctypes.POINTER(BlobRef),   # tops
    ctypes.POINTER(ctypes.c_int32),            # propagate_down (may be NULL)
)

_p = ctypes.c_void_p
_s = ctypes.c_char_p
_i32 = ctypes.c_int32
_i64 = ctypes.c_int64
_dims = ctypes.POINTER(ctypes.c_int64)
_out = ctypes.POINTER(ctypes.c_void_p)
_str_out = ctypes.POINTER(ctypes.c_char_p)

# name: (restype, argtypes). Functions returning sj_status* are declared as returning c_void_p.
SIGNATURES = {
    "sj_version": (_s, []),
    "sj_api_version": (_i32, []),
    "sj_status_code": (ctypes.c_int, [_p]),
    "sj_status_message": (_s, [_p]),
    "sj_status_free": (None, [_p]),

    "sj_options_create": (_p, []),
    "sj_options_free": (None, [_p]),
    "sj_options_set_phase": (None, [_p, ctypes.c_int]),
    "sj_options_set_input_shape": (_p, [_p, _s, _dims, _i32]),
    "sj_options_set_threads": (None, [_p, _i32]),
    "sj_options_set_seed": (None, [_p, ctypes.c_uint64]),
    "sj_options_set_kernel_cache_dir": (None, [_p, _s]),
    "sj_options_set_level": (None, [_p, _i32]),
    "sj_options_add_stage": (None, [_p, _s]),
    "sj_options_set_layer_function": (None, [_p, LAYER_FUNCTION, _p]),

    "sj_model_load": (_p, [_s, _s, _p, _out]),
    "sj_model_load_from_memory": (_p, [_s, ctypes.c_size_t, _p, ctypes.c_size_t, _p, _out]),
    "sj_model_free": (None, [_p]),
    "sj_model_input_count": (_i32, [_p]),
    "sj_model_output_count": (_i32, [_p]),
    "sj_model_input": (_p, [_p, _i32, ctypes.POINTER(Tensor)]),
    "sj_model_output": (_p, [_p, _i32, ctypes.POINTER(Tensor)]),
    "sj_model_constant_bytes": (_i64, [_p]),

    "sj_session_create": (_p, [_p, _out]),
    "sj_session_free": (None, [_p]),
    "sj_session_reshape": (_p, [_p, ctypes.POINTER(Tensor), ctypes.c_size_t]),
    "sj_session_run": (_p, [_p, ctypes.POINTER(Tensor), ctypes.c_size_t, _str_out, ctypes.c_size_t,
                            ctypes.POINTER(Tensor)]),
    "sj_session_input_buffer": (_p, [_p, _s, ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
                                     ctypes.POINTER(ctypes.c_int64)]),
    "sj_session_arena_bytes": (_i64, [_p]),

    "sj_net_create": (_p, [_s, _s, _p, _out]),
    "sj_net_free": (None, [_p]),
    "sj_net_layer_count": (_i32, [_p]),
    "sj_net_layer_name": (_s, [_p, _i32]),
    "sj_net_layer_type": (_s, [_p, _i32]),
    "sj_net_layer_bottom_count": (_i32, [_p, _i32]),
    "sj_net_layer_bottom": (_s, [_p, _i32, _i32]),
    "sj_net_layer_top_count": (_i32, [_p, _i32]),
    "sj_net_layer_top": (_s, [_p, _i32, _i32]),
    "sj_net_layer_param_count": (_i32, [_p, _i32]),
    "sj_net_layer_python_param": (_p, [_p, _i32, _str_out, _str_out, _str_out]),
    "sj_net_blob_count": (_i32, [_p]),
    "sj_net_blob_name": (_s, [_p, _i32]),
    "sj_net_input_count": (_i32, [_p]),
    "sj_net_input_name": (_s, [_p, _i32]),
    "sj_net_output_count": (_i32, [_p]),
    "sj_net_output_name": (_s, [_p, _i32]),
    "sj_net_blob_loss_weight": (ctypes.c_float, [_p, _s]),
    "sj_net_blob": (_p, [_p, _s, ctypes.POINTER(BlobRef)]),
    "sj_net_param": (_p, [_p, _i32, _i32, ctypes.POINTER(BlobRef)]),
    "sj_net_set_input_shape": (_p, [_p, _s, _dims, _i32]),
    "sj_net_reshape": (_p, [_p]),
    "sj_net_forward": (_p, [_p, _i32, _i32, ctypes.POINTER(ctypes.c_float)]),
    "sj_net_backward": (_p, [_p, _i32, _i32]),
    "sj_net_clear_param_diffs": (None, [_p]),
    "sj_net_save": (_p, [_p, _s]),
    "sj_net_copy_from": (_p, [_p, _s]),
    "sj_net_share_with": (_p, [_p, _p]),

    "sj_solver_create": (_p, [_s, _p, _out]),
    "sj_solver_free": (None, [_p]),
    "sj_solver_net": (_p, [_p]),
    "sj_solver_test_net_count": (_i32, [_p]),
    "sj_solver_test_net": (_p, [_p, _i32]),
    "sj_solver_step": (_p, [_p, _i32, ctypes.POINTER(ctypes.c_float)]),
    "sj_solver_solve": (_p, [_p]),
    "sj_solver_apply_update": (_p, [_p]),
    "sj_solver_iteration": (_i32, [_p]),
    "sj_solver_snapshot": (_p, [_p, _str_out, _str_out]),
    "sj_solver_restore": (_p, [_p, _s]),
}


class LibraryNotFound(ImportError):
    """libswiftjit.so could not be loaded; the message lists every place that was tried."""


class MissingSymbol(ImportError):
    """The library that was loaded lacks a function this package needs (it is older than the package)."""


def candidate_paths():
    """Where the library is looked for, in order, as (description, path-or-None) pairs: only
    $SWIFTJIT_LIBRARY when it is set, else beside the package, else the system's library path."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = os.environ.get("SWIFTJIT_LIBRARY")
    if env:
        # A library named explicitly is the only one tried: falling back elsewhere would hide the typo.
        return [("$SWIFTJIT_LIBRARY", env)]
    candidates = []
    release = os.path.normpath(os.path.join(here, "..", "..", ".build", "release"))
    candidates.append(("beside the package (editable install)", os.path.join(release, "libswiftjit.so")))
    # SwiftPM names the file after the dynamic product (`swift build --product swiftjit-c`).
    candidates.append(("beside the package, SwiftPM's product name", os.path.join(release, "libswiftjit-c.so")))
    candidates.append(("ctypes.util.find_library('swiftjit')", ctypes.util.find_library("swiftjit")))
    return candidates


class _Library:
    """The loaded library, with each function declared from SIGNATURES on first access."""

    def __init__(self):
        self._cdll = None
        self.path = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._cdll is not None:
                return self._cdll
            tried = []
            for description, path in candidate_paths():
                if not path:
                    tried.append("%s: not found" % description)
                    continue
                if os.sep in path and not os.path.exists(path):
                    tried.append("%s: %s does not exist" % (description, path))
                    continue
                try:
                    self._cdll = ctypes.CDLL(path)
                    self.path = path
                    return self._cdll
                except OSError as error:
                    tried.append("%s: %s could not be loaded (%s)" % (description, path, error))
            raise LibraryNotFound(
                "swiftjit could not find libswiftjit.so. Looked at:\n  " + "\n  ".join(tried) +
                "\nBuild it with tools/setup.sh (it makes .build/release/libswiftjit.so in the checkout), "
                "or point $SWIFTJIT_LIBRARY at the file.")

    def __getattr__(self, name):
        if name not in SIGNATURES:
            raise AttributeError(name)
        cdll = self._load()
        try:
            function = getattr(cdll, name)
        except AttributeError:
            raise MissingSymbol(
                "%s does not export %s (declared in include/swiftjit.h): the library was built from an "
                "older checkout than this Python package. Rebuild it with tools/setup.sh." % (self.path, name)) from None
        restype, argtypes = SIGNATURES[name]
        if isinstance(function, ctypes._CFuncPtr):  # (a test double may stand in for the library)
            function.restype = restype
            function.argtypes = argtypes
        setattr(self, name, function)  # later accesses skip __getattr__
        return function

    def has(self, name):
        """Whether the library can be loaded and exports `name`."""
        try:
            getattr(self, name)
            return True
        except ImportError:
            return False


lib = _Library()


def dims_array(shape):
    """A C int64 array for a shape (kept alive by the caller for the duration of the call)."""
    shape = tuple(int(d) for d in shape)
    return (ctypes.c_int64 * max(len(shape), 1))(*shape), len(shape)


def text(value):
    """A C string (bytes) from str/bytes/os.PathLike, or None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return os.fsencode(value) if isinstance(value, os.PathLike) else str(value).encode("utf-8")


def decode(value):
    return None if value is None else value.decode("utf-8", "replace")
