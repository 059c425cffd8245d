import CaffeFormat

/// Every Caffe layer type SwiftJIT understands, named exactly as in a prototxt's `type:` field.
///
/// Adding a layer starts here: a case, then its shape rule in `ShapeInference`, then (for execution)
/// its lowering and gradient. A `type:` not listed is rejected by `GraphBuilder` with the closest
/// supported names, so `Python` layers and typos fail in one clear line.
public enum OpKind: String, CaseIterable, Sendable {
    // Data sources
    case input = "Input", data = "Data", imageData = "ImageData", hdf5Data = "HDF5Data"
    case windowData = "WindowData", memoryData = "MemoryData", dummyData = "DummyData"
    case hdf5Output = "HDF5Output"
    // Vision
    case convolution = "Convolution", deconvolution = "Deconvolution", pooling = "Pooling"
    case innerProduct = "InnerProduct", lrn = "LRN", im2col = "Im2col", spp = "SPP"
    case roiPooling = "ROIPooling", crop = "Crop"
    // Normalization
    case batchNorm = "BatchNorm", scale = "Scale", bias = "Bias", mvn = "MVN"
    case normalize = "Normalize", l2Norm = "L2Norm"
    // Activations and elementwise maths
    case relu = "ReLU", prelu = "PReLU", elu = "ELU", sigmoid = "Sigmoid", tanh = "TanH"
    case absVal = "AbsVal", bnll = "BNLL", power = "Power", exp = "Exp", log = "Log"
    case clip = "Clip", swish = "Swish", threshold = "Threshold", dropout = "Dropout"
    // Structure
    case softmax = "Softmax", concat = "Concat", eltwise = "Eltwise", reshape = "Reshape"
    case flatten = "Flatten", split = "Split", slice = "Slice", tile = "Tile", silence = "Silence"
    case reduction = "Reduction", argMax = "ArgMax", embed = "Embed", parameter = "Parameter"
    case filter = "Filter", batchReindex = "BatchReindex"
    // Detection (SSD: weiliu89/caffe, branch ssd)
    case permute = "Permute", priorBox = "PriorBox", detectionOutput = "DetectionOutput"
    case annotatedData = "AnnotatedData", multiBoxLoss = "MultiBoxLoss", detectionEvaluate = "DetectionEvaluate"
    // Segmentation (SegNet: alexgkendall/caffe-segnet)
    case upsample = "Upsample"
    // Segmentation and sequence forks: SegNet's and ENet's BN and DenseImageData, ENet's spatial
    // dropout (a Python layer there, see `PythonLayerMapping`), CTPN's Transpose, Reverse, Lstm
    case bn = "BN", denseImageData = "DenseImageData", spatialDropout = "SpatialDropout"
    case transpose = "Transpose", reverse = "Reverse", ctpnLSTM = "Lstm"
    // YOLOv2 (Intel Caffe)
    case reorg = "Reorg"
    // Faster R-CNN's RPN proposals (py-faster-rcnn's Python layer, run natively as OpenCV DNN does)
    case proposal = "Proposal"
    // YOLOv2's detection head; R-FCN's position-sensitive ROI pooling (daijifeng001/caffe-rfcn)
    case region = "Region", psroiPooling = "PSROIPooling"
    // Recurrent
    case lstm = "LSTM", rnn = "RNN", lstmUnit = "LSTMUnit"
    // Losses and metrics
    case softmaxWithLoss = "SoftmaxWithLoss", sigmoidCrossEntropyLoss = "SigmoidCrossEntropyLoss"
    case euclideanLoss = "EuclideanLoss", hingeLoss = "HingeLoss", infogainLoss = "InfogainLoss"
    case multinomialLogisticLoss = "MultinomialLogisticLoss", contrastiveLoss = "ContrastiveLoss"
    case smoothL1Loss = "SmoothL1Loss", accuracy = "Accuracy"
    // Implemented by the caller (pycaffe's Python layers): only with a `GraphBuilder.hostLayerShapes` hook
    case python = "Python"

    /// Caffe's loss layers: their first top gets loss weight 1 unless the prototxt says otherwise.
    public var isLoss: Bool {
        switch self {
        case .softmaxWithLoss, .sigmoidCrossEntropyLoss, .euclideanLoss, .hingeLoss, .infogainLoss,
             .multinomialLogisticLoss, .contrastiveLoss, .smoothL1Loss, .multiBoxLoss:
            return true
        default:
            return false
        }
    }

    /// Layers whose tops come from outside the net (files, the API, fillers).
    public var isDataSource: Bool {
        switch self {
        case .input, .data, .imageData, .hdf5Data, .windowData, .memoryData, .dummyData, .annotatedData, .denseImageData: return true
        default: return false
        }
    }

    /// Layer types Caffe's own code knows that SwiftJIT does not (yet), with why.
    public static let knownUnsupported: [String: String] = [
        "Python": "it runs arbitrary Python code inside Caffe (py-faster-rcnn's rpn.proposal_layer is the exception: it runs natively as Proposal)",
        "Recurrent": "it is an abstract base type",
        "DeformableConvolution": "it is not part of BVLC Caffe",
    ]

    /// Parses a prototxt `type:` string.
    public init?(caffeType: String) {
        self.init(rawValue: caffeType)
    }

}
