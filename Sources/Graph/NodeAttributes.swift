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

    private func missingAttributes(_ what: String) -> Diagnostic {
        Diagnostic("the \(kind.rawValue) node has no \(what) attributes", at: location, layer: name,
                   hint: "build graphs with GraphBuilder, whose shape rules decide every node's attributes")
    }
}
