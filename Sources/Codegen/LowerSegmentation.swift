import CaffeFormat
import Graph
import Runtime

/// Forward lowerings of the segmentation and sequence forks' layers: SegNet's and ENet's `BN`,
/// ENet's spatial dropout, CTPN's `Transpose`, `Reverse` and `Lstm`. Each is written from the
/// fork's `Forward_cpu`; training runs the same lowerings (parameters rebound to their persistent
/// buffers) and adds the backward in `Training/GradientSegmentation.swift`.
extension Lowering {
    /// BN (`BNLayer::Forward_cpu`), per channel c over an N×C×inner bottom:
    /// - INFERENCE: `y = scale[c]·x + shift[c]` (the forks fold the statistics into scale and
    ///   shift before deploying);
    /// - LEARN (in every phase, as the forks do): mean and biased variance over N×inner, then
    ///   `y = scale[c]·(x − mean)/sqrt(var + 1e-9) + shift[c]`. The forks compute the variance as
    ///   E(x²) − E(x)²; the kernel sums squared deviations from the mean (the same value, without
    ///   the cancellation). The mean and std go to the scratch buffer `statistics` (2C values), which
    ///   training's backward reads; the optional second and third tops get the mean and the
    ///   variance (before eps), as the fork copies them.
    mutating func lowerBN(_ node: Node) throws {
        let input = node.inputs[0], dims = shape(input)
        let n = dims[0], c = dims[1], inner = count(input) / max(1, n * c)
        let blobs = try parameterBlobs(node)
        let scale = Operand(parameter(node, 0, "scale", blobs)), shift = Operand(parameter(node, 1, "shift", blobs))
        let x = Operand(buffer(input))
        guard node.layer.bnParam.bnMode == .learn else {
            let output = elementwiseOutput(node)
            try emitChannelAffine(node, input: x, output: Operand(output), outer: n, channels: c, inner: inner, scale: scale, shift: shift)
            return
        }
        let statistics = Operand(scratch(node, "statistics", count: 2 * c))
        let extraTops = node.outputs.dropFirst().map { Operand(buffer($0)) }
        let inverse = 1 / Float(n * inner), eps = BNLayer.varianceEpsilon
        try emitKernel(node, "bn.fork.statistics n\(n) c\(c) i\(inner) tops\(extraTops.count)", operands: [x, statistics] + extraTops,
                       tasks: c, work: 2 * count(input)) { b in
            let (x, stats) = (b.operand(0), b.operand(1))
            b.forEachTask { ch in
                let total = b.variable(b.constant(0))
                b.loop(0..<n, unrolled: false) { item in
                    let sum = b.variable(b.constant(0))
                    b.loop(0..<inner) { i in sum.value = sum.value + x[(item * c + ch) * inner + i] }
                    total.value = total.value + sum.value
                }
                let mean = total.value * inverse
                let squares = b.variable(b.constant(0))
                b.loop(0..<n, unrolled: false) { item in
                    let sum = b.variable(b.constant(0))
                    b.loop(0..<inner) { i in
                        let d = x[(item * c + ch) * inner + i] - mean
                        sum.value = sum.value + d * d
                    }
                    squares.value = squares.value + sum.value
                }
                let variance = squares.value * inverse
                stats[ch] = mean
                stats[ch + c] = b.sqrt(variance + eps)
                if extraTops.count > 0 { b.operand(2)[ch] = mean }
                if extraTops.count > 1 { b.operand(3)[ch] = variance }
            }
        }
        let output = Operand(elementwiseOutput(node))
        try emitKernel(node, "bn.fork.apply c\(c) i\(inner)", operands: [x, statistics, scale, shift, output], tasks: n * c, work: count(input)) { b in
            let (x, stats, scale, shift, y) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            b.forEachTask { row in
                let ch = c == 1 ? b.index(0) : row % c
                let (mean, deviation, s, t) = (stats[ch], stats[ch + c], scale[ch], shift[ch])
                b.loop(0..<inner) { i in y[row * inner + i] = (x[row * inner + i] - mean) / deviation * s + t }
            }
        }
    }

    /// ENet's spatial dropout outside training (`SpatialDropoutSettings`): without channel masks
    /// the fork multiplies by 1/(1 − p); a layer that would draw masks (param_str phase 'TRAIN')
    /// passes its input through unchanged, the masks' expectation, since a compiled inference
    /// program draws no random numbers (the fork's Python layer would drop channels at random
    /// even when deployed).
    mutating func lowerSpatialDropout(_ node: Node) throws {
        let settings = try SpatialDropoutSettings(node.layer, phase: graph.phase)
        guard !settings.dropsChannels else {
            lowerView(node)
            return
        }
        try emitScaled(node, input: Operand(buffer(node.inputs[0])), output: Operand(elementwiseOutput(node)),
                       count: count(node.inputs[0]), factor: settings.scale)
    }

