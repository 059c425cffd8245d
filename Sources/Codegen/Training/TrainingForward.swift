import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Lowers `node`'s forward pass: the inference lowering where its semantics are the same in
    /// training (its parameter constants rebound to the persistent parameter buffers), otherwise
    /// a training lowering (batch statistics, dropout masks, losses, metrics, structure ops).
    mutating func lowerForward(_ node: Node) throws {
        let firstStep = base.program.steps.count, firstBuffer = base.program.buffers.count
        switch node.kind {
        case .input, .data, .imageData, .hdf5Data, .windowData, .dummyData, .memoryData: try lowerFeed(node)
        case .convolution: try base.lowerConvolution(node)
        case .innerProduct: try base.lowerInnerProduct(node)
        case .pooling: try base.lowerPooling(node)
        case .lrn: try base.lowerLRN(node)
        case .scale: try base.lowerScale(node)
        case .bias: try base.lowerBias(node)
        case .softmax: try base.lowerSoftmax(node)
        case .concat: try base.lowerConcat(node)
        case .eltwise: try lowerEltwiseForward(node)
        case .reshape, .flatten, .split: base.lowerView(node)
        case .silence, .hdf5Output: break
        case .batchNorm: try lowerBatchNormForward(node)
        case .dropout where graph.phase == .train: try lowerDropoutForward(node)
        case .softmaxWithLoss: try lowerSoftmaxWithLossForward(node)
        case .accuracy: try lowerAccuracy(node)
        case .python: try lowerHostForward(node)
        default:
            if try lowerExtraForward(node) {
                break
            } else if let function = try base.unaryFunction(node) {
                try base.lowerUnary(node, function)
            } else {
                throw unsupported(node, "no training lowering for this layer type yet")
            }
        }
        try bindParameterConstants(node, firstBuffer: firstBuffer, firstStep: firstStep)
        forwardSteps.append(firstStep..<base.program.steps.count)
    }

    /// Data-source tops become buffers the caller fills before each run (bound as program inputs so
    /// they are live from the first step). Constant `DummyData` fillers give default values.
    mutating func lowerFeed(_ node: Node) throws {
        let fillers = node.layer.dummyDataParam.dataFiller
        for (index, output) in node.outputs.enumerated() {
            let id = base.buffer(output)
            base.program.inputs.append(BlobBinding(name: graph.values[output].name, shape: shape(output), buffer: id))
            feeds.append(output)
            if node.kind == .dummyData {
                let filler = fillers.isEmpty ? Caffe_FillerParameter() : fillers[fillers.count == 1 ? 0 : min(index, fillers.count - 1)]
                if filler.type == "constant" {
                    feedDefaults[output] = Array(repeating: filler.value, count: count(output))
                }
            }
        }
    }

    /// Eltwise forward. PROD with `stable_prod_grad: false` and MAX need nothing extra: backward
    /// recomputes the arg-max and reads the product from the top.
    mutating func lowerEltwiseForward(_ node: Node) throws {
        try base.lowerEltwise(node)
    }

    // MARK: SoftmaxWithLoss

    /// The outer × classes × inner split of a softmax over `axis` of `value`.
    func softmaxSplit(_ node: Node, _ value: ValueID, axis rawAxis: Int) throws -> (outer: Int, channels: Int, inner: Int) {
        let dims = shape(value)
        guard let axis = graph.values[value].shape.canonicalAxis(rawAxis), axis < dims.count else {
            throw Diagnostic("softmax axis \(rawAxis) is out of range for \(dims)", at: node.location, layer: node.name)
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

    /// SoftmaxWithLoss forward: the softmax into a scratch `prob` buffer kept for backward, then
    /// one sequential task summing `−log(max(prob[label], FLT_MIN))` over non-ignored positions in
    /// Caffe's order and dividing by the normalizer; the valid count is kept for backward.
    mutating func lowerSoftmaxWithLossForward(_ node: Node) throws {
        guard node.outputs.count == 1 else {
            throw unsupported(node, "a second (prob) top cannot be instantiated in Caffe either", hint: "add a separate Softmax layer for the probabilities")
        }
        let p = node.layer
        let (outer, channels, inner) = try softmaxSplit(node, node.inputs[0], axis: Int(p.softmaxParam.axis))
        guard count(node.inputs[1]) == outer * inner else {
            throw Diagnostic("the label blob has \(count(node.inputs[1])) values; the scores need \(outer * inner) (one per position outside the softmax axis)",
                             at: node.location, layer: node.name, hint: "check the label's shape against the scores'")
        }
        let prob = Operand(base.scratch(node, "prob", count: outer * channels * inner))
        let valid = Operand(base.scratch(node, "valid count", count: 1))
        try base.emitSoftmax(node, input: data(node.inputs[0]), output: prob, outer: outer, channels: channels, inner: inner)
        let ignore: Int? = p.lossParam.hasIgnoreLabel ? Int(p.lossParam.ignoreLabel) : nil
        let mode = TrainingLowering.normalization(p.lossParam)
        let signature = "softmaxloss.forward o\(outer) c\(channels) i\(inner) ignore\(ignore.map(String.init) ?? "-") \(mode)"
        try base.emitKernel(node, signature, operands: [prob, data(node.inputs[1]), data(node.outputs[0]), valid], tasks: 1, work: outer * inner) { b in
            let (prob, label, top, validCount) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { _ in
                let loss = b.variable(b.constant(0)), counted = b.variable(b.constant(0))
                b.loop(0..<outer) { o in
                    b.loop(0..<inner) { i in
                        let value = b.int(label[o * inner + i])
                        let keep = ignore.map { b.not(b.equal(value, $0)) }
                        let body = {
                            let clamped = b.max(b.index(0), b.min(value, b.index(channels - 1)))
                            let probability = prob[(o * channels + clamped) * inner + i]
                            loss.value = loss.value - b.log(b.max(probability, b.constant(.leastNormalMagnitude)))
                            counted.value = counted.value + 1
                        }
                        if let keep { b.when(keep, body) } else { body() }
                    }
                }
                validCount[b.index(0)] = counted.value
                top[b.index(0)] = loss.value / TrainingLowering.normalizer(b, mode, outer: outer, inner: inner, valid: counted.value)
            }
        }
    }

    // MARK: Accuracy

    /// Accuracy (forward only, as in Caffe): a prediction is right when fewer than `top_k` classes
    /// score at least the true class's score (the true class counting itself); ignored labels are
    /// skipped. The optional second top holds each class's accuracy (0 for classes never seen).
    mutating func lowerAccuracy(_ node: Node) throws {
        let p = node.layer.accuracyParam
        let scores = node.inputs[0], dims = shape(scores)
        guard let axis = graph.values[scores].shape.canonicalAxis(Int(p.axis)), axis < dims.count else {
            throw Diagnostic("accuracy axis \(p.axis) is out of range for \(dims)", at: node.location, layer: node.name)
        }
        let outer = dims[..<axis].reduce(1, *), classes = dims[axis], inner = dims[(axis + 1)...].reduce(1, *)
        guard count(node.inputs[1]) == outer * inner else {
            throw Diagnostic("the label blob has \(count(node.inputs[1])) values; the scores need \(outer * inner)",
                             at: node.location, layer: node.name, hint: "check the label's shape against the scores'")
        }
        let topK = Int(p.topK)
        let ignore: Int? = p.hasIgnoreLabel ? Int(p.ignoreLabel) : nil
        let perClass = node.outputs.count > 1
        var operands = [data(scores), data(node.inputs[1]), data(node.outputs[0])]
        if perClass { operands += [data(node.outputs[1]), Operand(base.scratch(node, "class counts", count: classes))] }
        let signature = "accuracy o\(outer) c\(classes) i\(inner) k\(topK) ignore\(ignore.map(String.init) ?? "-") perclass=\(perClass)"
        try base.emitKernel(node, signature, operands: operands, tasks: 1, work: outer * inner * classes) { b in
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
}
