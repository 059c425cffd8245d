"""pycaffe's module-level switches (mode, device, seed, logging, multi-GPU) for SwiftJIT."""

import sys
import time
import warnings

from swiftjit import errors
from . import _config

# The layer types SwiftJIT's compiler accepts (Sources/Graph/OpKind.swift; a test checks they
# agree) plus "Python", which the C API runs through caller-implemented layers.
_LAYER_TYPES = (
    "Input", "Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData", "HDF5Output",
    "Convolution", "Deconvolution", "Pooling", "InnerProduct", "LRN", "Im2col", "SPP", "ROIPooling", "Crop",
    "BatchNorm", "Scale", "Bias", "MVN", "Normalize", "L2Norm",
    "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log", "Clip", "Swish",
    "Threshold", "Dropout",
    "Softmax", "Concat", "Eltwise", "Reshape", "Flatten", "Split", "Slice", "Tile", "Silence", "Reduction",
    "ArgMax", "Embed", "Parameter", "Filter", "BatchReindex",
    "Permute", "PriorBox", "DetectionOutput", "AnnotatedData", "MultiBoxLoss", "DetectionEvaluate",  # SSD's fork
    "Upsample", "Reorg",  # SegNet's and YOLOv2's forks
    "BN", "DenseImageData", "SpatialDropout",  # SegNet's and ENet's forks
    "Transpose", "Reverse", "Lstm",  # CTPN's fork
    "Proposal", "Region", "PSROIPooling",  # Faster R-CNN (OpenCV DNN's Proposal), YOLOv2, R-FCN
    "LSTM", "RNN", "LSTMUnit",
    "SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
    "MultinomialLogisticLoss", "ContrastiveLoss", "SmoothL1Loss", "Accuracy",
    "Python",
)


class GPUUnavailableError(errors.Error, RuntimeError):
    """Raised for multi-GPU training (set_solver_count/set_solver_rank): SwiftJIT is a CPU runtime."""


class GPUUnavailableWarning(RuntimeWarning):
    """Warned by caffe.set_mode_gpu(): the nets keep running on the CPU."""


def set_mode_cpu():
    """Runs nets on the CPU (the only mode SwiftJIT has; kept for pycaffe scripts)."""


def set_mode_gpu():
    """Warns (GPUUnavailableWarning) and keeps running on the CPU: SwiftJIT has no GPU build.

    Scripts and notebooks written for GPU machines (BVLC's 01-learning-lenet calls
    set_device(0); set_mode_gpu() before it builds its solver) then run unchanged, with the numbers a
    CPU run gives. Turn the warning into an error with
    ``warnings.simplefilter("error", caffe.GPUUnavailableWarning)``.
    """
    warnings.warn("caffe.set_mode_gpu(): SwiftJIT runs on the CPU only (there is no GPU build); "
                  "continuing on the CPU", GPUUnavailableWarning, stacklevel=2)


def set_device(device_id):
    """Records the GPU id pycaffe scripts select; it has no effect, since there is no GPU mode."""
    _config.device = int(device_id)


def set_random_seed(seed):
    """Seeds weight fillers, DummyData and Dropout of the nets and solvers created after this call."""
    _config.seed = int(seed)


def layer_type_list():
    """The layer types a prototxt may use (``type:`` values), sorted as Caffe's registry lists them."""
    return sorted(_LAYER_TYPES)


def init_log(level=0, use_stderr=False):
    """Accepted for compatibility; SwiftJIT's library reports through exceptions, not glog."""


def log(message):
    """Prints `message` to stderr, as pycaffe's caffe.log does through glog."""
    print(message, file=sys.stderr)


def solver_count():
    """Number of solvers in a multi-GPU run (always 1 here)."""
    return 1


def set_solver_count(count):
    if int(count) != 1:
        raise GPUUnavailableError("multi-GPU training (solver_count %d) needs a GPU build" % count)


def solver_rank():
    return 0


def set_solver_rank(rank):
    if int(rank) != 0:
        raise GPUUnavailableError("multi-GPU training (solver rank %d) needs a GPU build" % rank)


def set_multiprocess(value):
    """Accepted for compatibility (no multi-GPU here)."""


def has_nccl():
    """False: NCCL multi-GPU training needs a GPU build."""
    return False


class NCCL:
    """pycaffe's multi-GPU helper; unavailable without a GPU build."""

    def __init__(self, *args, **kwargs):
        raise GPUUnavailableError("caffe.NCCL needs a GPU build; SwiftJIT runs on the CPU only")


class Timer:
    """A wall-clock timer in milliseconds (pycaffe's caffe.Timer)."""

    def __init__(self):
        self._start = None
        self._elapsed = 0.0

    def start(self):
        self._start = time.perf_counter()

    def stop(self):
        if self._start is not None:
            self._elapsed = (time.perf_counter() - self._start) * 1000.0
            self._start = None

    @property
    def ms(self):
        return self._elapsed