    /// `y = x · factor` over `count` values (the same buffer allowed).
    mutating func emitScaled(_ node: Node, input: Operand, output: Operand, count: Int, factor: Float) throws {
        try emitKernel(node, "scaled f\(factor.bitPattern)", operands: [input, output], tasks: count, work: count) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { i in y[i] = x[i] * factor }
        }
    }

    /// Transpose (CTPN's `TransposeLayer`): top axis i is bottom axis `dim[i]`.
    mutating func lowerTranspose(_ node: Node) throws {
        let dims = shape(node.inputs[0])
        let order = try AxisTransposition(node.layer.transposeParam, rank: dims.count).order
        try emitAxisPermutation(node, input: Operand(buffer(node.inputs[0])), output: Operand(buffer(node.outputs[0])), dims: dims, order: order)
    }

    /// Gathers `output` (the axes of `dims` taken in `order`) from `input`: one task per index of
    /// the first output axis, the other axes nested constant-bound loops with constant strides.
    mutating func emitAxisPermutation(_ node: Node, input: Operand, output: Operand, dims: [Int], order: [Int]) throws {
        let outDims = order.map { dims[$0] }
        var strides = Array(repeating: 1, count: dims.count)
        for axis in Swift.stride(from: dims.count - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * dims[axis + 1] }
        let sourceStrides = order.map { strides[$0] }
        let total = outDims.reduce(1, *)
        guard total > 0 else { return }
        // Extents and strides are read at run time (`KernelExtents`): one kernel per rank.
        let extents = try self.extents(node, "transpose", outDims + sourceStrides)
        let rank = dims.count
        try emitKernel(node, "transpose rank\(rank)", operands: [input, output, extents], tasks: outDims[0], work: total) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            let outDims = (0..<rank).map { b.extent(b.operand(2), $0) }, sourceStrides = (0..<rank).map { b.extent(b.operand(2), rank + $0) }
            b.forEachTask { first in
                func axis(_ d: Int, target: Index, source: Index) {
                    guard d < rank else {
                        y[target] = x[source]
                        return
                    }
                    b.loop(from: b.index(0), to: outDims[d]) { i in axis(d + 1, target: target * outDims[d] + i, source: source + i * sourceStrides[d]) }
                }
                axis(1, target: first, source: first * sourceStrides[0])
            }
        }
    }

    /// Reverse (CTPN's `ReverseLayer`): index a along `axis` goes to `extent − 1 − a`.
    mutating func lowerReverse(_ node: Node) throws {
        try emitReverse(node, input: Operand(buffer(node.inputs[0])), output: Operand(buffer(node.outputs[0])),
                        dims: shape(node.inputs[0]), axis: Int(node.layer.reverseParam.axis))
    }

    /// `output` is `input` with `axis` of `dims` reversed: one task per index of the axes before it,
    /// each copying whole inner blocks.
    mutating func emitReverse(_ node: Node, input: Operand, output: Operand, dims: [Int], axis: Int) throws {
        let outer = dims[..<axis].reduce(1, *), extent = dims[axis], inner = dims[(axis + 1)...].reduce(1, *)
        guard outer * extent * inner > 0 else { return }
        try emitKernel(node, "reverse a\(extent) i\(inner)", operands: [input, output], tasks: outer, work: outer * extent * inner) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { o in
                b.loop(0..<extent, unrolled: false) { a in
                    let from = (o * extent + a) * inner
                    let to = (o * extent + (extent - 1)) * inner - a * inner
                    b.loop(0..<inner) { i in y[to + i] = x[from + i] }
                }
            }
        }
    }

    /// CTPN's Lstm (`LstmLayer::Forward_gpu`, junhyukoh-style), x T×N×I, top T×N×H. The input
    /// projection of all T·N rows is one GEMM (`x·W_iᵀ + b`); each step adds `h_{t−1}·W_hᵀ` and
    /// applies the gates (i, f, o, g) in `emitLSTMStep`, Caffe's BVLC LSTM step, whose cont flags
    /// come from the scratch `cont`. Scratch buffers `gates` (T×N×4H pre-activations), `cells`
    /// (c₀ … c_T) and `gated hidden` (`cont_t·h_{t−1}`) are what the backward reads.
    ///
    /// Without a clip bottom every forward starts from h₀ = c₀ = 0 and `cont` is the fork's
    /// `t > 0`. With the clip bottom (T×N flags, 0 where a sequence starts) `cont` is the clip
    /// itself, multiplied in as the fork's GPU kernels do (`ClipAdd`: `pre += clip·h_{t−1}·W_hᵀ`;
    /// `c = clip·f·c_{t−1} + i·g`), and h₀, c₀ are what the previous forward of this compiled net
    /// left at its last step (zeros at first): the fork's `h_T_`/`c_T_`, carried for truncated
    /// BPTT across batches. Two departures, both where the fork's own code is inconsistent: its CPU
    /// forward adds stream 0's recurrent term to every stream (`caffe_add(…, h_to_gate, …)` never
    /// advances), and it checks `num() == count()`, so a T×N clip only passes for N = 1; here the
    /// clip is read as T×N for every N, as the GPU kernels index it.
    mutating func lowerCTPNLSTM(_ node: Node) throws {
        let dims = shape(node.inputs[0])
        let (t, n) = (dims[0], dims[1]), features = dims[2...].reduce(1, *)
        let h = Int(node.layer.lstmParam.numOutput), gates = 4 * h, state = n * h
        let blobs = try parameterBlobs(node)
        let inputWeights = parameter(node, 0, "W_i", blobs), recurrentWeights = parameter(node, 1, "W_h", blobs)
        let bias = parameter(node, 2, "b", blobs)
        guard t > 0, n > 0 else { return }

        let pre = scratch(node, "gates", count: t * n * gates)
        var projection = GemmStep(m: t * n, n: gates, k: features, a: Operand(buffer(node.inputs[0])), lda: features,
                                  b: Operand(inputWeights), ldb: features, c: Operand(pre), ldc: gates)
        projection.transB = true
        emitGemm(node, projection)
        try emitChannelAffine(node, input: Operand(pre), output: Operand(pre), outer: t * n, channels: gates, inner: 1, shift: Operand(bias))

        let cont = scratch(node, "cont", count: t * n)
        let gated = scratch(node, "gated hidden", count: t * state)
        let cells = scratch(node, "cells", count: (t + 1) * state)
        var carried: (h: BufferID, c: BufferID)?
        if node.inputs.count > 1 {
            let stateH = program.addPersistent("\(node.name)/h state", count: state)
            let stateC = program.addPersistent("\(node.name)/c state", count: state)
            recurrentStates += [stateH, stateC]
            carried = (stateH, stateC)
            let operands = [Operand(buffer(node.inputs[1])), Operand(stateH), Operand(stateC), Operand(cont), Operand(gated), Operand(cells)]
            try emitKernel(node, "lstm.fork.carry t\(t) n\(n) h\(h)", operands: operands, tasks: 1, work: t * n + 3 * state) { b in
                let (clip, hState, cState, cont, gated, cells) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4), b.operand(5))
                b.forEachTask { _ in
                    b.loop(0..<(t * n), unrolled: false) { i in cont[i] = clip[i] }
                    b.loop(0..<state, unrolled: false) { i in
                        gated[i] = clip[i / h] * hState[i]
                        cells[i] = cState[i]
                    }
                }
            }
        } else {
            try emitKernel(node, "lstm.fork.start n\(n) state\(state)", operands: [Operand(cont), Operand(gated), Operand(cells)],
                           tasks: 1, work: t * n + 2 * state) { b in
                let (cont, gated, cells) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { _ in
                    b.loop(0..<(t * n), unrolled: false) { i in cont[i] = b.select(i < n, b.constant(0), b.constant(1)) }
                    b.loop(0..<state, unrolled: false) { i in
                        gated[i] = b.constant(0)
                        cells[i] = b.constant(0)
                    }
                }
            }
        }
        let output = buffer(node.outputs[0])
        for step in 0..<t {
            let hasNext = step + 1 < t
            var recurrent = GemmStep(m: n, n: gates, k: h, a: Operand(gated, offset: step * state), lda: h,
                                     b: Operand(recurrentWeights), ldb: h, c: Operand(pre, offset: step * n * gates), ldc: gates)
            recurrent.transB = true
            recurrent.beta = 1
            emitGemm(node, recurrent)
            var operands = [Operand(cells, offset: step * state), Operand(pre, offset: step * n * gates), Operand(cont, offset: step * n),
                            Operand(cells, offset: (step + 1) * state), Operand(output, offset: step * state)]
            if hasNext { operands += [Operand(cont, offset: (step + 1) * n), Operand(gated, offset: (step + 1) * state)] }
            try emitLSTMStep(node, operands: operands, batch: n, hidden: h, hasStatic: false, hasNext: hasNext)
        }
        if let carried {
            try emitCopyRows(node, from: Operand(output, offset: (t - 1) * state), to: Operand(carried.h), rows: n, width: h)
            try emitCopyRows(node, from: Operand(cells, offset: t * state), to: Operand(carried.c), rows: n, width: h)
        }
    }
}
