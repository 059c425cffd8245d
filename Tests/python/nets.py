"""Small nets the tests build, with NumPy versions of what they compute."""


# An inner product on a 2 x 3 x 2 x 2 input, then a ReLU (in place).
LINEAR = """
name: "linear"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 2 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.25 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
"""

# The same inner product followed by a Python layer and a Python loss.
WITH_PYTHON_LAYERS = """
name: "python_layers"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "affine" type: "Python" bottom: "ip" top: "affine"
  python_param { module: "py_layers" layer: "Affine" param_str: "3 -1" } }
layer { name: "loss" type: "Python" bottom: "affine" top: "loss" loss_weight: 1
  python_param { module: "py_layers" layer: "SumOfSquares" } }
"""

FAILS_IN_FORWARD = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "boom" type: "Python" bottom: "data" top: "boom"
  python_param { module: "py_layers" layer: "FailsInForward" } }
"""

FAILS_IN_SETUP = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "boom" type: "Python" bottom: "data" top: "boom"
  python_param { module: "py_layers" layer: "FailsInSetup" param_str: "seven" } }
"""

# A classifier with a loss, for the solver: 4 samples of 6 features, 3 classes.
CLASSIFIER = """
name: "classifier"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def inner_product(x, weights, bias):
    return x.reshape(len(x), -1) @ weights.T + bias


def python_source_net(value):
    """A Python data layer named "data" giving `value`, an inner product and a Python loss."""
    return """
layer { name: "data" type: "Python" top: "data"
  python_param { module: "py_layers" layer: "ConstantSource" param_str: "%s" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "Python" bottom: "ip" top: "loss" loss_weight: 1
  python_param { module: "py_layers" layer: "SumOfSquares" } }
""" % value
