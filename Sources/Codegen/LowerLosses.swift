import CaffeFormat
import Graph
import Runtime

/// Loss layers' and Accuracy's forward passes, one lowering shared by inference (`swiftjit run`,
/// `Net`) and training (`swiftjit train`/`test`), so a loss printed by either is the same kernel's
/// value. Caffe runs these forward in every phase; their backward passes live with the training
/// lowering (`Training/GradientLosses.swift`, `TrainingBackward.swift`) and read the scratch
/// buffers these forwards keep by name ("prob", "valid count", "difference").
extension Lowering {
    /// Caffe's `kLOG_THRESHOLD`: probabilities are clamped to it before taking logs.
    static let logThreshold: Float = 1e-20

    /// A value's buffer as a kernel operand.
    mutating func data(_ value: ValueID) -> Operand { Operand(buffer(value)) }

    /// Caffe's `num()`: the first axis (1 for a 0-d blob).
    func num(_ value: ValueID) -> Int { shape(value).first ?? 1 }

    /// The outer × classes × inner split of `value` around the node's class axis (its typed
    /// attribute: Softmax, SoftmaxWithLoss, Accuracy, InfogainLoss).
    func softmaxSplit(_ node: Node, _ value: ValueID) throws -> (outer: Int, channels: Int, inner: Int) {
        let dims = shape(value), axis = try node.axisAttribute()
        guard axis < dims.count else {
            throw Diagnostic("class axis \(axis) is out of range for \(dims)", at: node.location, layer: node.name)
        }
        return (dims[..<axis].reduce(1, *), dims[axis], dims[(axis + 1)...].reduce(1, *))
    }

    /// Caffe's `get_normalizer` as a kernel expression: FULL, VALID (the count of non-ignored
    /// positions, read from `validCount`), BATCH_SIZE or NONE, at least 1. The legacy
    /// `normalize: false` means BATCH_SIZE, `normalize: true` VALID.
    static func normalization(_ p: Caffe_LossParameter) -> Caffe_LossParameter.NormalizationMode {
        if !p.hasNormalization, p.hasNormalize { return p.normalize ? .valid : .batchSize }
        return p.normalization
    }

    static func normalizer(_ b: KernelBuilder, _ mode: Caffe_LossParameter.NormalizationMode, outer: Int, inner: Int, valid: Scalar) -> Scalar {
        switch mode {
        case .full: return b.constant(Float(max(1, outer * inner)))
        case .valid: return b.max(b.constant(1), valid)
        case .batchSize: return b.constant(Float(max(1, outer)))
        case .none: return b.constant(1)
        }
    }

    /// SegNet's and ENet's class weighting for SoftmaxWithLoss: `class_weighting` when
    /// `weight_by_label_freqs` is set (one weight per class, the forks' `CHECK_EQ` made a
    /// diagnostic), nil otherwise — the forks ignore `class_weighting` without the switch.
    func classWeights(_ node: Node, classes: Int) throws -> [Float]? {
        let p = node.layer.lossParam
        guard p.weightByLabelFreqs else { return nil }
        guard p.classWeighting.count == classes else {
            throw Diagnostic("weight_by_label_freqs needs one class_weighting value per class: \(p.classWeighting.count) given, the scores have \(classes) classes",
                             at: node.location, layer: node.name, hint: "list \(classes) class_weighting values in loss_param (the forks' 'Number of class weight values does not match the number of classes')")
        }
        return p.classWeighting
    }

    /// The class weights' buffer: a definition constant (they come from the prototxt), so inference
    /// and training hold them alike. Backward finds it by name (`node/class weights`).
    mutating func classWeightBuffer(_ node: Node, _ weights: [Float]) -> Operand {
        Operand(definitionConstant(node, "class weights", weights))
    }

