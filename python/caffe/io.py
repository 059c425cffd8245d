"""Moving data between NumPy, images and Caffe's protobuf messages (pycaffe's ``caffe.io``).

* ``Transformer``: turns an H x W x K image in [0, 1] into the K x H x W array a net expects
  (resize, transpose, channel swap, raw scale, mean, input scale) and back.
* ``load_image``, ``resize_image``, ``oversample``: image helpers (scikit-image / SciPy).
* ``blobproto_to_array``, ``array_to_blobproto``, ``arraylist_to_blobprotovector_str``,
  ``blobprotovector_str_to_arraylist``, ``array_to_datum``, ``datum_to_array``: conversions
  between arrays and ``caffe_pb2.BlobProto`` / ``BlobProtoVector`` / ``Datum``.

Example (the classic ImageNet preprocessing)::

    t = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))        # H x W x C -> C x H x W
    t.set_channel_swap("data", (2, 1, 0))     # RGB -> BGR
    t.set_raw_scale("data", 255)              # [0, 1] -> [0, 255]
    t.set_mean("data", np.array([104, 117, 123]))
    net.blobs["data"].data[0] = t.preprocess("data", caffe.io.load_image("cat.jpg"))
"""

import numpy as np

from .proto import caffe_pb2


# --- protobuf <-> NumPy ------------------------------------------------------------------------

def blobproto_to_array(blob, return_diff=False):
    """The values of a ``BlobProto`` as an array of its shape (``return_diff``: its diff instead).

    The shape comes from the legacy num/channels/height/width fields when any is set, otherwise
    from ``shape.dim``. A blob with no shape at all is accepted only when it holds one value
    (returned as a 0-d array); otherwise ValueError.
    """
    values = np.array(blob.diff if return_diff else blob.data)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    expected = int(np.prod(shape, dtype=np.int64))
    if values.size != expected:
        raise ValueError("BlobProto holds %d values but its shape %s needs %d%s"
                         % (values.size, shape, expected,
                            " (it has no shape: set shape.dim or num/channels/height/width)" if not shape else ""))
    return values.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A ``BlobProto`` with ``arr``'s shape (``shape.dim``) and values (and ``diff``'s, if given,
    which must have the same shape)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError("diff has shape %s, the array has shape %s" % (diff.shape, arr.shape))
        blob.diff.extend(diff.astype(np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """Serialized ``BlobProtoVector`` bytes holding one blob per array."""
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(serialized):
    """The arrays of serialized ``BlobProtoVector`` bytes."""
    vector = caffe_pb2.BlobProtoVector()
    vector.ParseFromString(serialized)
    return [blobproto_to_array(b) for b in vector.blobs]


def array_to_datum(arr, label=None):
    """A ``Datum`` from a C x H x W array: uint8 arrays go to ``data`` (bytes), others to
    ``float_data``. ``label`` is set only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("array_to_datum needs a 3-d (channels, height, width) array, got shape %s" % (arr.shape,))
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """The C x H x W array of a ``Datum`` (uint8 from ``data``, else float from ``float_data``).
    The label is ``datum.label``."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=np.float64).reshape(shape)


# --- images ------------------------------------------------------------------------------------

def load_image(filename, color=True):
    """Reads an image as float32 in [0, 1]: H x W x 3 (RGB) when `color`, else H x W x 1.

    Grayscale files are repeated to three channels when `color`; an alpha channel is dropped.
    """
    import skimage
    import skimage.io
    image = skimage.img_as_float(skimage.io.imread(filename, as_gray=not color)).astype(np.float32)
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
        if color:
            image = np.tile(image, (1, 1, 3))
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return image


def resize_image(im, new_dims, interp_order=1):
    """Resizes an H x W x K array to ``new_dims`` = (height, width), keeping K.

    ``interp_order`` is the spline order (1: bilinear). One- and three-channel images are
    resized with scikit-image in their own value range; other channel counts with SciPy's zoom.
    Returns float32.
    """
    im = np.asarray(im)
    new_dims = tuple(int(d) for d in new_dims)
    if im.shape[-1] in (1, 3):
        low, high = float(im.min()), float(im.max())
        if high <= low:  # a constant image stays constant (and avoids dividing by zero)
            return np.full(new_dims + (im.shape[-1],), low, dtype=np.float32)
        from skimage.transform import resize
        normalized = (im - low) / (high - low)
        resized = resize(normalized, new_dims, order=interp_order, mode="constant") * (high - low) + low
    else:
        from scipy.ndimage import zoom
        factors = (new_dims[0] / float(im.shape[0]), new_dims[1] / float(im.shape[1]), 1.0)
        resized = zoom(im, factors, order=interp_order)
    return np.asarray(resized, dtype=np.float32)


def oversample(images, crop_dims):
    """Ten crops per image: the four corners and the center, each also mirrored left-right.

    `images` is a sequence of H x W x K arrays (all the same shape); returns a
    (10 * N) x h x w x K float32 array, the five crops of an image followed by their mirrors.
    """
    height, width = images[0].shape[:2]
    crop_h, crop_w = int(crop_dims[0]), int(crop_dims[1])
    center_top = int(height / 2.0 - crop_h / 2.0)
    center_left = int(width / 2.0 - crop_w / 2.0)
    corners = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w),
               (center_top, center_left)]
    crops = np.empty((10 * len(images), crop_h, crop_w, images[0].shape[-1]), dtype=np.float32)
    k = 0
    for image in images:
        for top, left in corners:
            crops[k] = image[top:top + crop_h, left:left + crop_w, :]
            k += 1
        crops[k:k + 5] = crops[k - 5:k, :, ::-1, :]
        k += 5
    return crops


