import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    // MARK: BatchNorm

    /// BatchNorm's N × C × inner split.
    private func batchNormSplit(_ node: Node) -> (n: Int, c: Int, inner: Int) {
        let dims = shape(node.inputs[0])
        let n = dims.first ?? 1, c = dims.count > 1 ? dims[1] : 1
        return (n, c, count(node.inputs[0]) / max(1, n * c))
    }

    /// Whether BatchNorm normalizes with its stored statistics (`use_global_stats`, default: TEST).
    func usesGlobalStatistics(_ node: Node) -> Bool {
        let p = node.layer.batchNormParam
        return p.hasUseGlobalStats ? p.useGlobalStats : graph.phase == .test
    }

    /// BatchNorm forward, reading its statistics from the persistent parameter buffers at run time
    /// (so solver steps and `setParameters` take effect). A per-channel kernel writes `mean` and
    /// `std = sqrt(var + eps)` to a scratch buffer kept for backward:
    /// - stored statistics: `blob · factor`, factor = 1/blob₂ (0 when blob₂ is 0);
    /// - batch statistics: the mean and biased variance over N × inner, and Caffe's running update
    ///   `blob₂ = blob₂·f + 1`, `blob₀ = blob₀·f + mean`, `blob₁ = blob₁·f + var·m/(m−1)`
    ///   (f = `moving_average_fraction`, m = N·inner).
    /// Then `y = (x − mean) / std`, one task per (image, channel) row (safe in place).
    mutating func lowerBatchNormForward(_ node: Node) throws {
        let p = node.layer.batchNormParam
        let (n, c, inner) = batchNormSplit(node)
        let global = usesGlobalStatistics(node)
        let statistics = Operand(base.scratch(node, "statistics", count: 2 * c))
        let (mean, variance, factor) = (parameter(node, 0).data, parameter(node, 1).data, parameter(node, 2).data)
        let eps = p.eps, fraction = p.movingAverageFraction
        let x = data(node.inputs[0])
        if global {
            try base.emitKernel(node, "bn.global c\(c) eps\(eps.bitPattern)", operands: [mean, variance, factor, statistics], tasks: c, work: c) { b in
                let (storedMean, storedVariance, storedFactor, stats) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
                b.forEachTask { ch in
                    let scale = b.select(b.equal(storedFactor[b.index(0)], b.constant(0)), b.constant(0), 1 / storedFactor[b.index(0)])
                    stats[ch] = storedMean[ch] * scale
                    stats[ch + c] = b.sqrt(storedVariance[ch] * scale + eps)
                }
            }
        } else {
            for k in 0..<3 { slotsWrittenByForward.insert(slotOf[node.id][k]) }
            let m = n * inner
            let correction: Float = m > 1 ? Float(m) / Float(m - 1) : 1
            let inverse = Float(1) / Float(m)
            // n, c and the factors derived from them are read at run time (`KernelExtents`); the
            // row length shapes the vector loop, so it stays in the signature.
            let lanes = base.cache.jit.features.vectorLanes
            let extents = try base.extents(node, "batch norm", [n, c, inner], floats: [inverse, correction])
            let signature = "bn.batch i\(inner) eps\(eps.bitPattern) f\(fraction.bitPattern) rows of \(lanes)"
            try base.emitKernel(node, signature, operands: [x, mean, variance, factor, statistics, extents], tasks: c,
                                work: 2 * count(node.inputs[0])) { b in
                let (x, storedMean, storedVariance, storedFactor, stats) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
                let n = b.extent(b.operand(5), 0), c = b.extent(b.operand(5), 1)
                let inverse = b.value(b.operand(5), 3), correction = b.value(b.operand(5), 4)
                b.forEachTask { ch in
                    let total = b.variable(b.constant(0))
                    b.loop(from: b.index(0), to: n, unrolled: false) { item in
                        let sum = b.rowSums(1, count: inner, from: (item * c + ch) * inner, width: lanes) { i, mask in [x.load(i, mask)] }[0]
                        total.value = total.value + sum * inverse
                    }
                    let average = total.value
                    let center = b.splat(average, width: lanes)
                    let squares = b.variable(b.constant(0))
                    b.loop(from: b.index(0), to: n, unrolled: false) { item in
                        let sum = b.rowSums(1, count: inner, from: (item * c + ch) * inner, width: lanes) { i, mask in
                            let d = x.load(i, mask) - center
                            return [d * d]
                        }[0]
                        squares.value = squares.value + sum * inverse
                    }
                    let batchVariance = squares.value
                    b.when(b.equal(ch, 0)) { storedFactor[b.index(0)] = storedFactor[b.index(0)] * fraction + 1 }
                    storedMean[ch] = storedMean[ch] * fraction + average
                    storedVariance[ch] = storedVariance[ch] * fraction + batchVariance * correction
                    stats[ch] = average
                    stats[ch + c] = b.sqrt(batchVariance + eps)
                }
            }
        }
        let output = Operand(base.elementwiseOutput(node))
        let shape = try base.extents(node, "batch norm apply", [c, inner])
        try base.emitKernel(node, "bn.apply", operands: [x, statistics, output, shape], tasks: n * c, work: count(node.inputs[0])) { b in
            let (x, stats, y) = (b.operand(0), b.operand(1), b.operand(2))
            let c = b.extent(b.operand(3), 0), inner = b.extent(b.operand(3), 1)
            b.forEachTask { row in
                let ch = row % c
                let (average, deviation) = (stats[ch], stats[ch + c])
                b.loop(from: b.index(0), to: inner) { i in y[row * inner + i] = (x[row * inner + i] - average) / deviation }
            }
        }
    }

    /// BatchNorm backward (never a parameter diff, as in Caffe). Stored statistics: `dx = dy / std`.
    /// Batch statistics, from the normalized top y:
    /// `dx = (dy − (y · Σ(dy·y) + Σdy) / m) / std`, sums per channel over N × inner.
    mutating func lowerBatchNormBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (n, c, inner) = batchNormSplit(node)
        guard let statistics = scratchBuffer(node, "statistics") else { throw unsupported(node, "its forward kept no statistics") }
        let dy = try topDiff(node, node.outputs[0])
        let elements = count(node.inputs[0])
        if usesGlobalStatistics(node) {
            let dx = bottomDiff(node, 0, reusing: dy)
            try base.emitKernel(node, "bn.global.grad c\(c) i\(inner)", operands: [dy, statistics, dx], tasks: n * c, work: elements) { b in
                let (topDiff, stats, result) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { row in
                    let deviation = stats[(c == 1 ? b.index(0) : row % c) + c]
                    b.loop(0..<inner) { i in result[row * inner + i] = topDiff[row * inner + i] / deviation }
                }
            }
            return
        }
        let y = data(node.outputs[0])
        if let folded = foldedScales[node.id] {
            // dy is the Scale's top diff: dx = γ·(dy − (y·Σdy·y + Σdy)/m)/std, Σ from the Scale's pass.
            let dx = bottomDiff(node, 0, reusing: dy)
            let scale = -Float(1) / Float(n * inner)
            try base.emitKernel(node, "bn.scale.batch.grad c\(c) i\(inner) s\(scale.bitPattern)",
                                operands: [dy, y, folded.sums, statistics, folded.scale, dx], tasks: n * c, work: elements) { b in
                let (topDiff, y, sums, stats, gamma, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4), b.operand(5))
                b.forEachTask { row in
                    let ch = c == 1 ? b.index(0) : row % c
                    let (product, plain, deviation, factor) = (sums[ch], sums[ch + c], stats[ch + c], gamma[ch])
                    b.loop(0..<inner) { i in
                        let at = row * inner + i
                        result[at] = factor * ((y[at] * product + plain) * scale + topDiff[at]) / deviation
                    }
                }
            }
            return
        }
        let sums = Operand(base.scratch(node, "gradient sums", count: 2 * c))
        // n, c and −1/m are read at run time (`KernelExtents`); the sums' row length shapes their vector loop.
        let lanes = base.cache.jit.features.vectorLanes
        let scale = -Float(1) / Float(n * inner)
        let extents = try base.extents(node, "batch norm gradient", [n, c, inner], floats: [scale])
        try base.emitKernel(node, "bn.batch.sums i\(inner) rows of \(lanes)", operands: [dy, y, sums, extents], tasks: c, work: 2 * elements) { b in
            let (topDiff, y, sums) = (b.operand(0), b.operand(1), b.operand(2))
            let n = b.extent(b.operand(3), 0), c = b.extent(b.operand(3), 1)
            b.forEachTask { ch in
                let (product, plain) = b.channelSums(topDiff, y, channel: ch, outer: n, channels: c, inner: inner, width: lanes)
                sums[ch] = product.value
                sums[ch + c] = plain.value
            }
        }
        let dx = bottomDiff(node, 0, reusing: dy)
        try base.emitKernel(node, "bn.batch.grad", operands: [dy, y, sums, statistics, dx, extents],
                            tasks: n * c, work: elements) { b in
            let (topDiff, y, sums, stats, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            let c = b.extent(b.operand(5), 1), inner = b.extent(b.operand(5), 2), scale = b.value(b.operand(5), 3)
            b.forEachTask { row in
                let ch = row % c
                let (product, plain, deviation) = (sums[ch], sums[ch + c], stats[ch + c])
                b.loop(from: b.index(0), to: inner) { i in
                    let at = row * inner + i
                    result[at] = ((y[at] * product + plain) * scale + topDiff[at]) / deviation
                }
            }
        }
    }

    // MARK: Scale and Bias

    /// Scale backward. The bias part (`bias_term`) accumulates Σ dy per channel. The scale's diff
    /// is Σ dy·x per channel over the outer and inner axes — accumulated into a parameter and
    /// written into a second bottom's diff, except where Caffe's own code overwrites the parameter
    /// diff too (element-wise scale, or one outer index with several channels and inner > 1).
    /// The input diff is `dy · scale`.
    mutating func lowerScaleBackward(_ node: Node) throws {
        if let batchNorm = try batchNormBeforeScale(node) {
            try lowerScaleBackward(node, foldedInto: batchNorm)
            return
        }
        let p = node.layer.scaleParam
        let input = node.inputs[0]
        let twoBottoms = node.inputs.count > 1
        let axes = twoBottoms ? shape(node.inputs[1]).count : Int(p.numAxes)
        let split = try base.channelSplit(node, shape: shape(input), axis: Int(p.axis), axes: axes)
        let (outer, channels, inner) = (split.outer, split.channels, split.inner)
        let dy = try topDiff(node, node.outputs[0])
        if p.biasTerm {
            let k = twoBottoms ? 0 : 1
            if propagatesToParameter(node, k) {
                try emitBiasGradient(node, topDiff: dy, biasDiff: parameter(node, k).diff, outer: outer, channels: channels, inner: inner)
            }
        }
        let scale = twoBottoms ? data(node.inputs[1]) : parameter(node, 0).data
        let wantsScale = twoBottoms ? analysis.writesBottomDiff(node, 1) : propagatesToParameter(node, 0)
        if wantsScale {
            let target = twoBottoms ? bottomDiff(node, 1) : parameter(node, 0).diff
            let isElementwise = count(input) == channels
            let accumulate = !twoBottoms && !isElementwise && !(outer == 1 && inner > 1 && channels > 1)
            // outer and channels are read at run time (`KernelExtents`); the row length shapes the vector loop.
            let lanes = base.cache.jit.features.vectorLanes
            let extents = try base.extents(node, "scale gradient", [outer, channels, inner])
            try base.emitKernel(node, "scale.grad i\(inner) accumulate=\(accumulate) rows of \(lanes)", operands: [dy, data(input), target, extents],
                                tasks: channels, work: count(input)) { b in
                let (topDiff, x, result) = (b.operand(0), b.operand(1), b.operand(2))
                let outer = b.extent(b.operand(3), 0), channels = b.extent(b.operand(3), 1)
                b.forEachTask { ch in
                    let total = b.variable(accumulate ? result[ch] : b.constant(0))
                    b.loop(from: b.index(0), to: outer, unrolled: false) { o in
                        let sum = b.rowSums(1, count: inner, from: (o * channels + ch) * inner, width: lanes) { i, mask in
                            [topDiff.load(i, mask) * x.load(i, mask)]
                        }[0]
                        total.value = total.value + sum
                    }
                    result[ch] = total.value
                }
            }
        }
        if analysis.writesBottomDiff(node, 0) {
            let dx = bottomDiff(node, 0)
            try base.emitChannelAffine(node, input: dy, output: dx, outer: outer, channels: channels, inner: inner, scale: scale)
        }
    }

    /// The BatchNorm (batch statistics) whose normalized output only this channel-wise Scale
    /// reads, when the Scale's backward can be folded into the BatchNorm's: ResNet's BN → Scale
    /// pairs. Both backward passes need the same per-channel sums (Σ dy·y and Σ dy, the Scale's
    /// parameter gradients; the BatchNorm's times γ), so one pass over the Scale's top diff gives
    /// them, and the BatchNorm's input diff reads that top diff directly instead of the Scale's
    /// input diff γ·dy — five passes over the activations become two. Not when callers read every
    /// diff back (the Scale's input diff is then never formed).
    func batchNormBeforeScale(_ node: Node) throws -> Node? {
        guard !keepsAllDiffs, node.inputs.count == 1, node.outputs.count == 1, analysis.writesBottomDiff(node, 0),
              let producer = graph.values[node.inputs[0]].producer else { return nil }
        let batchNorm = graph.nodes[producer]
        guard batchNorm.kind == .batchNorm, !usesGlobalStatistics(batchNorm), batchNorm.outputs == [node.inputs[0]],
              graph.values[node.inputs[0]].consumers == [node.id], analysis.writesBottomDiff(batchNorm, 0),
              scratchBuffer(batchNorm, "statistics") != nil else { return nil }
        let p = node.layer.scaleParam
        let split = try base.channelSplit(node, shape: shape(node.inputs[0]), axis: Int(p.axis), axes: Int(p.numAxes))
        let (n, c, inner) = batchNormSplit(batchNorm)
        return split.outer == n && split.channels == c && split.inner == inner && c > 1 ? batchNorm : nil
    }

    /// Scale backward folded into the BatchNorm before it (`batchNormBeforeScale`): one pass gives
    /// each channel's Σ dy·x and Σ dy, accumulated into the scale's and bias's diffs (as the
    /// separate kernels do) and kept for the BatchNorm's backward, which takes the top diff as its
    /// own (`foldedScales`).
    mutating func lowerScaleBackward(_ node: Node, foldedInto batchNorm: Node) throws {
        let (outer, channels, inner) = batchNormSplit(batchNorm)
        let dy = try topDiff(node, node.outputs[0])
        let sums = Operand(base.scratch(node, "gradient sums", count: 2 * channels))
        let bias = node.layer.scaleParam.biasTerm && propagatesToParameter(node, 1) ? parameter(node, 1).diff : nil
        let scale = propagatesToParameter(node, 0) ? parameter(node, 0).diff : nil
        let lanes = base.cache.jit.features.vectorLanes
        // Caffe's Scale overwrites its parameter diff for one image of several channels and inner > 1.
        let accumulate = !(outer == 1 && inner > 1)
        let signature = "scale.bn.sums o\(outer) c\(channels) i\(inner) scale=\(scale != nil) accumulate=\(accumulate) bias=\(bias != nil) rows of \(lanes)"
        try base.emitKernel(node, signature, operands: [dy, data(node.inputs[0]), sums] + [scale, bias].compactMap { $0 },
                            tasks: channels, work: 2 * outer * channels * inner) { b in
            let (topDiff, x, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { ch in
                let (product, plain) = b.channelSums(topDiff, x, channel: ch, outer: b.index(outer), channels: b.index(channels), inner: inner, width: lanes)
                result[ch] = product.value
                result[ch + channels] = plain.value
                if scale != nil { b.operand(3)[ch] = accumulate ? b.operand(3)[ch] + product.value : product.value }
                if bias != nil { b.operand(scale != nil ? 4 : 3)[ch] = plain.value + b.operand(scale != nil ? 4 : 3)[ch] }
            }
        }
        diffOf[node.inputs[0]] = dy.buffer
        foldedScales[batchNorm.id] = (parameter(node, 0).data, sums)
    }

    /// Bias backward: the input diff is the top diff itself (shared, as Caffe's in-place bias
    /// does); the bias diff is Σ dy per channel, accumulated into a parameter, written into a
    /// second bottom's diff.
    mutating func lowerBiasBackward(_ node: Node) throws {
        let p = node.layer.biasParam
        let input = node.inputs[0]
        let twoBottoms = node.inputs.count > 1
        let axes = twoBottoms ? shape(node.inputs[1]).count : Int(p.numAxes)
        let split = try base.channelSplit(node, shape: shape(input), axis: Int(p.axis), axes: axes)
        let dy = try topDiff(node, node.outputs[0])
        if twoBottoms ? analysis.writesBottomDiff(node, 1) : propagatesToParameter(node, 0) {
            let target = twoBottoms ? bottomDiff(node, 1) : parameter(node, 0).diff
            if twoBottoms { try base.emitFill(node, target, count: split.channels, value: 0) }
            try emitBiasGradient(node, topDiff: dy, biasDiff: target, outer: split.outer, channels: split.channels, inner: split.inner)
        }
        if analysis.writesBottomDiff(node, 0) { diffOf[input] = dy.buffer }
    }

    // MARK: LRN

    /// LRN backward. ACROSS_CHANNELS, with `s = k + α/n·Σ_window x²` recomputed into a scratch
    /// buffer: `dx_c = dy_c·s_c^−β − (2αβ/n)·x_c·Σ_{|c'−c|≤pre} dy_c'·y_c'/s_c'`.
    /// WITHIN_CHANNEL (Caffe's square → AVE pool → power → product), with `u = 1 + α·avg(x²)` over
    /// the padded window of size P: `dx_j = dy_j·u_j^−β − 2αβ·x_j·Σ_{i: j∈win(i)} dy_i·x_i·u_i^(−β−1)/P_i`.
    mutating func lowerLRNBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let p = try node.lrnAttributes()
        let input = node.inputs[0], dims = shape(input)
        let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let size = p.localSize, pre = (size - 1) / 2, plane = h * w
        let (alpha, beta, k) = (p.alpha, p.beta, p.k)
        let x = data(input), y = data(node.outputs[0])
        let dy = try topDiff(node, node.outputs[0])
        let scale = Operand(base.scratch(node, "scale", count: count(input)))
        let ratio = Operand(base.scratch(node, "ratio", count: count(input)))
        let dx = bottomDiff(node, 0)
        switch p.region {
        case .acrossChannels:
            let signature = "lrn.across.grad c\(c) hw\(plane) n\(size) a\(alpha.bitPattern) b\(beta.bitPattern) k\(k.bitPattern)"
            try base.emitKernel(node, signature + " scale", operands: [x, y, dy, scale, ratio], tasks: n * c, work: count(input) * size) { b in
                let (x, y, topDiff, s, r) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
                b.forEachTask { task in
                    let channel = task % c, image = task / c, start = task * plane
                    b.loop(0..<plane) { i in s[start + i] = b.constant(k) }
                    b.loop(from: b.max(channel - pre, b.index(0)), to: b.min(channel - pre + size, b.index(c))) { other in
                        b.loop(0..<plane) { i in
                            let v = x[(image * c + other) * plane + i]
                            s[start + i] = s[start + i] + alpha / Float(size) * (v * v)
                        }
                    }
                    b.loop(0..<plane) { i in r[start + i] = topDiff[start + i] * y[start + i] / s[start + i] }
                }
            }
            let factor = 2 * alpha * beta / Float(size)
            try base.emitKernel(node, signature + " apply", operands: [x, dy, scale, ratio, dx], tasks: n * c, work: count(input) * size) { b in
                let (x, topDiff, s, r, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
                b.forEachTask { task in
                    let channel = task % c, image = task / c, start = task * plane
                    b.loop(0..<plane) { i in result[start + i] = b.constant(0) }
                    b.loop(from: b.max(channel - pre, b.index(0)), to: b.min(channel + pre + 1, b.index(c))) { other in
                        b.loop(0..<plane) { i in result[start + i] = result[start + i] + r[(image * c + other) * plane + i] }
                    }
                    b.loop(0..<plane) { i in
                        let at = start + i
                        result[at] = topDiff[at] * b.pow(s[at], b.constant(-beta)) - factor * x[at] * result[at]
                    }
                }
            }
        case .withinChannel:
            let signature = "lrn.within.grad h\(h)w\(w) n\(size) a\(alpha.bitPattern) b\(beta.bitPattern)"
            try base.emitKernel(node, signature + " scale", operands: [x, dy, scale, ratio], tasks: n * c, work: count(input) * size * size) { b in
                let (x, topDiff, u, r) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
                b.forEachTask { task in
                    let start = task * plane
                    b.loop(0..<h) { oy in
                        b.loop(0..<w) { ox in
                            let y0 = oy - pre, x0 = ox - pre
                            let y1 = b.min(y0 + size, b.index(h + pre)), x1 = b.min(x0 + size, b.index(w + pre))
                            let window = b.float((y1 - y0) * (x1 - x0))
                            let sum = b.variable(b.constant(0))
                            b.loop(from: b.max(y0, b.index(0)), to: b.min(y1, b.index(h))) { iy in
                                b.loop(from: b.max(x0, b.index(0)), to: b.min(x1, b.index(w))) { ix in
                                    let v = x[start + iy * w + ix]
                                    sum.value = sum.value + v * v
                                }
                            }
                            let at = start + oy * w + ox
                            let value = alpha * (sum.value / window) + 1
                            u[at] = value
                            r[at] = topDiff[at] * x[at] * b.pow(value, b.constant(-beta - 1)) / window
                        }
                    }
                }
            }
            let factor = 2 * alpha * beta
            try base.emitKernel(node, signature + " apply", operands: [x, dy, scale, ratio, dx], tasks: n * c, work: count(input) * size * size) { b in
                let (x, topDiff, u, r, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
                b.forEachTask { task in
                    let start = task * plane
                    b.loop(0..<h) { jy in
                        b.loop(0..<w) { jx in
                            let sum = b.variable(b.constant(0))
                            b.loop(from: b.max(jy - pre, b.index(0)), to: b.min(jy + pre + 1, b.index(h))) { iy in
                                b.loop(from: b.max(jx - pre, b.index(0)), to: b.min(jx + pre + 1, b.index(w))) { ix in
                                    sum.value = sum.value + r[start + iy * w + ix]
                                }
                            }
                            let at = start + jy * w + jx
                            result[at] = topDiff[at] * b.pow(u[at], b.constant(-beta)) - factor * x[at] * sum.value
                        }
                    }
                }
            }
        }
    }
}

extension KernelBuilder {
    /// One channel's Σ dy·x and Σ dy over `outer` rows of `inner` values (rows `channels` apart),
    /// each row in vectors (`rowSums`), the rows added in order: what BatchNorm's and Scale's
    /// backward passes sum per channel.
    func channelSums(_ dy: Buffer, _ x: Buffer, channel: Index, outer: Index, channels: Index, inner: Int, width: Int) -> (Variable, Variable) {
        let product = variable(constant(0)), plain = variable(constant(0))
        loop(from: index(0), to: outer, unrolled: false) { o in
            let row = rowSums(2, count: inner, from: (o * channels + channel) * inner, width: width) { i, mask in
                let d = dy.load(i, mask)
                return [d * x.load(i, mask), d]
            }
            product.value = product.value + row[0]
            plain.value = plain.value + row[1]
        }
        return (product, plain)
    }
}