    /// SoftmaxWithLoss forward: the softmax into a scratch `prob` buffer kept for backward, then
    /// one sequential task summing `−log(max(prob[label], FLT_MIN))` over non-ignored positions in
    /// Caffe's order and dividing by the normalizer; the valid count is kept for backward. With
    /// SegNet's/ENet's `weight_by_label_freqs` each term is multiplied by `class_weighting[label]`
    /// and the normalizer stays the count (the forks' `loss / count`, not a weighted mean).
    mutating func lowerSoftmaxWithLossForward(_ node: Node) throws {
        guard node.outputs.count == 1 else {
            throw unsupported(node, "a second (prob) top cannot be instantiated in Caffe either", hint: "add a separate Softmax layer for the probabilities")
        }
        let p = node.layer
        let (outer, channels, inner) = try softmaxSplit(node, node.inputs[0])
        guard count(node.inputs[1]) == outer * inner else {
            throw Diagnostic("the label blob has \(count(node.inputs[1])) values; the scores need \(outer * inner) (one per position outside the softmax axis)",
                             at: node.location, layer: node.name, hint: "check the label's shape against the scores'")
        }
        let prob = Operand(scratch(node, "prob", count: outer * channels * inner))
        let valid = Operand(scratch(node, "valid count", count: 1))
        try emitSoftmax(node, input: data(node.inputs[0]), output: prob, outer: outer, channels: channels, inner: inner)
        let ignore: Int? = p.lossParam.hasIgnoreLabel ? Int(p.lossParam.ignoreLabel) : nil
        let mode = Lowering.normalization(p.lossParam)
        let weights = try classWeights(node, classes: channels).map { classWeightBuffer(node, $0) }
        let signature = "softmaxloss.forward o\(outer) c\(channels) i\(inner) ignore\(ignore.map(String.init) ?? "-") \(mode) weighted=\(weights != nil)"
        let operands = [prob, data(node.inputs[1]), data(node.outputs[0]), valid] + (weights.map { [$0] } ?? [])
        try emitKernel(node, signature, operands: operands, tasks: 1, work: outer * inner) { b in
            let (prob, label, top, validCount) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            let classWeight = weights == nil ? nil : b.operand(4)
            b.forEachTask { _ in
                let loss = b.variable(b.constant(0)), counted = b.variable(b.constant(0))
                b.loop(0..<outer) { o in
                    b.loop(0..<inner) { i in
                        let value = b.int(label[o * inner + i])
                        let keep = ignore.map { b.not(b.equal(value, $0)) }
                        let body = {
                            let clamped = b.max(b.index(0), b.min(value, b.index(channels - 1)))
                            let probability = prob[(o * channels + clamped) * inner + i]
                            let term = b.log(b.max(probability, b.constant(.leastNormalMagnitude)))
                            loss.value = loss.value - (classWeight.map { term * $0[clamped] } ?? term)
                            counted.value = counted.value + 1
                        }
                        if let keep { b.when(keep, body) } else { body() }
                    }
                }
                validCount[b.index(0)] = counted.value
                top[b.index(0)] = loss.value / Lowering.normalizer(b, mode, outer: outer, inner: inner, valid: counted.value)
            }
        }
    }

