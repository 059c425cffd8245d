"""A drop-in replacement for BVLC Caffe's ``caffe`` Python module, running on SwiftJIT.

Scripts written for pycaffe run unchanged::

    import caffe
    caffe.set_mode_cpu()
    net = caffe.Net("deploy.prototxt", caffe.TEST, weights="bvlc_reference_caffenet.caffemodel")
    transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    net.blobs["data"].data[...] = transformer.preprocess("data", caffe.io.load_image("cat.jpg"))
    print(net.forward()["prob"].argmax())

What is here: ``Net`` (blobs and params as NumPy views of the runtime's memory), the solvers
(``SGDSolver`` ... ``AdamSolver``, ``get_solver``), ``Layer`` (base class of Python layers),
``io``, ``proto.caffe_pb2``, ``NetSpec``/``layers``/``params`` (net_spec), ``coord_map``,
``draw``, ``Classifier`` and ``Detector``. SwiftJIT runs on the CPU only: ``set_mode_gpu``
warns and the nets keep running on the CPU.
"""

from swiftjit._net import Layer
from .pycaffe import (Net, Solver, SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                      AdamSolver, get_solver, TRAIN, TEST)
from ._runtime import (set_mode_cpu, set_mode_gpu, set_device, set_random_seed, layer_type_list, init_log, log,
                       solver_count, set_solver_count, solver_rank, set_solver_rank, set_multiprocess, has_nccl,
                       NCCL, Timer, GPUUnavailableWarning)
from .classifier import Classifier
from .detector import Detector
from . import io
from .net_spec import layers, params, NetSpec, to_proto

__all__ = ["Net", "Layer", "TRAIN", "TEST", "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "set_mode_cpu", "set_mode_gpu", "set_device",
           "set_random_seed", "layer_type_list", "init_log", "log", "solver_count", "set_solver_count",
           "solver_rank", "set_solver_rank", "set_multiprocess", "has_nccl", "NCCL", "Timer", "Classifier",
           "Detector", "io", "layers", "params", "NetSpec", "to_proto", "GPUUnavailableWarning"]


def __getattr__(name):
    # The version comes from the C library, loaded on first use so that `import caffe` works
    # (for io, net_spec, proto ...) before libswiftjit.so is built.
    if name == "__version__":
        import swiftjit
        return swiftjit.__version__
    if name in ("draw", "coord_map"):
        # Imported on first use, as pycaffe scripts expect `caffe.draw` after `import caffe.draw`;
        # draw needs pydot, which plain inference does not.
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError("module 'caffe' has no attribute %r" % name)
