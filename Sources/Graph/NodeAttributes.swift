import CaffeFormat

/// A node's typed attributes: what its shape rule decided once from the layer's
/// `Caffe_LayerParameter` (window geometry, axes, modes), checked as Caffe checks them. Lowerings,
/// gradients and exporters read these instead of re-reading and re-checking the Caffe message, so
/// a pass that changes an attribute (FoldBatchNorm turning a bias on) changes it in one place,
/// and a lowering cannot disagree with the shapes the graph was built with. Ops whose lowerings
/// need nothing beyond their blob shapes carry none.
public enum NodeAttributes: Sendable, Equatable {
    /// Convolution, Deconvolution and Im2col.
    case convolution(ConvolutionGeometry)
    case pooling(PoolingAttributes)
    case innerProduct(InnerProductAttributes)
    /// Concat and Slice: the canonical axis they join or split along (`axis`, or the legacy
    /// `concat_dim`/`slice_dim` when only it is given). Softmax, SoftmaxWithLoss, Accuracy and
    /// InfogainLoss: the canonical class axis.
    case axis(Int)
    case eltwise(EltwiseAttributes)
    case lrn(LRNAttributes)
}

/// An Eltwise layer's attributes: its operation, one coefficient per bottom (all 1 unless SUM's
/// `coeff` gives them), and whether PROD's gradient multiplies the other bottoms
/// (`stable_prod_grad`, the default) or divides the top by the bottom.
public struct EltwiseAttributes: Sendable, Equatable {
    public var operation: Caffe_EltwiseParameter.EltwiseOp
    public var coefficients: [Float]
    public var stableProductGradient: Bool

    public init(operation: Caffe_EltwiseParameter.EltwiseOp, coefficients: [Float], stableProductGradient: Bool) {
        self.operation = operation
        self.coefficients = coefficients
        self.stableProductGradient = stableProductGradient
    }
}

/// An LRN layer's attributes: the window (odd `local_size`), its region, and the constants of
/// `x / (k + α/n·Σx²)^β`.
public struct LRNAttributes: Sendable, Equatable {
    public var localSize: Int
    public var region: Caffe_LRNParameter.NormRegion
    public var alpha: Float
    public var beta: Float
    public var k: Float

    public init(localSize: Int, region: Caffe_LRNParameter.NormRegion, alpha: Float, beta: Float, k: Float) {
        self.localSize = localSize
        self.region = region
        self.alpha = alpha
        self.beta = beta
        self.k = k
    }
}

/// A Pooling layer's attributes: its resolved window (global pooling and rounding included) and
/// its method.
public struct PoolingAttributes: Sendable, Equatable {
    public var geometry: PoolingGeometry
    public var method: Caffe_PoolingParameter.PoolMethod

    public init(geometry: PoolingGeometry, method: Caffe_PoolingParameter.PoolMethod) {
        self.geometry = geometry
        self.method = method
    }
}

/// An InnerProduct's attributes: `y (M×N) = x (M×K) · Wᵀ + bias`, M the product of the input
/// axes before `axis` (already canonical, so never negative) and K of the rest; with `transpose`
/// the stored weights are K×N.
public struct InnerProductAttributes: Sendable, Equatable {
    public var axis: Int
    public var numOutput: Int
    public var transpose: Bool
    public var biasTerm: Bool

    public init(axis: Int, numOutput: Int, transpose: Bool, biasTerm: Bool) {
        self.axis = axis
        self.numOutput = numOutput
        self.transpose = transpose
        self.biasTerm = biasTerm
    }
}

extension Node {
    /// The convolution geometry its shape rule decided (Convolution, Deconvolution, Im2col).
    public func convolutionGeometry() throws -> ConvolutionGeometry {
        guard case .convolution(let g) = attributes else { throw missingAttributes("convolution") }
        return g
    }

    /// The pooling window and method its shape rule decided.
    public func poolingAttributes() throws -> PoolingAttributes {
        guard case .pooling(let p) = attributes else { throw missingAttributes("pooling") }
        return p
    }

    /// The InnerProduct attributes its shape rule decided.
    public func innerProductAttributes() throws -> InnerProductAttributes {
        guard case .innerProduct(let p) = attributes else { throw missingAttributes("inner product") }
        return p
    }

    /// The canonical axis its shape rule decided (Concat, Slice; the class axis of Softmax,
    /// SoftmaxWithLoss, Accuracy, InfogainLoss).
    public func axisAttribute() throws -> Int {
        guard case .axis(let axis) = attributes else { throw missingAttributes("axis") }
        return axis
    }

    /// The Eltwise operation and coefficients its shape rule decided.
    public func eltwiseAttributes() throws -> EltwiseAttributes {
        guard case .eltwise(let p) = attributes else { throw missingAttributes("eltwise") }
        return p
    }

    /// The LRN window and constants its shape rule decided.
    public func lrnAttributes() throws -> LRNAttributes {
        guard case .lrn(let p) = attributes else { throw missingAttributes("LRN") }
        return p
    }

    private func missingAttributes(_ what: String) -> Diagnostic {
        Diagnostic("the \(kind.rawValue) node has no \(what) attributes", at: location, layer: name,
                   hint: "build graphs with GraphBuilder, whose shape rules decide every node's attributes")
    }
}
