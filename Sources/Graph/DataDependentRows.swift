import CaffeFormat

/// Where a layer's tops have an extent that is data, not shape: the axis, which tops, and the
/// most rows a run can give them.
///
/// Filter selects rows of its bottoms (axis 0 of every top, at most the N rows it receives);
/// DetectionOutput keeps a data-dependent number of detections (axis 2 of its `1×1×R×7` top, at
/// most `DetectionOutputBound.rows`); Proposal the boxes that survive NMS (axis 0 of its tops, at
/// most `post_nms_topN`). A layer that joins them adds one case to `Graph.rowOwnership(of:inputs:outputs:)`; the compiler's row guards and
/// re-specialization then work for it unchanged (docs/architecture.md, "Data-dependent rows").
public struct RowOwnership: Sendable, Equatable {
    /// The axis of each top in `tops` whose extent is the observed count.
    public var axis: Int
    /// Which of the layer's tops (indices into its outputs) take the count.
    public var tops: [Int]
    /// The largest count a run can observe, for clamping guesses and refusing impossible counts.
    public var capacity: Int
}

/// Data-dependent row counts at the graph level.
///
/// Shape inference gives such a layer's tops Caffe's setup shape (Filter: all N rows;
/// DetectionOutput: one row). Each Forward, Caffe resizes them to what the data gave and every
/// layer below reshapes. A graph compiled for concrete shapes cannot follow that by itself, so
/// the compiler asks for the graph *as it is for given counts*: `specializingRows` sets the
/// owned axis of each row owner's tops and re-runs the shape rules of every layer downstream,
/// exactly as Caffe's per-Forward `Reshape` calls would. Layers whose inputs did not change keep
/// their shapes (and so, once lowered, their cached kernels). Example: in
/// `x 4×3×2 → Filter(sel) → fx → InnerProduct → ip`, rows `[3]` gives `fx` 3×3×2 and `ip` 3×N;
/// `x` stays 4×3×2.
extension Graph {
    /// The layers whose tops have data-dependent extents, in net order; a row-count vector has
    /// one entry per such layer, in this order.
    public var rowOwnerNodes: [NodeID] {
        nodes.filter { node in rowOwnership(of: node, outputs: node.outputs.map { values[$0].shape }) != nil }.map(\.id)
    }


    /// Whether and where `node`'s tops have a data-dependent extent, given its inputs' shapes
    /// (this graph's when nil) and its outputs' shapes as shape inference gives them.
    public func rowOwnership(of node: Node, inputs: [TensorShape]? = nil, outputs: [TensorShape]) -> RowOwnership? {
        let inputs = inputs ?? node.inputs.map { values[$0].shape }
        switch node.kind {
        case .filter, .proposal:
            // The setup shape is the most a run can keep: every row for Filter, post_nms_topN
            // boxes for Proposal.
            let rows = outputs.first.map { $0.rank > 0 ? $0[0] : 0 } ?? 0
            return RowOwnership(axis: 0, tops: Array(outputs.indices.filter { outputs[$0].rank > 0 }), capacity: rows)
        case .detectionOutput:
            guard let bound = DetectionOutputBound(node.layer.detectionOutputParam, inputs: inputs) else { return nil }
            return RowOwnership(axis: 2, tops: [0], capacity: bound.rows)
        default:
            return nil
        }
    }

    /// This graph with the owned axis of the tops of row owner `rowOwnerNodes[k]` holding
    /// `rows[k]` and every shape that depends on them re-inferred. Parameter shapes must not
    /// change (Caffe's layers CHECK that too, e.g. InnerProduct's "Input size incompatible with
    /// inner product parameters"): a layer whose parameters would change throws a `Diagnostic`
    /// naming it.
    ///
    /// Counts from index `guessesFrom` on are guesses for layers whose count is not known yet
    /// (a compiled net re-specializing at an earlier owner keeps the later ones' last counts):
    /// each is clamped to the owner's capacity instead of being refused.
    public func specializingRows(_ rows: [Int], guessesFrom: Int = Int.max) throws -> Graph {
        let owners = rowOwnerNodes
        guard rows.count == owners.count else {
            throw Diagnostic("\(rows.count) row count\(rows.count == 1 ? "" : "s") given for \(owners.count) layer\(owners.count == 1 ? "" : "s") with data-dependent rows")
        }
        var result = self
        var changed = Set<ValueID>()
        for node in nodes {
            let owner = owners.firstIndex(of: node.id)
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
                    throw Diagnostic("with data-dependent row counts \(rows), parameter \(k) (\(parameter.role)) would be \(parameter.shape), but it is \(node.parameters[k].shape)",
                                     at: node.location, layer: node.name,
                                     hint: "a layer's parameters cannot depend on how many rows a Filter selects; filter after it, or along a different axis")
                }
                outputs = Array(signature.outputs.prefix(node.outputs.count))
                result.nodes[node.id].flops = signature.flops
            } else if owner != nil {
                outputs = node.outputs.map { values[$0].shape }
            } else {
                continue
            }
            if let k = owner, let ownership = rowOwnership(of: node, inputs: node.inputs.map { result.values[$0].shape }, outputs: outputs) {
                let count = k >= guessesFrom ? min(rows[k], ownership.capacity) : rows[k]
                guard count >= 0, count <= ownership.capacity else {
                    throw Diagnostic("cannot give \(rows[k]) rows: at most \(ownership.capacity) fit", at: node.location, layer: node.name)
                }
                for index in ownership.tops where index < outputs.count && ownership.axis < outputs[index].rank {
                    outputs[index][ownership.axis] = count
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

/// The most rows DetectionOutput can write (`DetectionOutputLayer::Forward_cpu`): per image,
/// every non-background class keeps at most `min(top_k, priors)` boxes after NMS, and
/// `keep_top_k` (when not -1) caps the image's total; with no detection at all Caffe writes one
/// fake row per image, so never fewer than N rows.
public struct DetectionOutputBound: Sendable, Equatable {
    public var images: Int
    public var priors: Int
    public var rows: Int

    /// Nil while the bottoms' shapes are not fully known.
    public init?(_ p: Caffe_DetectionOutputParameter, inputs: [TensorShape]) {
        guard inputs.count >= 3, inputs[0].isFullyKnown, inputs[2].isFullyKnown, inputs[0].rank >= 1, inputs[2].rank == 3,
              let priorValues = inputs[2].count(from: 2) else { return nil }
        images = inputs[0][0]
        priors = priorValues / 4
        let classes = Int(p.numClasses)
        let scored = (0..<classes).filter { $0 != Int(p.backgroundLabelID) }.count
        let perClass = p.nmsParam.hasTopK && p.nmsParam.topK > -1 ? min(Int(p.nmsParam.topK), priors) : priors
        var perImage = scored * perClass
        if p.keepTopK > -1 { perImage = min(perImage, Int(p.keepTopK)) }
        rows = max(images * perImage, images)
    }
}
