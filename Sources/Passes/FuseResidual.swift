import Graph

/// Folds an Eltwise SUM of a convolution's output and another blob (a residual connection) into
/// the convolution: the convolution accumulates its product onto the other blob and applies the
/// Eltwise's activation in its epilogue, so the separate pass that read both blobs and wrote a third
/// disappears (ResNet-50 loses its 16 Eltwise layers this way).
///
/// Folded only when the Eltwise is a plain SUM (no coefficients other than 1) of exactly two blobs
/// of the same shape, one of them the sole output of a convolution that only this Eltwise reads and
/// that has no activation of its own, the other produced before that convolution runs (so it is
/// there to accumulate onto), and the Eltwise's top is read by some layer (a net output keeps its
/// own name). Float results differ from Caffe's only in the order of one addition.
///
///     res2a_branch1 ─┐                               res2a_branch1 ─┐
///     res2a_branch2c ┴→ res2a [relu]     becomes     res2a_branch2c [+ res2a_branch1, relu]
public struct FuseResidual: GraphPass {
    public let name = "fuse residual additions into the convolution before them"

    public init() {}

    public func run(_ context: inout PassContext) throws {
        let graph = context.graph
        let count = context.foldNodes { node, nodes, removed in
            guard node.kind == .eltwise, node.inputs.count == 2 else { return nil }
            guard let p = try? node.eltwiseAttributes(), p.operation == .sum, p.coefficients.allSatisfy({ $0 == 1 }),
                  node.inputs[0] != node.inputs[1] else { return nil }
            let output = graph.values[node.outputs[0]]
            guard !output.consumers.isEmpty, output.shape.count != nil else { return nil }
            // The later-produced term is the convolution; the other one must already exist when it runs.
            let candidates = node.inputs.sorted { (graph.values[$0].producer ?? -1) > (graph.values[$1].producer ?? -1) }
            let (term, residual) = (graph.values[candidates[0]], graph.values[candidates[1]])
            guard let producerID = term.producer, !removed.contains(producerID) else { return nil }
            let producer = nodes[producerID]
            guard producer.kind == .convolution, producer.inputs.count == 1, producer.outputs.count == 1,
                  producer.fusedActivation == nil, producer.fusedResidual == nil,
                  term.consumers == [node.id], term.shape == residual.shape, term.shape == output.shape,
                  (residual.producer ?? -1) < producerID else { return nil }
            nodes[producerID].fusedResidual = residual.id
            nodes[producerID].fusedActivation = node.fusedActivation
            return term.id
        }
        if count > 0 {
            context.report.append("fused \(count) residual Eltwise layer\(count == 1 ? "" : "s") into the convolutions before them")
        }
    }
}
