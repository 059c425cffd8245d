import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    // MARK: PReLU

    /// PReLU's split: images × channels × inner, and how many channels share one slope.
    private func preluSplit(_ node: Node) -> (n: Int, c: Int, inner: Int, shared: Bool) {
        let dims = shape(node.inputs[0])
        let n = dims.first ?? 1, c = dims.count > 1 ? dims[1] : 1
        return (n, c, count(node.inputs[0]) / max(1, n * c), node.layer.preluParam.channelShared)
    }

    /// PReLU forward: `max(x, 0) + slope[c] · min(x, 0)`.
    mutating func lowerPReLUForward(_ node: Node) throws {
        let (n, c, inner, shared) = preluSplit(node)
        let output = Operand(base.elementwiseOutput(node))
        try base.emitPReLU(node, input: data(node.inputs[0]), slopes: parameter(node, 0).data, output: output,
                           outer: n, channels: c, inner: inner, shared: shared)
    }

    /// PReLU backward: `slope_diff[c] += Σ dy·x·(x ≤ 0)` in element order (one sequential task when
    /// the slope is shared), `dx = dy · ((x > 0) + slope·(x ≤ 0))`.
    mutating func lowerPReLUBackward(_ node: Node) throws {
        let (n, c, inner, shared) = preluSplit(node)
        let x = data(node.inputs[0]), slope = parameter(node, 0)
        let dy = try topDiff(node, node.outputs[0])
        if propagatesToParameter(node, 0) {
            let groups = shared ? 1 : c, perGroup = shared ? c : 1
            try base.emitKernel(node, "prelu.slope.grad n\(n) c\(c) i\(inner) shared=\(shared)", operands: [dy, x, slope.diff],
                                tasks: groups, work: count(node.inputs[0])) { b in
                let (topDiff, x, slopeDiff) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { group in
                    let total = b.variable(slopeDiff[group])
                    b.loop(0..<n, unrolled: false) { item in
                        b.loop(0..<perGroup) { k in
                            let start = (item * c + group * perGroup + k) * inner
                            b.loop(0..<inner) { i in
                                let v = x[start + i]
                                total.value = total.value + topDiff[start + i] * v * b.float(v <= 0)
                            }
                        }
                    }
                    slopeDiff[group] = total.value
                }
            }
        }
        if analysis.writesBottomDiff(node, 0) {
            let dx = bottomDiff(node, 0)
            try base.emitKernel(node, "prelu.grad c\(c) i\(inner) shared=\(shared)", operands: [dy, x, slope.data, dx],
                                tasks: n * c, work: count(node.inputs[0])) { b in
                let (topDiff, x, s, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
                b.forEachTask { row in
                    let value = s[shared ? b.index(0) : row % c]
                    b.loop(0..<inner) { i in
                        let v = x[row * inner + i]
                        result[row * inner + i] = topDiff[row * inner + i] * (b.float(v > 0) + value * b.float(v <= 0))
                    }
                }
            }
        }
    }

    // MARK: MVN

    /// MVN's rows (N, or N·C unless `across_channels`) and their length.
    private func mvnSplit(_ node: Node) -> (rows: Int, dim: Int) {
        let dims = shape(node.inputs[0])
        let n = dims.first ?? 1, c = dims.count > 1 ? dims[1] : 1
        let rows = node.layer.mvnParam.acrossChannels ? n : n * c
        return (rows, count(node.inputs[0]) / max(1, rows))
    }

    /// MVN forward per row: `y = x − mean`, then with `normalize_variance`
    /// `y /= sqrt(mean(y²)) + eps` (Caffe adds eps after the square root); the divisor is kept.
    mutating func lowerMVNForward(_ node: Node) throws {
        let p = node.layer.mvnParam
        let (rows, dim) = mvnSplit(node)
        let deviation = Operand(base.scratch(node, "deviation", count: rows))
        let output = Operand(base.elementwiseOutput(node))
        let normalize = p.normalizeVariance, eps = p.eps, inverse = Float(1) / Float(dim)
        try base.emitKernel(node, "mvn d\(dim) normalize=\(normalize) eps\(eps.bitPattern)", operands: [data(node.inputs[0]), output, deviation],
                            tasks: rows, work: count(node.inputs[0]) * 3) { b in
            let (x, y, std) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { row in
                let sum = b.variable(b.constant(0))
                b.loop(0..<dim) { i in sum.value = sum.value + x[row * dim + i] }
                let mean = sum.value * inverse
                b.loop(0..<dim) { i in y[row * dim + i] = x[row * dim + i] + (-mean) }
                if normalize {
                    let squares = b.variable(b.constant(0))
                    b.loop(0..<dim) { i in squares.value = squares.value + b.pow(y[row * dim + i], b.constant(2)) }
                    let divisor = b.pow(squares.value * inverse, b.constant(0.5)) + eps
                    std[row] = divisor
                    b.loop(0..<dim) { i in y[row * dim + i] = y[row * dim + i] / divisor }
                }
            }
        }
    }

    /// MVN backward per row: with `normalize_variance`
    /// `dx = (dy − (y·Σ(y·dy) + Σdy)/dim) / divisor`, else `dx = dy − mean(dy)`.
    mutating func lowerMVNBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (rows, dim) = mvnSplit(node)
        let normalize = node.layer.mvnParam.normalizeVariance, inverse = Float(1) / Float(dim)
        guard let deviation = scratchBuffer(node, "deviation") else { throw unsupported(node, "its forward kept no deviation") }
        let dy = try topDiff(node, node.outputs[0])
        let y = data(node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "mvn.grad d\(dim) normalize=\(normalize)", operands: [dy, y, deviation, dx], tasks: rows, work: count(node.inputs[0]) * 3) { b in
            let (topDiff, y, std, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { row in
                let plain = b.variable(b.constant(0))
                b.loop(0..<dim) { i in plain.value = plain.value + topDiff[row * dim + i] }
                if normalize {
                    let product = b.variable(b.constant(0))
                    b.loop(0..<dim) { i in product.value = product.value + y[row * dim + i] * topDiff[row * dim + i] }
                    let (p, s, divisor) = (product.value, plain.value, std[row])
                    b.loop(0..<dim) { i in
                        let at = row * dim + i
                        result[at] = ((y[at] * p + s) * (-inverse) + topDiff[at]) / divisor
                    }
                } else {
                    let mean = plain.value * inverse
                    b.loop(0..<dim) { i in result[row * dim + i] = topDiff[row * dim + i] + (-mean) }
                }
            }
        }
    }

    // MARK: Embed

    /// Embed forward: row `index` of the weights per input value, plus the bias.
    mutating func lowerEmbedForward(_ node: Node) throws {
        let p = node.layer.embedParam
        let m = count(node.inputs[0]), n = Int(p.numOutput), k = Int(p.inputDim)
        try base.emitEmbed(node, indices: data(node.inputs[0]), weights: parameter(node, 0).data, output: data(node.outputs[0]),
                           bias: p.biasTerm ? parameter(node, 1).data : nil, count: m, inputDim: k, outputs: n)
    }

    /// Embed backward: `W[index] += dy` per input in order (one sequential task), `b += Σ dy`.
    mutating func lowerEmbedBackward(_ node: Node) throws {
        try refuseBackward(node, into: [0], "index")
        let p = node.layer.embedParam
        let m = count(node.inputs[0]), n = Int(p.numOutput), k = Int(p.inputDim)
        let dy = try topDiff(node, node.outputs[0])
        if propagatesToParameter(node, 0) {
            try base.emitKernel(node, "embed.grad n\(n) k\(k) m\(m)", operands: [data(node.inputs[0]), dy, parameter(node, 0).diff], tasks: 1, work: m * n) { b in
                let (index, topDiff, weightDiff) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { _ in
                    b.loop(0..<m) { row in
                        let word = b.max(b.index(0), b.min(b.int(index[row]), b.index(k - 1)))
                        b.loop(0..<n) { j in weightDiff[word * n + j] = weightDiff[word * n + j] + topDiff[row * n + j] }
                    }
                }
            }
        }
        if p.biasTerm, propagatesToParameter(node, 1) {
            try emitBiasGradient(node, topDiff: dy, biasDiff: parameter(node, 1).diff, outer: m, channels: n, inner: 1)
        }
    }

    // MARK: Reduction

    private func reductionSplit(_ node: Node) throws -> (rows: Int, dim: Int, coefficient: Float) {
        let p = node.layer.reductionParam
        let dims = shape(node.inputs[0])
        guard let axis = graph.values[node.inputs[0]].shape.canonicalAxis(Int(p.axis)) else {
            throw Diagnostic("reduction axis \(p.axis) is out of range for \(dims)", at: node.location, layer: node.name)
        }
        let dim = dims[axis...].reduce(1, *)
        return (dims[..<axis].reduce(1, *), dim, p.operation == .mean ? p.coeff / Float(dim) : p.coeff)
    }

    /// Reduction forward per row over the trailing axes: SUM/MEAN, ASUM, SUMSQ, times `coeff`.
    mutating func lowerReductionForward(_ node: Node) throws {
        let (rows, dim, coefficient) = try reductionSplit(node)
        let operation = node.layer.reductionParam.operation
        try base.emitKernel(node, "reduction \(operation) d\(dim) c\(coefficient.bitPattern)", operands: [data(node.inputs[0]), data(node.outputs[0])],
                            tasks: rows, work: rows * dim) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { row in
                let total = b.variable(b.constant(0))
                b.loop(0..<dim) { i in
                    let v = x[row * dim + i]
                    switch operation {
                    case .sum, .mean: total.value = total.value + v
                    case .asum: total.value = total.value + b.abs(v)
                    case .sumsq: total.value = total.value + v * v
                    }
                }
                y[row] = coefficient == 1 ? total.value : total.value * coefficient
            }
        }
    }

    /// Reduction backward: `c = dy·coeff` per row; SUM/MEAN `c`, ASUM `sign(x)·c`, SUMSQ `2c·x`.
    mutating func lowerReductionBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (rows, dim, coefficient) = try reductionSplit(node)
        let operation = node.layer.reductionParam.operation
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "reduction.grad \(operation) d\(dim) c\(coefficient.bitPattern)", operands: [data(node.inputs[0]), dy, dx],
                            tasks: rows, work: rows * dim) { b in
            let (x, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { row in
                let c = topDiff[row] * coefficient
                b.loop(0..<dim) { i in
                    let v = x[row * dim + i]
                    switch operation {
                    case .sum, .mean: result[row * dim + i] = c
                    case .asum: result[row * dim + i] = (b.float(v > 0) - b.float(v < 0)) * c
                    case .sumsq: result[row * dim + i] = v * (2 * c)
                    }
                }
            }
        }
    }

    // MARK: Parameter and BatchReindex

    /// Parameter forward: the top is the parameter blob (copied into the top's buffer).
    mutating func lowerParameterForward(_ node: Node) throws {
        try emitCopy(node, from: parameter(node, 0).data, to: data(node.outputs[0]), count: count(node.outputs[0]))
    }

    /// Parameter backward: Caffe's top shares its diff with the parameter, so the reader's diff is
    /// the parameter's (written, not accumulated).
    mutating func lowerParameterBackward(_ node: Node) throws {
        guard propagatesToParameter(node, 0) else { return }
        try emitCopy(node, from: topDiff(node, node.outputs[0]), to: parameter(node, 0).diff, count: count(node.outputs[0]))
    }

    /// BatchReindex forward: top row i is bottom row `permutation[i]`.
    mutating func lowerBatchReindexForward(_ node: Node) throws {
        let rows = count(node.inputs[1]), inner = count(node.inputs[0]) / max(1, shape(node.inputs[0]).first ?? 1)
        let limit = shape(node.inputs[0]).first ?? 1
        try base.emitKernel(node, "reindex n\(inner) limit\(limit)", operands: [data(node.inputs[0]), data(node.inputs[1]), data(node.outputs[0])],
                            tasks: rows, work: rows * inner) { b in
            let (x, permutation, y) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { row in
                let source = b.max(b.index(0), b.min(b.int(permutation[row]), b.index(limit - 1)))
                b.loop(0..<inner) { i in y[row * inner + i] = x[source * inner + i] }
            }
        }
    }

    /// BatchReindex backward: each bottom row sums the diffs of the top rows that copied it, in
    /// top order.
    mutating func lowerBatchReindexBackward(_ node: Node) throws {
        try refuseBackward(node, into: [1], "index")
        guard analysis.writesBottomDiff(node, 0) else { return }
        let rows = count(node.inputs[1]), limit = shape(node.inputs[0]).first ?? 1
        let inner = count(node.inputs[0]) / max(1, limit)
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "reindex.grad n\(inner) rows\(rows)", operands: [data(node.inputs[1]), dy, dx], tasks: limit, work: limit * rows * inner) { b in
            let (permutation, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { target in
                b.loop(0..<inner) { i in result[target * inner + i] = b.constant(0) }
                b.loop(0..<rows) { row in
                    b.when(b.equal(b.int(permutation[row]), target)) {
                        b.loop(0..<inner) { i in result[target * inner + i] = result[target * inner + i] + topDiff[row * inner + i] }
                    }
                }
            }
        }
    }

    // MARK: ArgMax

    /// ArgMax (forward only): per position, the `top_k` largest (value, index) pairs in descending
    /// order (ties to the larger index, as `std::greater` on pairs), written as indices, values
    /// (`out_max_val` with an axis), or indices then values (`out_max_val` without one).
    mutating func lowerArgMax(_ node: Node) throws {
        let p = node.layer.argmaxParam
        let dims = shape(node.inputs[0])
        let hasAxis = p.hasAxis
        var dim = dims.dropFirst().reduce(1, *), stride = 1
        if hasAxis {
            guard let axis = graph.values[node.inputs[0]].shape.canonicalAxis(Int(p.axis)), axis < dims.count else {
                throw Diagnostic("argmax axis \(p.axis) is out of range for \(dims)", at: node.location, layer: node.name)
            }
            dim = dims[axis]
            stride = dims[(axis + 1)...].reduce(1, *)
        }
        let k = Int(p.topK), values = p.outMaxVal
        guard k >= 1, k <= dim else { throw Diagnostic("top_k \(k) must be between 1 and \(dim)", at: node.location, layer: node.name) }
        let positions = count(node.inputs[0]) / max(1, dim)
        try base.emitKernel(node, "argmax d\(dim) s\(stride) k\(k) values=\(values) axis=\(hasAxis)", operands: [data(node.inputs[0]), data(node.outputs[0])],
                            tasks: positions, work: positions * dim * k) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { i in
                let start = (i / stride) * (dim * stride) + i % stride
                let previousValue = b.variable(b.constant(.infinity)), previousIndex = b.variable(b.constant(Float(dim)))
                for j in 0..<k {
                    let bestValue = b.variable(b.constant(-.infinity)), bestIndex = b.variable(b.constant(-1))
                    b.loop(0..<dim) { c in
                        let v = x[start + c * stride], index = b.float(c)
                        // (v, c) below the previous pick and above the best so far, lexicographically.
                        let belowPrevious = v < previousValue.value || (b.equal(v, previousValue.value) && index < previousIndex.value)
                        let aboveBest = v > bestValue.value || (b.equal(v, bestValue.value) && index > bestIndex.value)
                        let take = belowPrevious && aboveBest
                        bestValue.value = b.select(take, v, bestValue.value)
                        bestIndex.value = b.select(take, index, bestIndex.value)
                    }
                    if hasAxis {
                        y[(i / stride * k + j) * stride + i % stride] = values ? bestValue.value : bestIndex.value
                    } else if values {
                        y[i * (2 * k) + j] = bestIndex.value
                        y[i * (2 * k) + k + j] = bestValue.value
                    } else {
                        y[i * k + j] = bestIndex.value
                    }
                    previousValue.value = bestValue.value
                    previousIndex.value = bestIndex.value
                }
            }
        }
    }
}