    /// Accuracy (forward only, as in Caffe): a prediction is right when fewer than `top_k` classes
    /// score at least the true class's score (the true class counting itself); ignored labels are
    /// skipped. The optional second top holds each class's accuracy (0 for classes never seen).
    mutating func lowerAccuracy(_ node: Node) throws {
        let p = node.layer.accuracyParam
        let scores = node.inputs[0]
        let (outer, classes, inner) = try softmaxSplit(node, scores)
        guard count(node.inputs[1]) == outer * inner else {
            throw Diagnostic("the label blob has \(count(node.inputs[1])) values; the scores need \(outer * inner)",
                             at: node.location, layer: node.name, hint: "check the label's shape against the scores'")
        }
        let topK = Int(p.topK)
        let ignore: Int? = p.hasIgnoreLabel ? Int(p.ignoreLabel) : nil
        let perClass = node.outputs.count > 1
        var operands = [data(scores), data(node.inputs[1]), data(node.outputs[0])]
        if perClass { operands += [data(node.outputs[1]), Operand(scratch(node, "class counts", count: classes))] }
        let signature = "accuracy o\(outer) c\(classes) i\(inner) k\(topK) ignore\(ignore.map(String.init) ?? "-") perclass=\(perClass)"
        try emitKernel(node, signature, operands: operands, tasks: 1, work: outer * inner * classes) { b in
            let (x, label, top) = (b.operand(0), b.operand(1), b.operand(2))
            let classAccuracy = perClass ? b.operand(3) : nil, seen = perClass ? b.operand(4) : nil
            b.forEachTask { _ in
                if let classAccuracy, let seen {
                    b.loop(0..<classes) { c in classAccuracy[c] = b.constant(0); seen[c] = b.constant(0) }
                }
                let correct = b.variable(b.constant(0)), counted = b.variable(b.constant(0))
                b.loop(0..<outer) { o in
                    b.loop(0..<inner) { i in
                        let value = b.int(label[o * inner + i])
                        let body = {
                            let inRange = value >= 0 && value < classes
                            let clamped = b.max(b.index(0), b.min(value, b.index(classes - 1)))
                            if let seen { b.when(inRange) { seen[clamped] = seen[clamped] + 1 } }
                            let truth = x[(o * classes + clamped) * inner + i]
                            let better = b.variable(b.constant(-1))
                            b.loop(0..<classes) { k in better.value = better.value + b.float(x[(o * classes + k) * inner + i] >= truth) }
                            b.when(better.value < Float(topK)) {
                                correct.value = correct.value + 1
                                if let classAccuracy { b.when(inRange) { classAccuracy[clamped] = classAccuracy[clamped] + 1 } }
                            }
                            counted.value = counted.value + 1
                        }
                        if let ignore { b.when(b.not(b.equal(value, ignore)), body) } else { body() }
                    }
                }
                top[b.index(0)] = b.select(counted.value > 0, correct.value / counted.value, b.constant(0))
                if let classAccuracy, let seen {
                    b.loop(0..<classes) { c in
                        classAccuracy[c] = b.select(seen[c] > 0, classAccuracy[c] / seen[c], b.constant(0))
                    }
                }
            }
        }
    }

    /// SigmoidCrossEntropyLoss forward: Caffe's stable sum
    /// `−Σ [x·(t − (x ≥ 0)) − log(1 + exp(x − 2x·(x ≥ 0)))]` over targets whose integer cast is
    /// not `ignore_label`, divided by the normalizer (default BATCH_SIZE). Float targets (label
    /// smoothing) are used as they are. The valid count is kept for backward.
    mutating func lowerSigmoidCrossEntropyForward(_ node: Node) throws {
        let (x, t) = (node.inputs[0], node.inputs[1])
        guard count(x) == count(t) else {
            throw Diagnostic("SigmoidCrossEntropyLoss inputs must have the same count (\(count(x)) vs \(count(t)))", at: node.location, layer: node.name,
                             hint: "give the scores and targets the same number of values")
        }
        let p = node.layer.lossParam
        let ignore: Int? = p.hasIgnoreLabel ? Int(p.ignoreLabel) : nil
        let mode: Caffe_LossParameter.NormalizationMode = p.hasNormalization ? p.normalization : (p.hasNormalize ? (p.normalize ? .valid : .batchSize) : .batchSize)
        let outer = num(x), inner = count(x) / max(1, num(x)), elements = count(x)
        let valid = Operand(scratch(node, "valid count", count: 1))
        let signature = "sce.forward n\(elements) o\(outer) ignore\(ignore.map(String.init) ?? "-") \(mode)"
        try emitKernel(node, signature, operands: [data(x), data(t), data(node.outputs[0]), valid], tasks: 1, work: elements) { b in
            let (x, t, top, validCount) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { _ in
                let loss = b.variable(b.constant(0)), counted = b.variable(b.constant(0))
                b.loop(0..<elements) { i in
                    let body = {
                        let v = x[i], positive = b.float(v >= 0)
                        let term = v * (t[i] - positive) - b.log(1 + b.exp(v - 2 * v * positive))
                        loss.value = loss.value - term
                        counted.value = counted.value + 1
                    }
                    if let ignore { b.when(b.not(b.equal(b.int(t[i]), ignore)), body) } else { body() }
                }
                validCount[b.index(0)] = counted.value
                top[b.index(0)] = loss.value / Lowering.normalizer(b, mode, outer: outer, inner: inner, valid: counted.value)
            }
        }
    }

