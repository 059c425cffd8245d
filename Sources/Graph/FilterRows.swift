import CaffeFormat

/// Filter's data-dependent row counts, at the graph level.
///
/// Shape inference gives a Filter's tops Caffe's setup shape (all N rows). Each Forward, Caffe
/// resizes them to the number of selected rows and every layer below reshapes. A graph compiled
/// for concrete shapes cannot follow that by itself, so the compiler asks for the graph *as it is
/// for given counts*: `specializingFilterRows` sets the first axis of each Filter's tops and
/// re-runs the shape rules of every layer downstream, exactly as Caffe's per-Forward `Reshape`
/// calls would. Layers whose inputs did not change keep their shapes (and so, once lowered, their
/// cached kernels). Example: in `x 4×3×2 → Filter(sel) → fx → InnerProduct → ip`, rows `[3]`
/// gives `fx` 3×3×2 and `ip` 3×N; `x` stays 4×3×2.
extension Graph {
    /// The nodes whose tops have a data-dependent first axis (Filter, Proposal), in net order; a
    /// row-count vector has one entry per such node, in this order.
    public var filterNodes: [NodeID] { nodes.filter { $0.kind.selectsRows }.map(\.id) }

    /// This graph with the tops of Filter `filterNodes[k]` holding `rows[k]` rows and every shape
    /// that depends on them re-inferred. Parameter shapes must not change (Caffe's layers CHECK
    /// that too, e.g. InnerProduct's "Input size incompatible with inner product parameters"):
    /// a layer whose parameters would change throws a `Diagnostic` naming it.
    ///
    /// Counts from index `guessesFrom` on are guesses for Filters whose count is not known yet
    /// (a compiled net re-specializing at an earlier Filter keeps the later ones' last counts):
    /// each is clamped to the rows its Filter receives instead of being refused.
    public func specializingFilterRows(_ rows: [Int], guessesFrom: Int = Int.max) throws -> Graph {
        let filters = filterNodes
        guard rows.count == filters.count else {
            throw Diagnostic("\(rows.count) row count\(rows.count == 1 ? "" : "s") given for \(filters.count) Filter layer\(filters.count == 1 ? "" : "s")")
        }
        var result = self
        var changed = Set<ValueID>()
        for node in nodes {
            let filter = filters.firstIndex(of: node.id)
            var outputs: [TensorShape]
            if node.inputs.contains(where: changed.contains) {
                let context = ShapeContext(layer: node.layer, kind: node.kind, inputs: node.inputs.map { result.values[$0].shape },
                                           inputNames: node.inputs.map { values[$0].name }, phase: phase, overrides: [:])
                let signature: LayerSignature
                do {
                    signature = try ShapeInference.infer(context)
                } catch let diagnostic as Diagnostic {
                    var located = diagnostic.inLayer(node.name)
                    if located.location == nil { located.location = node.location }
                    throw located
                }
                for (k, parameter) in signature.parameters.enumerated() where k < node.parameters.count && parameter.shape != node.parameters[k].shape {
                    throw Diagnostic("with Filter row counts \(rows), parameter \(k) (\(parameter.role)) would be \(parameter.shape), but it is \(node.parameters[k].shape)",
                                     at: node.location, layer: node.name,
                                     hint: "a layer's parameters cannot depend on how many rows a Filter selects; filter after it, or along a different axis")
                }
                outputs = Array(signature.outputs.prefix(node.outputs.count))
                result.nodes[node.id].flops = signature.flops
            } else if filter != nil {
                outputs = node.outputs.map { values[$0].shape }
            } else {
                continue
            }
            if let k = filter {
                for index in outputs.indices where outputs[index].rank > 0 {
                    let count = k >= guessesFrom ? min(rows[k], outputs[index][0]) : rows[k]
                    guard count >= 0, count <= outputs[index][0] else {
                        throw Diagnostic("cannot select \(rows[k]) of the \(outputs[index][0]) rows", at: node.location, layer: node.name)
                    }
                    outputs[index][0] = count
                }
            }
            for (output, shape) in zip(node.outputs, outputs) where shape != values[output].shape {
                result.values[output].shape = shape
                changed.insert(output)
            }
        }
        return result
    }
}

extension OpKind {
    /// Layers that, like Caffe's `Filter`, resize their tops' first axis at every Forward to a
    /// count their input *values* decide: Filter (the selected rows) and Proposal (the boxes that
    /// survive NMS, at most its setup count). Their shape rules give the setup (largest) count.
    public var selectsRows: Bool { self == .filter || self == .proposal }
}
