import Graph
import NumPy

/// What passes transform: a graph, its parameter values by layer name, and a log of what changed.
public struct PassContext: Sendable {
    public var graph: Graph
    public var parameters: [String: [NDArray]]
    /// One line per rewrite, for `swiftjit compile`'s report.
    public var report: [String] = []

    public init(graph: Graph, parameters: [String: [NDArray]]) {
        self.graph = graph
        self.parameters = parameters
    }
}

/// One graph-to-graph rewrite, run before lowering. A pass keeps the net's outputs exactly (up to
/// float rounding) and every remaining blob's name and shape.
public protocol GraphPass: Sendable {
    var name: String { get }
    func run(_ context: inout PassContext) throws
}

/// The inference pipeline, in order: fold BatchNorm/Scale into the convolution or InnerProduct
/// before them, drop layers that are the identity at inference (Dropout in TEST, Split), fold
/// each ReLU into the epilogue of the layer that feeds it, then fold residual additions into the
/// convolution that computes their last term.
public enum InferencePasses {
    public static let standard: [any GraphPass] = [FoldBatchNorm(), RemoveIdentities(), FuseActivation(), FuseResidual()]

    public static func run(_ graph: Graph, parameters: [String: [NDArray]], passes: [any GraphPass] = standard) throws -> PassContext {
        var context = PassContext(graph: graph, parameters: parameters)
        for pass in passes { try pass.run(&context) }
        return context
    }
}

extension PassContext {
    /// The skeleton of a pass that folds single-output nodes into the node producing one of their
    /// inputs: `fold` sees each node in order with the (updated) nodes and what was removed so far;
    /// when it moves the node's work into another node it returns the value that now stands for the
    /// node's output, and the node is removed. Returns how many nodes were folded.
    mutating func foldNodes(_ fold: (_ node: Node, _ nodes: inout [Node], _ removed: Set<NodeID>) -> ValueID?) -> Int {
        let graph = self.graph
        var nodes = graph.nodes
        var removed = Set<NodeID>()
        var replacements: [ValueID: ValueID] = [:]
        for node in graph.nodes where node.outputs.count == 1 {
            guard let replacement = fold(node, &nodes, removed) else { continue }
            removed.insert(node.id)
            replacements[node.outputs[0]] = replacement
        }
        guard !removed.isEmpty else { return 0 }
        var rewritten = graph
        rewritten.nodes = nodes
        self.graph = rewritten.removing(removed, replacing: replacements)
        return removed.count
    }
}

extension Graph {
    /// The graph without `removed` nodes, where each removed node's outputs are replaced by the
    /// values in `replacements` (old output id → old id of the value that now stands for it).
    /// Value and node ids are renumbered; names, shapes and order are kept.
    public func removing(_ removed: Set<NodeID>, replacing replacements: [ValueID: ValueID]) -> Graph {
        var result = Graph(name: name, phase: phase)
        result.forceBackward = forceBackward
        result.notes = notes
        var valueMap: [ValueID: ValueID] = [:]
        func resolve(_ id: ValueID) -> ValueID {
            var current = id
            while let next = replacements[current] { current = next }
            return valueMap[current]!
        }
        for id in externalInputs {
            let value = values[id]
            valueMap[id] = result.addValue(name: value.name, shape: value.shape, producer: nil)
            result.externalInputs.append(valueMap[id]!)
        }
        for node in nodes where !removed.contains(node.id) {
            var copy = node
            copy.inputs = node.inputs.map(resolve)
            let newID = result.nodes.count
            copy.outputs = node.outputs.map { old in
                let value = values[old]
                let id = result.addValue(name: value.name, shape: value.shape, producer: newID, inPlace: value.isInPlace)
                valueMap[old] = id
                return id
            }
            copy.fusedResidual = node.fusedResidual.map(resolve)
            for input in copy.inputs + (copy.fusedResidual.map { [$0] } ?? []) { result.values[input].consumers.append(newID) }
            result.nodes.append(Node(renumbering: copy, id: newID))
        }
        return result
    }
}

extension Node {
    /// A copy with a new id (nodes are numbered by position).
    init(renumbering node: Node, id: NodeID) {
        self = Node(id: id, name: node.name, kind: node.kind, layer: node.layer, inputs: node.inputs, outputs: node.outputs)
        parameters = node.parameters
        lossWeights = node.lossWeights
        flops = node.flops
        location = node.location
        isSynthetic = node.isSynthetic
        fusedActivation = node.fusedActivation
        fusedResidual = node.fusedResidual
        attributes = node.attributes
    }
}
