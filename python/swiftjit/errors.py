"""SwiftJIT's exceptions: one class per sj_code, each carrying the C library's own diagnostic.

Every failure from libswiftjit.so becomes an :class:`Error` subclass whose message is the same
one-line diagnostic the ``swiftjit`` command prints (file:line:column, the layer, what was
expected, and a hint). The subclasses also derive from the built-in exception a pycaffe user
would catch, so existing ``except ValueError`` / ``except KeyError`` code keeps working::

    try:
        net.forward(data=np.zeros((1, 3, 10, 10), np.float32))
    except ValueError as error:          # also a swiftjit.InvalidArgumentError
        print(error.code, error)         # 1 'data' has shape (1, 3, 10, 10), the net expects ...
"""

from . import _capi


class Error(Exception):
    """Base class of every error SwiftJIT raises.

    Attributes:
        code: the C API's sj_code (``swiftjit.errors.INVALID_ARGUMENT`` ...), or None for errors
            found in Python before calling the library.
        message: the diagnostic text.
    """

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self):  # KeyError would otherwise print the message in quotes
        return self.message


class InvalidArgumentError(Error, ValueError):
    """A bad argument: a wrong shape or dtype, a bad option (SJ_INVALID_ARGUMENT)."""


class NotFoundError(Error, KeyError):
    """Something named does not exist: a blob, a layer or a file (SJ_NOT_FOUND)."""


class InvalidModelError(Error, ValueError):
    """A malformed prototxt, a truncated caffemodel or an unsupported layer (SJ_INVALID_MODEL)."""


class ExecutionError(Error, RuntimeError):
    """A failure while running: out of memory, a kernel that could not be compiled (SJ_RUNTIME)."""


class CallbackError(ExecutionError):
    """A layer implemented in Python failed (SJ_CALLBACK) and its exception was not kept."""


LibraryNotFound = _capi.LibraryNotFound
MissingSymbol = _capi.MissingSymbol

_BY_CODE = {
    _capi.INVALID_ARGUMENT: InvalidArgumentError,
    _capi.NOT_FOUND: NotFoundError,
    _capi.INVALID_MODEL: InvalidModelError,
    _capi.RUNTIME: ExecutionError,
    _capi.CALLBACK: CallbackError,
}

INVALID_ARGUMENT, NOT_FOUND, INVALID_MODEL, RUNTIME, CALLBACK = (
    _capi.INVALID_ARGUMENT, _capi.NOT_FOUND, _capi.INVALID_MODEL, _capi.RUNTIME, _capi.CALLBACK)


def error_from_status(status):
    """Turns a non-NULL sj_status pointer into an Error (and frees the status)."""
    lib = _capi.lib
    try:
        code = int(lib.sj_status_code(status))
        message = _capi.decode(lib.sj_status_message(status)) or "(no message)"
    finally:
        lib.sj_status_free(status)
    return _BY_CODE.get(code, Error)(message, code)


def check(status, pending=None):
    """Raises for a non-NULL status.

    `pending` is the Python-layer host of the net whose pass just ran: when one of its layers
    raised, that original exception (with its traceback) is re-raised instead of the C summary,
    which is chained to it as the context.
    """
    if not status:
        # A Python layer that failed while the call still succeeded (a library that ignored the
        # callback's result) must not be lost either.
        original = pending.take() if pending is not None else None
        if original is not None:
            raise original
        return
    error = error_from_status(status)
    if pending is not None:
        original = pending.take()
        if original is not None:
            raise original from error
    raise error
