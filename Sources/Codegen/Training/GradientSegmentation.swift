import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Upsample backward (SegNet's `UpsampleLayer::Backward_cpu`): each value's diff is the top
    /// diff at the position its mask names (0 for a position outside the plane, where Caffe
    /// aborts). The mask takes no gradient (Caffe never writes its diff).
    mutating func lowerUpsampleBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dims = shape(node.inputs[0]), outDims = shape(node.outputs[0])
        let planes = dims[0] * dims[1], inner = dims[2] * dims[3], outer = outDims[2] * outDims[3]
        let dy = try topDiff(node, node.outputs[0])
        let mask = data(node.inputs[1])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "upsample.grad i\(inner) o\(outer)", operands: [dy, mask, dx], tasks: planes, work: planes * inner) { b in
            let (topDiff, mask, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                b.loop(0..<inner) { i in
                    let index = b.int(mask[plane * inner + i])
                    let inside = index >= 0 && index < outer
                    let clamped = b.max(b.index(0), b.min(index, b.index(outer - 1)))
                    result[plane * inner + i] = b.select(inside, topDiff[plane * outer + clamped], b.constant(0))
                }
            }
        }
    }
}

extension TrainingLowering {
    // MARK: BN (SegNet, ENet)

    /// BN backward (`BNLayer::Backward_cpu`), per channel over N×inner with x̂ = (x − mean)/std
    /// from the forward's `statistics`:
    /// - LEARN: scale diff += Σ dy·x̂, shift diff += Σ dy, and
    ///   `dx = scale/std · (dy − (x̂·Σ dy·x̂ + Σ dy)/m)` (m = N·inner), the batch statistics' own
    ///   gradient;
    /// - INFERENCE: scale diff += Σ dy·x, shift diff += Σ dy, `dx = scale · dy`.
    /// The fork overwrites its parameter diffs; they accumulate here, as every SwiftJIT parameter
    /// does (the same with Caffe's diffs cleared before each backward, which its solver does).
    mutating func lowerBNBackward(_ node: Node) throws {
        let input = node.inputs[0], dims = shape(input)
        let n = dims[0], c = dims[1], inner = count(input) / max(1, n * c), elements = count(input)
        let learn = node.layer.bnParam.bnMode == .learn
        let dy = try topDiff(node, node.outputs[0])
        let x = data(input)
        let (scale, shift) = (parameter(node, 0), parameter(node, 1))
        let statistics: Operand
        if learn {
            guard let kept = scratchBuffer(node, "statistics") else { throw unsupported(node, "its forward kept no statistics") }
            statistics = kept
        } else {
            statistics = x  // unused: INFERENCE reads x itself
        }
        let sums = Operand(base.scratch(node, "gradient sums", count: 2 * c))
        try base.emitKernel(node, "bn.fork.sums n\(n) c\(c) i\(inner) learn=\(learn)", operands: [dy, x, statistics, sums], tasks: c, work: 2 * elements) { b in
            let (topDiff, x, stats, sums) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            b.forEachTask { ch in
                let (mean, deviation) = learn ? (stats[ch], stats[ch + c]) : (b.constant(0), b.constant(1))
                let product = b.variable(b.constant(0)), plain = b.variable(b.constant(0))
                b.loop(0..<n, unrolled: false) { item in
                    let p = b.variable(b.constant(0)), s = b.variable(b.constant(0))
                    b.loop(0..<inner) { i in
                        let at = (item * c + ch) * inner + i
                        p.value = p.value + topDiff[at] * ((x[at] - mean) / deviation)
                        s.value = s.value + topDiff[at]
                    }
                    product.value = product.value + p.value
                    plain.value = plain.value + s.value
                }
                sums[ch] = product.value
                sums[ch + c] = plain.value
            }
        }
        for (k, slot) in [(0, scale.diff), (1, shift.diff)] where propagatesToParameter(node, k) {
            try base.emitKernel(node, "bn.fork.parameter.grad c\(c) k\(k)", operands: [sums, slot], tasks: c, work: c) { b in
                let (sums, diff) = (b.operand(0), b.operand(1))
                b.forEachTask { ch in diff[ch] = diff[ch] + sums[ch + k * c] }
            }
        }
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dx = bottomDiff(node, 0)
        let inverse = 1 / Float(n * inner)
        try base.emitKernel(node, "bn.fork.grad c\(c) i\(inner) learn=\(learn)", operands: [dy, x, statistics, sums, scale.data, dx],
                            tasks: n * c, work: elements) { b in
            let (topDiff, x, stats, sums, scale, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4), b.operand(5))
            b.forEachTask { row in
                let ch = c == 1 ? b.index(0) : row % c
                let s = scale[ch]
                guard learn else {
                    b.loop(0..<inner) { i in result[row * inner + i] = topDiff[row * inner + i] * s }
                    return
                }
                let (mean, deviation, product, plain) = (stats[ch], stats[ch + c], sums[ch], sums[ch + c])
                let factor = s / deviation
                b.loop(0..<inner) { i in
                    let at = row * inner + i
                    let normalized = (x[at] - mean) / deviation
                    result[at] = factor * (topDiff[at] - (normalized * product + plain) * inverse)
                }
            }
        }
    }

    // MARK: Spatial dropout (ENet)

    /// ENet's spatial dropout in training (`SpatialDropoutSettings`): with channel masks, one
    /// draw per (image, channel) row of N×C×inner keeps the row with probability 1 − p, and
    /// `y = x · mask · 1/(1 − p)`; without, `y = x · 1/(1 − p)`. The mask is hashed from the run's
    /// random key, the layer and the row (as Dropout's), so backward recomputes the same one.
    mutating func lowerSpatialDropoutForward(_ node: Node) throws {
        try emitSpatialDropout(node, input: data(node.inputs[0]), output: Operand(base.elementwiseOutput(node)), direction: "forward")
    }

    /// Spatial dropout backward: `dx = dy · mask · 1/(1 − p)` with the forward's mask (or
    /// `dy · 1/(1 − p)` without masks).
    mutating func lowerSpatialDropoutBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dy = try topDiff(node, node.outputs[0])
        try emitSpatialDropout(node, input: dy, output: bottomDiff(node, 0, reusing: dy), direction: "backward")
    }

    private mutating func emitSpatialDropout(_ node: Node, input: Operand, output: Operand, direction: String) throws {
        let settings = try SpatialDropoutSettings(node.layer, phase: graph.phase)
        let dims = shape(node.inputs[0])
        let rows = dims.count > 1 ? dims[0] * dims[1] : max(1, dims.first ?? 1)
        let inner = count(node.inputs[0]) / max(1, rows)
        let (ratio, scale) = (settings.ratio, settings.scale)
        guard settings.dropsChannels else {
            try base.emitScaled(node, input: input, output: output, count: count(node.inputs[0]), factor: scale)
            return
        }
        try base.emitKernel(node, "spatial-dropout.\(direction) r\(ratio.bitPattern) i\(inner) layer\(node.id)", operands: [input, output, Operand(randomKey)],
                            tasks: rows, work: rows * inner) { b in
            let (x, y, key) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { row in
                let factor = b.float(TrainingLowering.keeps(b, key: key, layer: node.id, row, ratio: ratio)) * scale
                b.loop(0..<inner) { i in y[row * inner + i] = x[row * inner + i] * factor }
            }
        }
    }

    // MARK: Transpose and Reverse (CTPN)

    /// Transpose backward: the top diff permuted back (bottom axis `dim[i]` is top axis i).
    mutating func lowerTransposeBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        try lowerAxisPermutationBackward(node, order: AxisTransposition(node.layer.transposeParam, rank: shape(node.inputs[0]).count).order)
    }

    /// The backward of a layer whose top axis i is bottom axis `order[i]` (Permute, Transpose):
    /// the top diff permuted by the inverse order into the bottom diff.
    mutating func lowerAxisPermutationBackward(_ node: Node, order: [Int]) throws {
        var inverse = Array(repeating: 0, count: order.count)
        for (i, axis) in order.enumerated() { inverse[axis] = i }
        let dy = try topDiff(node, node.outputs[0])
        try base.emitAxisPermutation(node, input: dy, output: bottomDiff(node, 0), dims: shape(node.outputs[0]), order: inverse)
    }

    /// Reverse backward: the top diff reversed along the same axis (`ReverseLayer::Backward_cpu`).
    mutating func lowerReverseBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dy = try topDiff(node, node.outputs[0])
        try base.emitReverse(node, input: dy, output: bottomDiff(node, 0), dims: shape(node.inputs[0]), axis: Int(node.layer.reverseParam.axis))
    }
}

