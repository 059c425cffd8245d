import CaffeFormat
import Graph
import Runtime


extension TrainingLowering {
    /// Refuses a diff into a loss layer's label (or other non-differentiable) bottom, as Caffe does.
    func refuseBackward(_ node: Node, into bottoms: [Int], _ what: String) throws {
        for j in bottoms where j < node.inputs.count && analysis.writesBottomDiff(node, j) {
            throw Diagnostic("\(node.kind.rawValue) cannot backpropagate to its \(what) input (bottom \(j))", at: node.location, layer: node.name,
                             hint: "set propagate_down: false for that bottom")
        }
    }

    /// Caffe's `num()`: the first axis (1 for a 0-d blob).
    func num(_ value: ValueID) -> Int { shape(value).first ?? 1 }

    // MARK: SigmoidCrossEntropyLoss

    /// SigmoidCrossEntropyLoss backward: `dx = (sigmoid(x) − t) · loss weight / normalizer`, zero at
    /// ignored targets; the sigmoid recomputed as Caffe's `0.5·tanh(0.5x) + 0.5`.
    mutating func lowerSigmoidCrossEntropyBackward(_ node: Node) throws {
        try refuseBackward(node, into: [1], "label")
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (x, t) = (node.inputs[0], node.inputs[1])
        let p = node.layer.lossParam
        let ignore: Int? = p.hasIgnoreLabel ? Int(p.ignoreLabel) : nil
        let mode: Caffe_LossParameter.NormalizationMode = p.hasNormalization ? p.normalization : (p.hasNormalize ? (p.normalize ? .valid : .batchSize) : .batchSize)
        let outer = num(x), inner = count(x) / max(1, num(x)), elements = count(x)
        guard let valid = scratchBuffer(node, "valid count") else { throw unsupported(node, "its forward kept no count") }
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        let signature = "sce.backward n\(elements) o\(outer) ignore\(ignore.map(String.init) ?? "-") \(mode)"
        try base.emitKernel(node, signature, operands: [data(x), data(t), dy, valid, dx], tasks: elements, work: elements) { b in
            let (x, t, topDiff, validCount, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            b.forEachTask { i in
                let scale = topDiff[b.index(0)] / Lowering.normalizer(b, mode, outer: outer, inner: inner, valid: validCount[b.index(0)])
                var difference = 0.5 * b.tanh(0.5 * x[i]) + 0.5 - t[i]
                if let ignore { difference = b.select(b.equal(b.int(t[i]), ignore), b.constant(0), difference) }
                result[i] = difference * scale
            }
        }
    }

    // MARK: EuclideanLoss

    /// EuclideanLoss backward: `dxᵢ = ±(loss weight / N) · (a − b)`, + for the first bottom.
    mutating func lowerEuclideanBackward(_ node: Node) throws {
        guard let difference = scratchBuffer(node, "difference") else { throw unsupported(node, "its forward kept no difference") }
        let dy = try topDiff(node, node.outputs[0])
        for i in 0..<2 where analysis.writesBottomDiff(node, i) {
            let elements = count(node.inputs[i]), n = Float(num(node.inputs[i]))
            let sign: Float = i == 0 ? 1 : -1
            let dx = bottomDiff(node, i)
            try base.emitKernel(node, "euclidean.backward s\(sign.bitPattern) num\(n.bitPattern)", operands: [difference, dy, dx],
                                tasks: elements, work: elements) { b in
                let (d, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { k in result[k] = sign * topDiff[b.index(0)] / n * d[k] }
            }
        }
    }

    // MARK: HingeLoss

    /// HingeLoss backward: `g = s·v`; L1 `sign(g) · w / N`, L2 `g · 2w / N` (w the loss weight).
    mutating func lowerHingeBackward(_ node: Node) throws {
        try refuseBackward(node, into: [1], "label")
        guard analysis.writesBottomDiff(node, 0) else { return }
        let x = node.inputs[0], n = num(x), dim = count(x) / max(1, n)
        let l2 = node.layer.hingeLossParam.norm == .l2
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "hinge.backward n\(n) d\(dim) l2=\(l2)", operands: [data(x), data(node.inputs[1]), dy, dx],
                            tasks: n, work: count(x)) { b in
            let (x, label, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { i in
                let truth = b.int(label[i])
                b.loop(0..<dim) { j in
                    let isTruth = b.equal(j, truth)
                    let v = b.max(b.constant(0), 1 + b.select(isTruth, -x[i * dim + j], x[i * dim + j]))
                    let g = b.select(isTruth, -v, v)
                    let weight = topDiff[b.index(0)]
                    result[i * dim + j] = l2 ? g * (weight * 2 / Float(n)) : (b.float(g > 0) - b.float(g < 0)) * (weight / Float(n))
                }
            }
        }
    }

    // MARK: MultinomialLogisticLoss

    /// MultinomialLogisticLoss backward: `−w / N / max(p[label], 1e-20)` at the label, zero elsewhere.
    mutating func lowerMultinomialLogisticBackward(_ node: Node) throws {
        try refuseBackward(node, into: [1], "label")
        guard analysis.writesBottomDiff(node, 0) else { return }
        let x = node.inputs[0], n = num(x), dim = count(x) / max(1, n)
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "mlogistic.backward n\(n) d\(dim)", operands: [data(x), data(node.inputs[1]), dy, dx], tasks: n, work: count(x)) { b in
            let (p, label, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { i in
                let truth = b.int(label[i])
                let scale = -topDiff[b.index(0)] / Float(n)
                b.loop(0..<dim) { j in
                    let probability = b.max(p[i * dim + j], b.constant(Lowering.logThreshold))
                    result[i * dim + j] = b.select(b.equal(j, truth), scale / probability, b.constant(0))
                }
            }
        }
    }

    // MARK: InfogainLoss

    /// InfogainLoss backward: `dx_l = (prob_l · Σ_m H[label][m] − H[label][l]) · w / normalizer`.
    mutating func lowerInfogainBackward(_ node: Node) throws {
        try refuseBackward(node, into: [1, 2], "label or infogain")
        guard analysis.writesBottomDiff(node, 0) else { return }
        let p = node.layer
        let (outer, channels, inner) = try base.softmaxSplit(node, node.inputs[0])
        guard let prob = scratchBuffer(node, "prob"), let valid = scratchBuffer(node, "valid count") else {
            throw unsupported(node, "its forward kept no probabilities")
        }
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        let ignore: Int? = p.lossParam.hasIgnoreLabel ? Int(p.lossParam.ignoreLabel) : nil
        let mode = p.lossParam.normalization
        let signature = "infogain.backward o\(outer) c\(channels) i\(inner) ignore\(ignore.map(String.init) ?? "-") \(mode)"
        try base.emitKernel(node, signature, operands: [prob, data(node.inputs[1]), data(node.inputs[2]), dy, valid, dx],
                            tasks: outer * inner, work: outer * inner * channels * 2) { b in
            let (prob, label, h, topDiff, validCount, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4), b.operand(5))
            b.forEachTask { position in
                let o = position / inner, i = inner == 1 ? b.index(0) : position % inner
                let value = b.int(label[position])
                let row = b.max(b.index(0), b.min(value, b.index(channels - 1)))
                let scale = topDiff[b.index(0)] / Lowering.normalizer(b, mode, outer: outer, inner: inner, valid: validCount[b.index(0)])
                let rowSum = b.variable(b.constant(0))
                b.loop(0..<channels) { l in rowSum.value = rowSum.value + h[row * channels + l] }
                let ignored = ignore.map { b.equal(value, $0) }
                b.loop(0..<channels) { l in
                    let at = (o * channels + l) * inner + i
                    let gradient = (prob[at] * rowSum.value - h[row * channels + l]) * scale
                    result[at] = ignored.map { b.select($0, b.constant(0), gradient) } ?? gradient
                }
            }
        }
    }

    // MARK: ContrastiveLoss

    /// ContrastiveLoss backward for a and b (± sign): similar pairs `α·(a − b)`; dissimilar pairs
    /// `β·(a − b)` while the margin is violated, β = −α (legacy) or `−α·(margin − d)/(d + 1e-4)`;
    /// α = ±w / N.
    mutating func lowerContrastiveBackward(_ node: Node) throws {
        try refuseBackward(node, into: [2], "similarity")
        let p = node.layer.contrastiveLossParam
        let n = num(node.inputs[0]), channels = count(node.inputs[0]) / max(1, n)
        let (margin, legacy) = (p.margin, p.legacyVersion)
        let dy = try topDiff(node, node.outputs[0])
        for side in 0..<2 where analysis.writesBottomDiff(node, side) {
            let sign: Float = side == 0 ? 1 : -1
            let dx = bottomDiff(node, side)
            try base.emitKernel(node, "contrastive.backward n\(n) c\(channels) m\(margin.bitPattern) legacy=\(legacy) s\(sign.bitPattern)",
                                operands: [data(node.inputs[0]), data(node.inputs[1]), data(node.inputs[2]), dy, dx], tasks: n, work: n * channels * 2) { b in
                let (a, c, similar, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
                b.forEachTask { i in
                    let alpha = sign * topDiff[b.index(0)] / Float(n)
                    let squared = b.variable(b.constant(0))
                    b.loop(0..<channels) { k in
                        let d = a[i * channels + k] - c[i * channels + k]
                        squared.value = squared.value + d * d
                    }
                    let distance = squared.value
                    let (gap, beta): (Scalar, Scalar)
                    if legacy {
                        (gap, beta) = (margin - distance, -alpha)
                    } else {
                        let root = b.sqrt(distance)
                        let g = margin - root
                        (gap, beta) = (g, -alpha * g / (root + 1e-4))
                    }
                    let isSimilar = b.not(b.equal(b.int(similar[i]), 0))
                    let factor = b.select(isSimilar, alpha, b.select(gap > 0, beta, b.constant(0)))
                    b.loop(0..<channels) { k in
                        result[i * channels + k] = factor * (a[i * channels + k] - c[i * channels + k])
                    }
                }
            }
        }
    }
}