    /// EuclideanLoss forward: `Σ (a − b)² / N / 2`, the difference kept for backward.
    mutating func lowerEuclideanForward(_ node: Node) throws {
        let elements = count(node.inputs[0]), n = Float(num(node.inputs[0]))
        guard count(node.inputs[1]) == elements else {
            throw Diagnostic("EuclideanLoss inputs must have the same count (\(elements) vs \(count(node.inputs[1])))", at: node.location, layer: node.name)
        }
        let difference = Operand(scratch(node, "difference", count: elements))
        try emitKernel(node, "euclidean.forward n\(elements) num\(n.bitPattern)",
                            operands: [data(node.inputs[0]), data(node.inputs[1]), difference, data(node.outputs[0])], tasks: 1, work: elements) { b in
            let (a, c, d, top) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { _ in
                let dot = b.variable(b.constant(0))
                b.loop(0..<elements) { i in
                    let v = a[i] - c[i]
                    d[i] = v
                    dot.value = dot.value + v * v
                }
                top[b.index(0)] = dot.value / n / 2
            }
        }
    }

    /// HingeLoss forward: `v = max(0, 1 + s·x)`, s = −1 at each sample's label and +1 elsewhere;
    /// the loss is Σ|v| / N (L1) or Σv² / N (L2).
    mutating func lowerHingeForward(_ node: Node) throws {
        let x = node.inputs[0], n = num(x), dim = count(x) / max(1, n)
        let l2 = node.layer.hingeLossParam.norm == .l2
        try emitKernel(node, "hinge.forward n\(n) d\(dim) l2=\(l2)", operands: [data(x), data(node.inputs[1]), data(node.outputs[0])],
                            tasks: 1, work: count(x)) { b in
            let (x, label, top) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { _ in
                let total = b.variable(b.constant(0))
                b.loop(0..<n) { i in
                    let truth = b.int(label[i])
                    b.loop(0..<dim) { j in
                        let v = b.max(b.constant(0), 1 + b.select(b.equal(j, truth), -x[i * dim + j], x[i * dim + j]))
                        total.value = total.value + (l2 ? v * v : b.abs(v))
                    }
                }
                top[b.index(0)] = total.value / Float(n)
            }
        }
    }

    /// MultinomialLogisticLoss forward: `−Σ log(max(p[label], 1e-20)) / N` over probabilities.
    mutating func lowerMultinomialLogisticForward(_ node: Node) throws {
        let x = node.inputs[0], n = num(x), dim = count(x) / max(1, n)
        try emitKernel(node, "mlogistic.forward n\(n) d\(dim)", operands: [data(x), data(node.inputs[1]), data(node.outputs[0])],
                            tasks: 1, work: n) { b in
            let (p, label, top) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { _ in
                let loss = b.variable(b.constant(0))
                b.loop(0..<n) { i in
                    let truth = b.max(b.index(0), b.min(b.int(label[i]), b.index(dim - 1)))
                    loss.value = loss.value - b.log(b.max(p[i * dim + truth], b.constant(Lowering.logThreshold)))
                }
                top[b.index(0)] = loss.value / Float(n)
            }
        }
    }

