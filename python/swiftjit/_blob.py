"""Blobs as pycaffe shows them: ``.data`` and ``.diff`` as NumPy arrays over the runtime's memory.

A view's base object (:class:`_Memory`) holds a reference to the handle that owns the memory, so
an array taken from a blob stays valid after the ``Net`` (or ``Solver``) object is deleted: the
runtime's net is freed only when the last view of it goes away. A view is invalidated by a
reshape of the net (the runtime reallocates), exactly as in Caffe; take ``.data`` again after
``net.reshape()`` or ``blob.reshape(...)``.
"""

import ctypes

import numpy as np

from . import _capi


class _Memory:
    """The base object of a view: NumPy's array interface over a raw float pointer, plus the
    reference that keeps the owner of that pointer alive."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, address, shape, owner):
        self.__array_interface__ = {
            "shape": tuple(shape), "typestr": "<f4", "data": (address, False), "version": 3}
        self.owner = owner


def view(pointer, shape, owner):
    """A writable float32 array of `shape` over `pointer` (a ctypes float pointer), keeping `owner` alive."""
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    shape = tuple(int(d) for d in shape)
    if not address:
        # An empty blob (or one the runtime has not allocated yet): a private zero array.
        return np.zeros(shape, np.float32)
    return np.asarray(_Memory(address, shape, owner))


def legacy_axis(shape, index):
    """Caffe's LegacyShape: num/channels/height/width of blobs with at most 4 axes (1 past the end)."""
    if len(shape) > 4:
        raise ValueError("num/channels/height/width are only defined for blobs with at most 4 axes; "
                         "this one has shape %s (use .shape)" % (tuple(shape),))
    return int(shape[index]) if index < len(shape) else 1


class Blob:
    """A Caffe blob: an N-d float32 array of values (``data``) and of gradients (``diff``).

    ``data`` and ``diff`` are NumPy views: writing into them (``blob.data[...] = x``) writes into
    the net. Properties: ``shape`` (a tuple), ``count`` (number of elements), and the 4-d names
    ``num``, ``channels``, ``height``, ``width``. ``reshape(*shape)`` changes the shape.
    """

    @property
    def data(self):
        raise NotImplementedError

    @property
    def diff(self):
        raise NotImplementedError

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def count(self):
        """Number of elements (the product of the shape)."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def num(self):
        return legacy_axis(self.shape, 0)

    @property
    def channels(self):
        return legacy_axis(self.shape, 1)

    @property
    def height(self):
        return legacy_axis(self.shape, 2)

    @property
    def width(self):
        return legacy_axis(self.shape, 3)

    def __repr__(self):
        return "<%s shape=%s>" % (type(self).__name__, self.shape)


class ArrayBlob(Blob):
    """A blob whose values live in Python (a Python layer's own parameters, ``Layer.blobs``)."""

    def __init__(self, *shape):
        self._data = np.zeros(shape, np.float32)
        self._diff = np.zeros(shape, np.float32)

    @property
    def data(self):
        return self._data

    @property
    def diff(self):
        return self._diff

    def reshape(self, *shape):
        """Gives the blob a new shape; values are kept when the count is unchanged, else zeroed."""
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape, dtype=np.int64)) == self._data.size:
            self._data = self._data.reshape(shape)
            self._diff = self._diff.reshape(shape)
        else:
            self._data = np.zeros(shape, np.float32)
            self._diff = np.zeros(shape, np.float32)


class BlobVec(list):
    """The parameter blobs of a layer (``layer.blobs``): a list with :meth:`add_blob`."""

    def add_blob(self, *shape):
        """Appends a new zero-filled blob of `shape` (for Python layers' own parameters)."""
        self.append(ArrayBlob(*shape))
        return self[-1]


class CallbackBlob(Blob):
    """A bottom or top as a Python layer sees it during one call of the runtime.

    In ``setup`` and ``reshape`` the runtime has not allocated memory yet: ``data``/``diff`` are
    zero arrays of the current shape, and ``top[i].reshape(...)`` tells the runtime the top's
    shape. In ``forward`` and ``backward`` they are the net's own memory.
    """

    def __init__(self, ref, owner):
        self._ref = ref          # a BlobRef inside the runtime's array, valid for this call
        self._owner = owner
        self._scratch = None

    @property
    def name(self):
        return _capi.decode(self._ref.name)

    def _array(self, field):
        pointer = getattr(self._ref, field)
        shape = self._ref.shape
        if pointer:
            return view(pointer, shape, self._owner)
        if self._scratch is None or self._scratch[field == "diff"].shape != shape:
            self._scratch = (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
        return self._scratch[field == "diff"]

    @property
    def data(self):
        return self._array("data")

    @property
    def diff(self):
        return self._array("diff")

    @property
    def shape(self):
        return self._ref.shape

    def reshape(self, *shape):
        """Sets this blob's shape (what a Python layer's ``reshape`` does to its tops)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if len(shape) > _capi.MAX_DIMS:
            raise ValueError("a blob has at most %d axes, got shape %s" % (_capi.MAX_DIMS, shape))
        for d in shape:
            if int(d) < 0:
                raise ValueError("negative dimension in shape %s" % (shape,))
        self._ref.ndim = len(shape)
        for i, d in enumerate(shape):
            self._ref.dims[i] = int(d)
