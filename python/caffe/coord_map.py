"""Relating coordinates of net_spec tops through spatial layers (pycaffe's coord_map).

A coordinate map ``(axis, a, b)`` says that position ``x`` in one top corresponds to position
``a * x + b`` in another, along the spatial axes from `axis` on (``axis`` None: any). It is
used to align and crop feature maps, e.g. in fully convolutional nets::

    n.score = caffe.coord_map.crop(n.upscore, n.data)   # a Crop layer with the right offsets
"""

import numpy as np

from .net_spec import layers as L

# Layers that keep every coordinate where it is.
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
                       "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold"]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two maps act on different axes and cannot be composed."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution/Deconvolution/Im2col/Pooling
    description, each as a 1-d array (one entry, or one per spatial axis)."""
    p = fn.params.get("convolution_param", fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(fn.params)
    assert not legacy, "cropping does not support the legacy _h/_w parameters (%s)" % sorted(legacy)
    kernel = np.array(p["kernel_size"], ndmin=1)
    dilation = np.array(p.get("dilation", 1), ndmin=1)
    extent = (kernel - 1) * dilation + 1
    return p.get("axis", 1), np.array(p.get("stride", 1), ndmin=1), extent, np.array(p.get("pad", 0), ndmin=1)


def crop_params(fn):
    """(axis, offsets) of a Crop description (axis 2 unless given)."""
    p = fn.params.get("crop_param", fn.params)
    return p.get("axis", 2), np.array(p.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The map from a layer's output coordinates to its input's, as (axis, scale, shift)."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset   # axis - 1: the last axis that is not a coordinate
    raise UndefinedMapException(fn.type_name)


def compose(base_map, next_map):
    """Applies `next_map` after `base_map`: scales multiply; the next shift is scaled by the base scale."""
    axis1, a1, b1 = base_map
    axis2, a2, b2 = next_map
    if axis1 is None:
        axis = axis2
    elif axis2 is None or axis1 == axis2:
        axis = axis1
    else:
        raise AxisMismatchException("maps on axis %s and axis %s" % (axis1, axis2))
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map in the other direction: x = (y - b) / a."""
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _mappable_bottoms(top):
    # A Crop layer's second bottom only gives the size; coordinates flow through the first.
    return top.fn.inputs[:1] if top.fn.type_name == "Crop" else top.fn.inputs


def _walk_back(start):
    """Yields (top, map from `top`'s coordinates to `start`'s) for `start` and every ancestor
    reachable through layers with a coordinate map, depth first."""
    maps = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        yield top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)


def coord_map_from_to(top_from, top_to):
    """The map (axis, a, b) from coordinates of `top_from` to coordinates of `top_to`, found by
    walking both back to a common ancestor. RuntimeError when no spatial path connects them."""
    from_maps = dict(_walk_back(top_from))
    for top, to_map in _walk_back(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise RuntimeError("could not relate the coordinates of the two tops: "
                       "no path of spatial layers (convolution, pooling, crop ...) connects them")


def crop(top_from, top_to):
    """A Crop layer cutting `top_from` to the extent of `top_to`, with offsets from their mapping.
    AssertionError when the scales differ or the offset would be negative or fractional."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    assert (a == 1).all(), "scale mismatch on crop (a = {})".format(a)
    assert (b <= 0).all(), "cannot crop negative offset (b = {})".format(b)
    assert (np.round(b) == b).all(), "cannot crop noninteger offset (b = {})".format(b)
    return L.Crop(top_from, top_to, crop_param=dict(axis=axis + 1, offset=list(-np.round(b).astype(int))))