    /// InfogainLoss with the matrix H as third bottom: softmax into a kept `prob` buffer, then
    /// `−Σ_l H[label][l]·log(max(prob_l, 1e-20))` over non-ignored positions / normalizer.
    mutating func lowerInfogainForward(_ node: Node) throws {
        guard node.inputs.count == 3 else {
            throw unsupported(node, "the infogain matrix must come as a third bottom (reading infogain_loss_param.source is not supported)",
                              hint: "feed H through an Input layer as the third bottom")
        }
        let p = node.layer
        let (outer, channels, inner) = try softmaxSplit(node, node.inputs[0])
        let prob = Operand(scratch(node, "prob", count: outer * channels * inner))
        let valid = Operand(scratch(node, "valid count", count: 1))
        try emitSoftmax(node, input: data(node.inputs[0]), output: prob, outer: outer, channels: channels, inner: inner)
        let ignore: Int? = p.lossParam.hasIgnoreLabel ? Int(p.lossParam.ignoreLabel) : nil
        let mode = p.lossParam.normalization
        let signature = "infogain.forward o\(outer) c\(channels) i\(inner) ignore\(ignore.map(String.init) ?? "-") \(mode)"
        try emitKernel(node, signature, operands: [prob, data(node.inputs[1]), data(node.inputs[2]), data(node.outputs[0]), valid],
                            tasks: 1, work: outer * inner * channels) { b in
            let (prob, label, h, top, validCount) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            b.forEachTask { _ in
                let loss = b.variable(b.constant(0)), counted = b.variable(b.constant(0))
                b.loop(0..<outer) { o in
                    b.loop(0..<inner) { i in
                        let value = b.int(label[o * inner + i])
                        let body = {
                            let row = b.max(b.index(0), b.min(value, b.index(channels - 1)))
                            b.loop(0..<channels) { l in
                                let probability = b.max(prob[(o * channels + l) * inner + i], b.constant(Lowering.logThreshold))
                                loss.value = loss.value - h[row * channels + l] * b.log(probability)
                            }
                            counted.value = counted.value + 1
                        }
                        if let ignore { b.when(b.not(b.equal(value, ignore)), body) } else { body() }
                    }
                }
                validCount[b.index(0)] = counted.value
                top[b.index(0)] = loss.value / Lowering.normalizer(b, mode, outer: outer, inner: inner, valid: counted.value)
            }
        }
    }

    /// ContrastiveLoss forward over pairs (a, b, similar): `d² = |a − b|²` per sample; similar pairs
    /// add d², dissimilar ones `max(margin − d, 0)²` (or `max(margin − d², 0)` in the legacy
    /// version); the sum is divided by 2N.
    mutating func lowerContrastiveForward(_ node: Node) throws {
        let p = node.layer.contrastiveLossParam
        let n = num(node.inputs[0]), channels = count(node.inputs[0]) / max(1, n)
        let (margin, legacy) = (p.margin, p.legacyVersion)
        try emitKernel(node, "contrastive.forward n\(n) c\(channels) m\(margin.bitPattern) legacy=\(legacy)",
                            operands: [data(node.inputs[0]), data(node.inputs[1]), data(node.inputs[2]), data(node.outputs[0])], tasks: 1, work: n * channels) { b in
            let (a, c, similar, top) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { _ in
                let loss = b.variable(b.constant(0))
                b.loop(0..<n) { i in
                    let squared = b.variable(b.constant(0))
                    b.loop(0..<channels) { k in
                        let d = a[i * channels + k] - c[i * channels + k]
                        squared.value = squared.value + d * d
                    }
                    let distance = squared.value
                    let apart: Scalar
                    if legacy {
                        apart = b.max(margin - distance, b.constant(0))
                    } else {
                        let gap = b.max(margin - b.sqrt(distance), b.constant(0))
                        apart = gap * gap
                    }
                    loss.value = loss.value + b.select(b.equal(b.int(similar[i]), 0), apart, distance)
                }
                top[b.index(0)] = loss.value / Float(n) / 2
            }
        }
    }
}
