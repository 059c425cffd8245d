import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// The backward of one LSTM step (and Caffe's LSTMUnit), per stream (one task each) and unit:
    /// with `dh` the top diff of h (plus `cont_{t+1}·dh_rec` from the next step when `hasNext`),
    /// `dc = dc_in + dh·o·(1 − tanh²c)`, then `dc_prev = dc·f` and the pre-activations' diffs
    /// `dc·g·i(1−i)`, `dc·c_prev·f(1−f)`, `dh·tanh c·o(1−o)`, `dc·i·(1−g²)`, as LSTMUnit's
    /// `Backward_cpu`. Operands: `c_prev, gates, cont, c, dc_in, dh, dc_prev, dgates`, then with
    /// `hasNext` `cont_{t+1}` and `dh_rec`. `dc_in` and `dc_prev` may be one buffer (BPTT carries dc).
    mutating func emitLSTMStepBackward(_ node: Node, operands: [Operand], batch: Int, hidden: Int, hasNext: Bool) throws {
        try base.emitKernel(node, "lstm.step.grad h\(hidden) next=\(hasNext)", operands: operands, tasks: batch, work: batch * hidden * 32) { b in
            let (previous, x, cont, c) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            let (cDiff, hDiff, previousResult, gatesResult) = (b.operand(4), b.operand(5), b.operand(6), b.operand(7))
            let next = hasNext ? (b.operand(8), b.operand(9)) : nil
            b.forEachTask { n in
                let row = n * (4 * hidden), keep = cont[n]
                let nextKeep = next.map { $0.0[n] }
                b.loop(0..<hidden) { k in
                    let at = n * hidden + k
                    let i = Lowering.sigmoid(b, x[row + k])
                    let f = b.select(b.equal(keep, b.constant(0)), b.constant(0), keep * Lowering.sigmoid(b, x[row + hidden + k]))
                    let o = Lowering.sigmoid(b, x[row + 2 * hidden + k])
                    let g = b.tanh(x[row + 3 * hidden + k])
                    let tanhC = b.tanh(c[at])
                    var dh = hDiff[at]
                    if let next, let nextKeep { dh = dh + nextKeep * next.1[at] }
                    let term = cDiff[at] + dh * o * (1 - tanhC * tanhC)
                    let previousValue = previous[at]
                    previousResult[at] = term * f
                    gatesResult[row + k] = term * g * i * (1 - i)
                    gatesResult[row + hidden + k] = term * previousValue * f * (1 - f)
                    gatesResult[row + 2 * hidden + k] = dh * tanhC * o * (1 - o)
                    gatesResult[row + 3 * hidden + k] = term * i * (1 - g * g)
                }
            }
        }
    }

    /// LSTMUnit backward: one `lstm.step.grad` reading the top diffs of c and h.
    mutating func lowerLSTMUnitBackward(_ node: Node) throws {
        try refuseBackward(node, into: [2], "sequence indicator")
        let wantsPrevious = analysis.writesBottomDiff(node, 0), wantsGates = analysis.writesBottomDiff(node, 1)
        guard wantsPrevious || wantsGates else { return }
        let dims = shape(node.inputs[0])
        let (n, d) = (dims[1], dims[2])
        let dc = try topDiff(node, node.outputs[0]), dh = try topDiff(node, node.outputs[1])
        let previousDiff = wantsPrevious ? bottomDiff(node, 0) : Operand(base.scratch(node, "c_prev diff", count: count(node.inputs[0])))
        let gatesDiff = wantsGates ? bottomDiff(node, 1) : Operand(base.scratch(node, "gates diff", count: count(node.inputs[1])))
        let operands = [data(node.inputs[0]), data(node.inputs[1]), data(node.inputs[2]), data(node.outputs[0]), dc, dh, previousDiff, gatesDiff]
        try emitLSTMStepBackward(node, operands: operands, batch: n, hidden: d, hasNext: false)
    }

    /// LSTM and RNN backward through time, as Caffe's unrolled net computes it.
    ///
    /// Steps run from T−1 down to 0, each one kernel (the LSTM step's or the RNN's tanh gradient)
    /// writing that step's pre-activation diffs, then one GEMM `dh_rec = dpre_t · W_h` that the
    /// step before reads (scaled by its `cont`, as the unrolled net's Scale layer does). With every
    /// step's pre-activation diffs in one T·N×G buffer, the parameter gradients are then single
    /// GEMMs over all T·N rows (`dW_h += dpreᵀ·(cont·h_{t−1})`, `dW_x += dpreᵀ·x`, the bias a column
    /// sum) and the input diff is one GEMM `dx = dpre · W_x`. An RNN first backpropagates its output
    /// `o = tanh(h·W_hoᵀ + b_o)` the same way.
    ///
    /// Caffe's quirks kept: nothing flows across forwards (the carried state gets no diff); with
    /// `expose_hidden` the unrolled net shares only data with the h0/c0 bottoms and the hT/cT tops,
    /// so their diffs are ignored and h0/c0 get zero diffs; and the unrolled net accumulates every
    /// parameter's diff whenever the layer runs backward, whatever its `lr_mult`.
    mutating func lowerRecurrentBackward(_ node: Node) throws {
        try refuseBackward(node, into: [1], "sequence continuation")
        let g = try RecurrentGeometry(node, graph)
        let (t, n, h, gates) = (g.steps, g.batch, g.hidden, g.gates)
        guard let pre = scratchBuffer(node, g.isLSTM ? "gates" : "hidden"), let gated = scratchBuffer(node, "gated hidden"),
              g.isLSTM || scratchBuffer(node, "outputs") != nil else {
            throw unsupported(node, "its forward kept no intermediate values")
        }
        let cont = data(node.inputs[1])
        let dtop = try topDiff(node, node.outputs[0])
        let dpre = Operand(base.scratch(node, "pre-activation diffs", count: t * g.gateCount))
        let recurrentDiff = Operand(base.scratch(node, "recurrent diff", count: g.stateCount))
        let recurrentWeights = parameter(node, g.recurrentWeights)

        // The diff of h_t from the layer's output: the top diff (LSTM) or through o (RNN).
        var hDiff = dtop
        if !g.isLSTM, let output = scratchBuffer(node, "outputs") {
            let outputDiff = Operand(base.scratch(node, "output diff", count: t * g.stateCount))
            try base.emitKernel(node, "rnn.output.grad h\(h)", operands: [output, dtop, outputDiff], tasks: t * n, work: t * n * h * 3) { b in
                let (y, dy, result) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { row in
                    b.loop(0..<h) { k in
                        let value = y[row * h + k]
                        result[row * h + k] = dy[row * h + k] * (1 - value * value)
                    }
                }
            }
            let weights = parameter(node, g.outputWeights)
            var gradient = GemmStep(m: h, n: h, k: t * n, a: outputDiff, lda: h, b: pre, ldb: h, c: weights.diff, ldc: h)
            gradient.transA = true
            gradient.beta = 1
            base.emitGemm(node, gradient)
            try emitBiasGradient(node, topDiff: outputDiff, biasDiff: parameter(node, g.outputBias).diff, outer: t * n, channels: h, inner: 1)
            // dh from the output projection, written where the step kernels turn it into dpre.
            base.emitGemm(node, GemmStep(m: t * n, n: h, k: h, a: outputDiff, lda: h, b: weights.data, ldb: h, c: dpre, ldc: h))
            hDiff = dpre
        }

        var cellDiff: Operand?
        if g.isLSTM {
            let carried = Operand(base.scratch(node, "cell diff", count: g.stateCount))
            try base.emitFill(node, carried, count: g.stateCount, value: 0)
            cellDiff = carried
        }
        for step in stride(from: t - 1, through: 0, by: -1) {
            let hasNext = step + 1 < t
            let stateAt = step * g.stateCount, gatesAt = step * g.gateCount
            var next: [Operand] = []
            if hasNext { next = [Operand(cont.buffer, offset: (step + 1) * n), recurrentDiff] }
            if let cells = scratchBuffer(node, "cells"), let cellDiff {
                let operands = [Operand(cells.buffer, offset: stateAt), Operand(pre.buffer, offset: gatesAt), Operand(cont.buffer, offset: step * n),
                                Operand(cells.buffer, offset: stateAt + g.stateCount), cellDiff, Operand(hDiff.buffer, offset: hDiff.offset + stateAt),
                                cellDiff, Operand(dpre.buffer, offset: gatesAt)] + next
                try emitLSTMStepBackward(node, operands: operands, batch: n, hidden: h, hasNext: hasNext)
            } else {
                let operands = [Operand(pre.buffer, offset: stateAt), Operand(dpre.buffer, offset: stateAt)] + next
                try emitRNNStepBackward(node, operands: operands, batch: n, hidden: h, hasNext: hasNext)
            }
            if step > 0 {
                base.emitGemm(node, GemmStep(m: n, n: h, k: gates, a: Operand(dpre.buffer, offset: gatesAt), lda: gates,
                                             b: recurrentWeights.data, ldb: h, c: recurrentDiff, ldc: h))
            }
        }

        var recurrentGradient = GemmStep(m: gates, n: h, k: t * n, a: dpre, lda: gates, b: gated, ldb: h, c: recurrentWeights.diff, ldc: h)
        recurrentGradient.transA = true
        recurrentGradient.beta = 1
        base.emitGemm(node, recurrentGradient)
        let inputWeights = parameter(node, g.inputWeights)
        var inputGradient = GemmStep(m: gates, n: g.features, k: t * n, a: dpre, lda: gates, b: data(node.inputs[0]), ldb: g.features,
                                     c: inputWeights.diff, ldc: g.features)
        inputGradient.transA = true
        inputGradient.beta = 1
        base.emitGemm(node, inputGradient)
        try emitBiasGradient(node, topDiff: dpre, biasDiff: parameter(node, g.inputBias).diff, outer: t * n, channels: gates, inner: 1)

        if let s = g.staticFeatures {
            // The static projection feeds every step: its diff is the sum over steps (Caffe's Split).
            let summed = Operand(base.scratch(node, "static diff", count: g.gateCount))
            try base.emitKernel(node, "recurrent.sum.steps t\(t) n\(n * gates)", operands: [dpre, summed], tasks: n * gates, work: t * n * gates) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { i in
                    let total = b.variable(x[i])
                    b.loop(1..<max(1, t)) { step in total.value = total.value + x[step * (n * gates) + i] }
                    y[i] = total.value
                }
            }
            let weights = parameter(node, g.staticWeights)
            var gradient = GemmStep(m: gates, n: s, k: n, a: summed, lda: gates, b: data(node.inputs[2]), ldb: s, c: weights.diff, ldc: s)
            gradient.transA = true
            gradient.beta = 1
            base.emitGemm(node, gradient)
            if analysis.writesBottomDiff(node, 2) {
                base.emitGemm(node, GemmStep(m: n, n: s, k: gates, a: summed, lda: gates, b: weights.data, ldb: s, c: bottomDiff(node, 2), ldc: s))
            }
        }
        if analysis.writesBottomDiff(node, 0) {
            base.emitGemm(node, GemmStep(m: t * n, n: g.features, k: gates, a: dpre, lda: gates, b: inputWeights.data, ldb: g.features,
                                         c: bottomDiff(node, 0), ldc: g.features))
        }
        if g.exposesHidden {
            for j in g.firstStateBottom..<node.inputs.count where analysis.writesBottomDiff(node, j) {
                try base.emitFill(node, bottomDiff(node, j), count: count(node.inputs[j]), value: 0)
            }
        }
    }

    /// One RNN step backward, one task per stream: `dpre = (dh + cont_{t+1}·dh_rec)·(1 − h²)`
    /// (TanH's backward on the split's summed diff), written over `dh`. Operands: `h`, `dh`, then
    /// with `hasNext` `cont_{t+1}` and `dh_rec`.
    mutating func emitRNNStepBackward(_ node: Node, operands: [Operand], batch: Int, hidden: Int, hasNext: Bool) throws {
        try base.emitKernel(node, "rnn.step.grad h\(hidden) next=\(hasNext)", operands: operands, tasks: batch, work: batch * hidden * 4) { b in
            let (y, dy) = (b.operand(0), b.operand(1))
            let next = hasNext ? (b.operand(2), b.operand(3)) : nil
            b.forEachTask { n in
                let nextKeep = next.map { $0.0[n] }
                b.loop(0..<hidden) { k in
                    let at = n * hidden + k
                    var diff = dy[at]
                    if let next, let nextKeep { diff = diff + nextKeep * next.1[at] }
                    let value = y[at]
                    dy[at] = diff * (1 - value * value)
                }
            }
        }
    }
}
