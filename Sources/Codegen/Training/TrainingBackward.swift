import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Gives every diff a reader of the net's outputs will read a persistent seed buffer: the
    /// top's loss weight (Caffe's `SetLossWeights` fills the diff with it) or zero, which callers
    /// may overwrite (`TrainingNet.setTopDiffs`). Checks that the graph has Caffe's Split layers.
    mutating func declareSeeds() throws {
        for node in graph.nodes {
            for (k, output) in node.outputs.enumerated() {
                let value = graph.values[output]
                let weight = k < node.lossWeights.count ? node.lossWeights[k] : 0
                if value.consumers.count > 1 || (weight != 0 && !value.consumers.isEmpty) {
                    throw Diagnostic("blob '\(value.name)' is read by several layers (or read and weighted as a loss) without a Split layer",
                                     at: node.location, layer: node.name, hint: "build the graph with GraphBuilder(insertsSplits: true), as Caffe inserts Split layers")
                }
                guard value.consumers.isEmpty, analysis.layerNeedsBackward[node.id] else { continue }
                let id = base.program.addPersistent(value.name + " diff", count: max(1, count(output)),
                                                    values: weight == 0 ? nil : Array(repeating: weight, count: max(1, count(output))))
                seeds[output] = id
                diffOf[output] = id
            }
        }
    }

    /// Lowers `node`'s backward pass when Caffe would run it. Layers Caffe cannot run backward
    /// (Accuracy, ArgMax, …) record a problem that `TrainingNet.run(backward: true)` reports.
    mutating func lowerBackward(_ node: Node) throws {
        guard analysis.layerNeedsBackward[node.id] else { return }
        switch node.kind {
        case .input, .data, .imageData, .hdf5Data, .windowData, .dummyData, .memoryData, .denseImageData, .annotatedData, .silence, .hdf5Output:
            // Data layers have no bottoms; Silence writes zero into its bottoms' diffs.
            for (j, input) in node.inputs.enumerated() where analysis.writesBottomDiff(node, j) {
                try base.emitFill(node, bottomDiff(node, j), count: count(input), value: 0)
            }
        case .split: try lowerSplitBackward(node)
        case .reshape, .flatten:
            // Caffe shares the diff between bottom and top: nothing to compute.
            if hasDiff(node.outputs[0]) || analysis.writesBottomDiff(node, 0) {
                diffOf[node.inputs[0]] = try topDiff(node, node.outputs[0]).buffer
            }
        case .convolution: try lowerConvolutionBackward(node)
        case .deconvolution: try lowerDeconvolutionBackward(node)
        case .innerProduct: try lowerInnerProductBackward(node)
        case .pooling: try lowerPoolingBackward(node)
        case .softmaxWithLoss: try lowerSoftmaxWithLossBackward(node)
        case .eltwise: try lowerEltwiseBackward(node)
        case .dropout where graph.phase == .train: try lowerDropoutBackward(node)
        case .python: try lowerHostBackward(node)
        case .accuracy, .argMax:
            recordMissingBackward(node, "\(node.kind.rawValue) has no backward in Caffe (Caffe leaves it NOT_IMPLEMENTED)")
        default:
            if try lowerExtraBackward(node) { break }
            if let gradient = try unaryGradient(node) {
                try lowerUnaryBackward(node, gradient)
            } else {
                recordMissingBackward(node, "no backward for \(node.kind.rawValue) yet")
            }
        }
    }

    /// Remembers that `node` should run backward but cannot; only an error when a bottom or
    /// parameter actually needs its diff.
    mutating func recordMissingBackward(_ node: Node, _ why: String) {
        guard analysis.hasWork(node) else { return }
        backwardProblems.append(Diagnostic(why, at: node.location, layer: node.name,
                                           hint: "set propagate_down: false on its bottoms, or remove force_backward"))
    }

    /// Split backward: the bottom diff is the sum of the tops' diffs, over the tops whose readers
    /// wrote one (Caffe's other top diffs stay zero).
    mutating func lowerSplitBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let written = node.outputs.filter(hasDiff)
        let elements = count(node.inputs[0])
        if written.isEmpty {
            try base.emitFill(node, bottomDiff(node, 0), count: elements, value: 0)
        } else if written.count == 1 {
            diffOf[node.inputs[0]] = diffOf[written[0]]
        } else {
            let sources = try written.map { try topDiff(node, $0) }
            try emitSum(node, sources, to: bottomDiff(node, 0), count: elements)
        }
    }

    // MARK: SoftmaxWithLoss

    /// SoftmaxWithLoss backward: `dx = (prob − onehot(label)) · (loss weight / normalizer)`, zero
    /// at ignored positions; the loss weight is the top's diff (its seed). With SegNet's/ENet's
    /// `weight_by_label_freqs` every class's diff at a position is also multiplied by
    /// `class_weighting[label]` (the forks' `Backward_cpu`), the normalizer unchanged.
    mutating func lowerSoftmaxWithLossBackward(_ node: Node) throws {
        if analysis.writesBottomDiff(node, 1) {
            throw Diagnostic("SoftmaxWithLoss cannot backpropagate to its label input", at: node.location, layer: node.name,
                             hint: "set propagate_down: true propagate_down: false")
        }
        guard analysis.writesBottomDiff(node, 0) else { return }
        let p = node.layer
        let (outer, channels, inner) = try base.softmaxSplit(node, node.inputs[0])
        guard let prob = scratchBuffer(node, "prob"), let valid = scratchBuffer(node, "valid count") else {
            throw unsupported(node, "its forward kept no probabilities")
        }
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        let ignore: Int? = p.lossParam.hasIgnoreLabel ? Int(p.lossParam.ignoreLabel) : nil
        let mode = Lowering.normalization(p.lossParam)
        var weights: Operand?
        if try base.classWeights(node, classes: channels) != nil {
            guard let kept = base.program.buffers.lastIndex(where: { $0.name == "\(node.name)/class weights" }) else {
                throw unsupported(node, "its forward kept no class weights")
            }
            weights = Operand(kept)
        }
        let signature = "softmaxloss.backward o\(outer) c\(channels) i\(inner) ignore\(ignore.map(String.init) ?? "-") \(mode) weighted=\(weights != nil)"
        try base.emitKernel(node, signature, operands: [prob, data(node.inputs[1]), dy, valid, dx] + (weights.map { [$0] } ?? []),
                            tasks: outer * inner, work: outer * inner * channels) { b in
            let (prob, label, topDiff, validCount, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            let classWeight = weights == nil ? nil : b.operand(5)
            b.forEachTask { position in
                let o = position / inner, i = inner == 1 ? b.index(0) : position % inner
                let start = o * (channels * inner) + i
                let value = b.int(label[position])
                var scale = topDiff[b.index(0)] / Lowering.normalizer(b, mode, outer: outer, inner: inner, valid: validCount[b.index(0)])
                if let classWeight { scale = scale * classWeight[b.max(b.index(0), b.min(value, b.index(channels - 1)))] }
                let compute = {
                    b.loop(0..<channels) { c in
                        let at = start + c * inner
                        result[at] = b.select(b.equal(c, value), prob[at] - 1, prob[at]) * scale
                    }
                }
                if let ignore {
                    b.when(b.equal(value, ignore), {
                        b.loop(0..<channels) { c in result[start + c * inner] = b.constant(0) }
                    }, otherwise: compute)
                } else {
                    compute()
                }
            }
        }
    }

    /// The operand of scratch buffer `what` the forward of `node` declared (`node/what`).
    func scratchBuffer(_ node: Node, _ what: String) -> Operand? {
        let name = "\(node.name)/\(what)"
        return base.program.buffers.lastIndex(where: { $0.name == name && $0.isActivation }).map { Operand($0) }
    }
}
