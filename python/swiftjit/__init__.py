"""SwiftJIT from Python: a Caffe-compatible, JIT-compiled deep-learning runtime.

Two ways in:

* ``swiftjit`` (this package) — a small Pythonic API for inference and training::

      import swiftjit
      net = swiftjit.Net("deploy.prototxt", weights="model.caffemodel", inputs={"data": (1, 3, 224, 224)})
      probabilities = net.forward(data=image)["prob"]      # thread-safe: a session per thread
      solver = swiftjit.Solver("solver.prototxt"); solver.step(100)

* ``caffe`` — a drop-in for BVLC's pycaffe (``caffe.Net``, blobs as NumPy views, solvers,
  Python layers, ``caffe.io``, ``caffe.proto.caffe_pb2``, net_spec, draw ...).

Both call libswiftjit.so through ctypes. It is found through ``$SWIFTJIT_LIBRARY``, then
``.build/release/libswiftjit.so`` of the checkout this package lives in, then the system's
library path; ``tools/setup.sh`` builds it. Errors are :class:`Error` subclasses carrying the
library's one-line diagnostic.
"""

from .errors import (Error, InvalidArgumentError, NotFoundError, InvalidModelError, ExecutionError, CallbackError,
                     LibraryNotFound, MissingSymbol)
from .model import Net
from .solver import Solver
from ._net import Layer

TRAIN = 0
TEST = 1

__all__ = ["Net", "Solver", "Layer", "Error", "InvalidArgumentError", "NotFoundError", "InvalidModelError",
           "ExecutionError", "CallbackError", "LibraryNotFound", "MissingSymbol", "TRAIN", "TEST", "version",
           "library_path"]


def version():
    """The C library's version string ("MAJOR.MINOR.PATCH")."""
    from ._capi import lib, decode
    return decode(lib.sj_version())


def library_path():
    """The path of the libswiftjit.so in use (loading it if needed)."""
    from ._capi import lib
    lib._load()
    return lib.path


def __getattr__(name):
    # __version__ is read from the library on first access, so importing swiftjit works before
    # the library is built (pure-Python parts: caffe.io, net_spec, proto ...).
    if name == "__version__":
        return version()
    raise AttributeError("module 'swiftjit' has no attribute %r" % name)
