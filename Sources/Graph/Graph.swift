import CaffeFormat

/// Identifies a value (one version of a blob) in a `Graph`.
public typealias ValueID = Int
/// Identifies a node (one layer) in a `Graph`.
public typealias NodeID = Int

/// One version of a Caffe blob.
///
/// Caffe lets a layer write its output over its input (`top == bottom`, "in place"); the graph keeps
/// such rewrites as separate values that share the blob's `name`, so every value has exactly one
/// producer (SSA form). `Graph.value(named:)` finds the latest version, which is what Caffe's
/// `net.blobs[name]` shows after a forward pass.
public struct Value: Sendable {
    public let id: ValueID
    /// The Caffe blob name (`conv1`, `inception_3a/1x1`).
    public var name: String
    public var shape: TensorShape
    /// The node that writes this value; nil for values fed from outside the graph.
    public var producer: NodeID?
    /// The nodes that read this value, in schedule order.
    public var consumers: [NodeID] = []
    /// True when `producer` rewrote its input in place to make this value.
    public var isInPlace = false
}

/// The shape of one learnable parameter blob and how the solver treats it.
public struct ParameterInfo: Sendable, Equatable {
    public var shape: TensorShape
    /// Caffe's `param { lr_mult decay_mult name }` for this blob (defaults 1, 1, unnamed).
    public var lrMult: Float = 1
    public var decayMult: Float = 1
    /// A shared-parameter name; layers that use the same name share data and gradient.
    public var shareName: String?
    /// What the blob is, for people: `weights`, `bias`, `mean`, `variance`, `scale factor`.
    public var role: String

    public init(shape: TensorShape, role: String, lrMult: Float = 1, decayMult: Float = 1, shareName: String? = nil) {
        self.shape = shape
        self.role = role
        self.lrMult = lrMult
        self.decayMult = decayMult
        self.shareName = shareName
    }
}

/// One layer of the net as a graph node.
///
/// The node keeps the layer's full Caffe definition (`layer`), whose typed `*_param` messages are the
/// op's attributes, plus the resolved facts compilation needs: its op kind, inputs and outputs as
/// value ids, parameter shapes, loss weights and FLOPs.
public struct Node: Sendable {
    public let id: NodeID
    public var name: String
    public var kind: OpKind
    public var layer: Caffe_LayerParameter
    public var inputs: [ValueID]
    public var outputs: [ValueID]
    public var parameters: [ParameterInfo] = []
    /// Loss weight per output (0 for non-loss outputs), as Caffe's `Layer::SetLossWeights` resolves them.
    public var lossWeights: [Float] = []
    /// Floating-point operations of one forward pass (a multiply-add counts as 2).
    public var flops: Int = 0
    /// Where the layer was written, when it came from a text file.
    public var location: SourcePosition?
    /// True for layers the builder inserted (Caffe's automatic `Split` layers).
    public var isSynthetic = false
    /// An activation an inference pass folded into this node (`FuseActivation`): applied to each
    /// output element as the op writes it. Nil for nodes as the prototxt wrote them.
    public var fusedActivation: FusedActivation?
    /// A value an inference pass folded into this node's output (`FuseResidual`): the op writes
    /// `activation(op(x) + residual)`, what an Eltwise SUM after it computed. Listed among the
    /// value's consumers. Nil for nodes as the prototxt wrote them.
    public var fusedResidual: ValueID?
    /// What the shape rule decided from `layer` once (geometry, axes, modes); nil for ops that
    /// need none. Lowerings read these, not `layer`.
    public var attributes: NodeAttributes?

    public init(id: NodeID, name: String, kind: OpKind, layer: Caffe_LayerParameter, inputs: [ValueID], outputs: [ValueID]) {
        self.id = id
        self.name = name
        self.kind = kind
        self.layer = layer
        self.inputs = inputs
        self.outputs = outputs
    }
}

/// An element-wise activation applied in another op's epilogue, so the op's output is written once
/// instead of written, read back and written again by a separate layer.
public enum FusedActivation: Hashable, Sendable {
    /// Caffe's ReLU: `max(x, 0) + slope · min(x, 0)`.
    case relu(negativeSlope: Float)
}

/// A Caffe net for one phase as a typed, shape-annotated dataflow graph.
///
/// Invariants: `nodes` are in Caffe's execution order (each node's inputs are produced by earlier
/// nodes or are graph inputs); every value has at most one producer; shapes have been inferred for
/// every value once `GraphBuilder.build` returns. The graph knows nothing of LLVM or of memory.
///
///     let graph = try GraphBuilder(phase: .test).build(definition)
///     print(graph.value(named: "prob")!.shape)   // 10×1000
public struct Graph: Sendable {
    public var name: String
    public var phase: Caffe_Phase
    public var nodes: [Node] = []
    public var values: [Value] = []
    /// Values that are fed from outside (the tops of `Input` layers are produced by those nodes instead).
    public var externalInputs: [ValueID] = []
    /// Whether the net asked for gradients everywhere (`force_backward`).
    public var forceBackward = false
    /// What the builder decided on the user's behalf (e.g. stages it enabled), for reports.
    public var notes: [String] = []

    public init(name: String, phase: Caffe_Phase) {
        self.name = name
        self.phase = phase
    }

    /// The latest version of the blob called `name`.
    public func value(named name: String) -> Value? {
        values.last { $0.name == name }
    }

    public func node(named name: String) -> Node? {
        nodes.first { $0.name == name }
    }

    /// Values nobody reads: the net's outputs, as Caffe's `net.outputs`.
    public var outputs: [ValueID] {
        values.filter { $0.consumers.isEmpty && $0.producer != nil }.map(\.id)
    }

    /// Total learnable parameters (each shared blob counted once).
    public var parameterCount: Int {
        var seen = Set<String>()
        var total = 0
        for node in nodes {
            for (index, parameter) in node.parameters.enumerated() {
                let key = parameter.shareName.map { "shared:\($0)" } ?? "\(node.name)/\(index)"
                guard seen.insert(key).inserted else { continue }
                total += parameter.shape.count ?? 0
            }
        }
        return total
    }

    public var totalFlops: Int { nodes.reduce(0) { $0 + $1.flops } }

    // MARK: Building

    /// Appends a value (used by the builder and by passes that rebuild graphs).
    @discardableResult
    public mutating func addValue(name: String, shape: TensorShape, producer: NodeID?, inPlace: Bool = false) -> ValueID {
        let id = values.count
        values.append(Value(id: id, name: name, shape: shape, producer: producer, isInPlace: inPlace))
        return id
    }
}