extension TrainingLowering {
    // MARK: Lstm (CTPN)

    /// CTPN's Lstm backward through time (`LstmLayer::Backward_cpu`), on the forward's scratch
    /// buffers: from step T−1 down to 0 the BVLC LSTM step's backward (`emitLSTMStepBackward`:
    /// dc carried, f = 0 at t = 0), then — the fork's addition — each step's pre-activation diffs
    /// clipped to ±`clipping_threshold` when it is positive, before `dh_{t−1} += dpre_t·W_h`. Then
    /// `dW_i += dpreᵀ·x`, `dW_h += dpreᵀ·(cont_t·h_{t−1})`, `db += Σ dpre` and `dx = dpre·W_i`.
    ///
    /// With the clip bottom, `cont` is the clip (flags 0 or 1) and h₋₁, c₋₁ are the state the
    /// previous forward carried: the gradient stops there (truncated BPTT, as the fork's `h_0_`
    /// diff goes nowhere), and the clip gets a zero diff (the fork never writes it). `dW_h` is the
    /// gradient of the forward as run: the fork's code instead adds `dpre_tᵀ·h_{t−1}` also where
    /// `clip_t` is 0, and at t = 0 only stream 0's term (a K = 1 GEMM), which is not the
    /// derivative of its own forward; the two agree wherever every clip after t = 0 is 1 and N = 1.
    mutating func lowerCTPNLSTMBackward(_ node: Node) throws {
        if node.inputs.count > 1, analysis.writesBottomDiff(node, 1) {
            try base.emitFill(node, bottomDiff(node, 1), count: count(node.inputs[1]), value: 0)
        }
        let dims = shape(node.inputs[0])
        let (t, n) = (dims[0], dims[1]), features = dims[2...].reduce(1, *)
        let h = Int(node.layer.lstmParam.numOutput), gates = 4 * h, state = n * h
        let threshold = node.layer.lstmParam.clippingThreshold
        guard let pre = scratchBuffer(node, "gates"), let gated = scratchBuffer(node, "gated hidden"),
              let cells = scratchBuffer(node, "cells"), let cont = scratchBuffer(node, "cont") else {
            throw unsupported(node, "its forward kept no intermediate values")
        }
        guard t > 0, n > 0 else { return }
        let dtop = try topDiff(node, node.outputs[0])
        let dpre = Operand(base.scratch(node, "pre-activation diffs", count: t * n * gates))
        let recurrentDiff = Operand(base.scratch(node, "recurrent diff", count: state))
        let cellDiff = Operand(base.scratch(node, "cell diff", count: state))
        try base.emitFill(node, cellDiff, count: state, value: 0)
        let (inputWeights, recurrentWeights, bias) = (parameter(node, 0), parameter(node, 1), parameter(node, 2))
        for step in stride(from: t - 1, through: 0, by: -1) {
            let hasNext = step + 1 < t
            var operands = [Operand(cells.buffer, offset: step * state), Operand(pre.buffer, offset: step * n * gates),
                            Operand(cont.buffer, offset: step * n), Operand(cells.buffer, offset: (step + 1) * state), cellDiff,
                            Operand(dtop.buffer, offset: dtop.offset + step * state), cellDiff, Operand(dpre.buffer, offset: step * n * gates)]
            if hasNext { operands += [Operand(cont.buffer, offset: (step + 1) * n), recurrentDiff] }
            try emitLSTMStepBackward(node, operands: operands, batch: n, hidden: h, hasNext: hasNext)
            if threshold > 0 {
                try base.emitKernel(node, "lstm.fork.clip g\(n * gates) t\(threshold.bitPattern)", operands: [Operand(dpre.buffer, offset: step * n * gates)],
                                    tasks: 1, work: n * gates) { b in
                    let d = b.operand(0)
                    b.forEachTask { _ in
                        b.loop(0..<(n * gates), unrolled: false) { i in d[i] = b.max(b.constant(-threshold), b.min(d[i], b.constant(threshold))) }
                    }
                }
            }
            if step > 0 {
                base.emitGemm(node, GemmStep(m: n, n: h, k: gates, a: Operand(dpre.buffer, offset: step * n * gates), lda: gates,
                                             b: recurrentWeights.data, ldb: h, c: recurrentDiff, ldc: h))
            }
        }
        if propagatesToParameter(node, 1) {
            var gradient = GemmStep(m: gates, n: h, k: t * n, a: dpre, lda: gates, b: gated, ldb: h, c: recurrentWeights.diff, ldc: h)
            gradient.transA = true
            gradient.beta = 1
            base.emitGemm(node, gradient)
        }
        if propagatesToParameter(node, 0) {
            var gradient = GemmStep(m: gates, n: features, k: t * n, a: dpre, lda: gates, b: data(node.inputs[0]), ldb: features,
                                    c: inputWeights.diff, ldc: features)
            gradient.transA = true
            gradient.beta = 1
            base.emitGemm(node, gradient)
        }
        if propagatesToParameter(node, 2) {
            try emitBiasGradient(node, topDiff: dpre, biasDiff: bias.diff, outer: t * n, channels: gates, inner: 1)
        }
        if analysis.writesBottomDiff(node, 0) {
            base.emitGemm(node, GemmStep(m: t * n, n: features, k: gates, a: dpre, lda: gates, b: inputWeights.data, ldb: features,
                                         c: bottomDiff(node, 0), ldc: features))
        }
    }
}