# --- Transformer -------------------------------------------------------------------------------

class Transformer:
    """Prepares images for a net's inputs, and undoes it.

    ``Transformer({input name: input shape})``, e.g. ``{"data": (10, 3, 227, 227)}``. For each
    input you may set, applied by :meth:`preprocess` in this order after resizing to the input's
    H x W: ``set_transpose`` (axis order), ``set_channel_swap`` (channel order, e.g. RGB->BGR),
    ``set_raw_scale`` (multiply), ``set_mean`` (subtract), ``set_input_scale`` (multiply).
    :meth:`deprocess` applies the inverses in reverse order.
    """

    def __init__(self, inputs):
        self.inputs = dict(inputs)
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, name):
        if name not in self.inputs:
            raise KeyError("%r is not one of the transformer's inputs: %s" % (name, list(self.inputs)))

    def preprocess(self, in_, data):
        """H' x W' x K image -> K x H x W float32 array ready for input `in_`."""
        self._check_input(in_)
        result = np.asarray(data).astype(np.float32, copy=False)
        target = tuple(self.inputs[in_][2:])
        if tuple(result.shape[:2]) != target:
            result = resize_image(result, target)
        if in_ in self.transpose:
            result = result.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            result = result[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            result = result * self.raw_scale[in_]
        if in_ in self.mean:
            result = result - self.mean[in_]
        if in_ in self.input_scale:
            result = result * self.input_scale[in_]
        return np.asarray(result, dtype=np.float32)

    def deprocess(self, in_, data):
        """The inverse of :meth:`preprocess` (without the resize): K x H x W -> H x W x K."""
        self._check_input(in_)
        result = np.array(data, copy=True).squeeze()
        if in_ in self.input_scale:
            result = result / self.input_scale[in_]
        if in_ in self.mean:
            result = result + self.mean[in_]
        if in_ in self.raw_scale:
            result = result / self.raw_scale[in_]
        if in_ in self.channel_swap:
            result = result[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            result = result.transpose(np.argsort(self.transpose[in_]))
        return result

    def set_transpose(self, in_, order):
        """Axis order applied to the image, e.g. (2, 0, 1) for H x W x C -> C x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError("transpose order %s must have %d axes (the input %r has shape %s)"
                             % (tuple(order), len(self.inputs[in_]) - 1, in_, tuple(self.inputs[in_])))
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after transposing, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError("channel swap %s must list %d channels (input %r has shape %s)"
                             % (tuple(order), self.inputs[in_][1], in_, tuple(self.inputs[in_])))
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiplier applied before the mean, e.g. 255 for models trained on [0, 255] pixels."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: per channel (a K vector) or per pixel (K x H x W, or H x W).

        A per-pixel mean of another size is resized to the input's H x W.
        """
        self._check_input(in_)
        mean = np.asarray(mean)
        channels = self.inputs[in_][1]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ValueError("mean has %d channels, input %r has %d" % (mean.shape[0], in_, channels))
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3:
                raise ValueError("mean must be a K vector, an H x W or a K x H x W array; got shape %s" % (mean.shape,))
            wanted = tuple(self.inputs[in_][1:])
            if mean.shape != wanted:
                resized = resize_image(mean.transpose(1, 2, 0), wanted[1:])
                if resized.ndim == 2:
                    resized = resized[:, :, np.newaxis]
                mean = resized.transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiplier applied last (after the mean), e.g. 0.017 for some normalizations."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """A :class:`Transformer` for `net`'s first input (H x W x K images in, C x H x W out) with
    the given mean, scales and channel order — what ``Classifier`` and ``Detector`` preprocess with."""
    name = net.inputs[0]
    transformer = Transformer({name: net.blobs[name].data.shape})
    transformer.set_transpose(name, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(name, mean)
    if input_scale is not None:
        transformer.set_input_scale(name, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(name, channel_swap)
    return transformer
