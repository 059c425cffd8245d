"""Python layers the tests' nets name in python_param { module: "py_layers" ... }."""

import numpy as np

import caffe


class Affine(caffe.Layer):
    """top = scale * bottom + shift, with "scale shift" in param_str."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("Affine takes one bottom and one top")
        self.scale, self.shift = (float(v) for v in self.param_str.split())

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.scale * bottom[0].data + self.shift

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.scale * top[0].diff


class SumOfSquares(caffe.Layer):
    """A loss written in Python: top = sum(bottom**2) / 2, so d top / d bottom = bottom."""

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = 0.5 * np.sum(bottom[0].data ** 2)

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = bottom[0].data * top[0].diff


class FailsInForward(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        explode_with_a_clear_message()


def explode_with_a_clear_message():
    raise ZeroDivisionError("py_layers.FailsInForward always fails")


class FailsInSetup(caffe.Layer):
    def setup(self, bottom, top):
        raise ValueError("bad param_str: %r" % self.param_str)


class ConstantSource(caffe.Layer):
    """A data layer: one 2 x 3 top filled with float(param_str)."""

    def setup(self, bottom, top):
        self.value = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(2, 3)

    def forward(self, bottom, top):
        top[0].data[...] = self.value
