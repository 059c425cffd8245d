import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// How a per-channel affine kernel combines an element with its channel's two values.
    enum AffineForm: String {
        /// `x · scale + shift` (either may be absent): Scale, Bias, convolution and IP bias.
        case scaleShift = "mul-add"
        /// `(x − mean) / deviation`: BatchNorm with stored statistics, rounded as Caffe rounds it.
        case normalize = "sub-div"
    }

    /// Emits `y[o][c][i] = f(x[o][c][i], first[c], second[c])` over an outer × channels × inner
    /// layout, one task per (outer, channel) row. `first`/`second` are the scale and shift (or mean
    /// and deviation); either may be nil for `.scaleShift`. `input` and `output` may be the same.
    mutating func emitChannelAffine(_ node: Node, input: Operand, output: Operand, outer: Int, channels: Int, inner: Int,
                                    scale: Operand? = nil, shift: Operand? = nil, form: AffineForm = .scaleShift) throws {
        // Channels and the plane's size are read at run time (`KernelExtents`): one kernel per form.
        let extents = try self.extents(node, "affine", [channels, inner])
        let operands = [input, output, extents] + [scale, shift].compactMap { $0 }
        let signature = "affine \(form.rawValue) scale=\(scale != nil) shift=\(shift != nil)"
        try emitKernel(node, signature, operands: operands, tasks: outer * channels, work: outer * channels * inner) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            let channels = b.extent(b.operand(2), 0), inner = b.extent(b.operand(2), 1)
            let first = scale.map { _ in b.operand(3) }
            let second = shift.map { _ in b.operand(scale == nil ? 3 : 4) }
            b.forEachTask { row in
                let channel = row % channels
                let s = first.map { $0[channel] }, t = second.map { $0[channel] }
                b.loop(from: b.index(0), to: inner) { i in
                    let at = row * inner + i
                    var value = x[at]
                    switch form {
                    case .scaleShift:
                        if let s { value = value * s }
                        if let t { value = value + t }
                    case .normalize:
                        value = (value - s!) / t!
                    }
                    y[at] = value
                }
            }
        }
    }

    /// The outer × channels × inner split of `shape` for a parameter covering axes
    /// `axis..<axis + axes` (`axes == -1`: to the end), as Caffe's Scale and Bias layers use it.
    func channelSplit(_ node: Node, shape: [Int], axis rawAxis: Int, axes: Int) throws -> (outer: Int, channels: Int, inner: Int) {
        guard let axis = TensorShape(shape).canonicalAxis(rawAxis) else { throw unsupported(node, "axis \(rawAxis) is out of range for \(shape)") }
        let end = axes < 0 ? shape.count : axis + axes
        guard end <= shape.count else { throw unsupported(node, "axes \(axis)..<\(end) extend past the input's \(shape.count) axes") }
        return (shape[..<axis].reduce(1, *), shape[axis..<end].reduce(1, *), shape[end...].reduce(1, *))
    }

    /// BatchNorm in inference form: `(x − mean) / sqrt(var + eps)` per channel, with mean and
    /// variance read from the stored sums divided by the stored scale factor (0 when that factor is 0),
    /// precomputed at compile time exactly as Caffe computes them in float.
    mutating func lowerBatchNorm(_ node: Node) throws {
        let p = node.layer.batchNormParam
        let useGlobalStats = p.hasUseGlobalStats ? p.useGlobalStats : graph.phase == .test
        guard useGlobalStats else {
            throw unsupported(node, "batch statistics (use_global_stats: false or TRAIN phase) are not lowered yet",
                              hint: "for inference, use the TEST phase (stored statistics)")
        }
        let blobs = try parameterBlobs(node)
        let input = node.inputs[0]
        let dims = shape(input)
        let channels = dims.count > 1 ? dims[1] : 1
        let factor: Float = blobs[2][0] == 0 ? 0 : 1 / blobs[2][0]
        let eps = p.eps
        let mean = blobs[0].map { $0 * factor }
        let deviation = blobs[1].map { ($0 * factor + eps).squareRoot() }
        let output = elementwiseOutput(node)
        try emitChannelAffine(node, input: Operand(buffer(input)), output: Operand(output),
                              outer: dims.first ?? 1, channels: channels, inner: count(input) / max(1, (dims.first ?? 1) * channels),
                              scale: Operand(constant(node, "mean", mean)), shift: Operand(constant(node, "deviation", deviation)),
                              form: .normalize)
    }

    /// Scale: `y = x · scale (+ bias)`, the scale a parameter (one bottom) or the second bottom,
    /// broadcast over the axes after `axis + num_axes`.
    mutating func lowerScale(_ node: Node) throws {
        let p = node.layer.scaleParam
        let input = node.inputs[0]
        let blobs = try parameterBlobs(node)
        var scale: Operand
        var axes = Int(p.numAxes)
        if node.inputs.count > 1 {
            scale = Operand(buffer(node.inputs[1]))
            axes = shape(node.inputs[1]).count
        } else {
            scale = Operand(parameter(node, 0, "scale", blobs))
        }
        let bias = p.biasTerm ? Operand(parameter(node, node.inputs.count > 1 ? 0 : 1, "bias", blobs)) : nil
        let split = try channelSplit(node, shape: shape(input), axis: Int(p.axis), axes: axes)
        let output = elementwiseOutput(node)
        try emitChannelAffine(node, input: Operand(buffer(input)), output: Operand(output),
                              outer: split.outer, channels: split.channels, inner: split.inner, scale: scale, shift: bias)
    }

    /// Bias: `y = x + bias`, the bias a parameter (one bottom) or the second bottom.
    mutating func lowerBias(_ node: Node) throws {
        let p = node.layer.biasParam
        let input = node.inputs[0]
        var bias: Operand
        var axes = Int(p.numAxes)
        if node.inputs.count > 1 {
            bias = Operand(buffer(node.inputs[1]))
            axes = shape(node.inputs[1]).count
        } else {
            bias = Operand(parameter(node, 0, "bias", try parameterBlobs(node)))
        }
        let split = try channelSplit(node, shape: shape(input), axis: Int(p.axis), axes: axes)
        let output = elementwiseOutput(node)
        try emitChannelAffine(node, input: Operand(buffer(input)), output: Operand(output),
                              outer: split.outer, channels: split.channels, inner: split.inner, shift: bias)
    }

    /// LRN. ACROSS_CHANNELS: `y = x · (k + α/n · Σ x²)^−β`, the sum over the `n` channels centred on
    /// this one (clipped to the image's channels). WITHIN_CHANNEL: `y = x · (1 + α · avg x²)^−β`,
    /// the average over an n×n window padded by (n−1)/2 and divided by the padded window's size —
    /// Caffe builds it from Power and AVE Pooling layers and hard-codes the 1 (ignoring `k`).
    /// One task per (image, channel) plane; the output is a separate buffer (never in place).
    /// `s^−β`. For AlexNet's and GoogLeNet's β = 0.75 it is `1/√(s·√s)`: square roots vectorize,
    /// a `powf` call does not, and the two differ by a few ulps (within the golden tolerance).
    static func inversePower(_ b: KernelBuilder, _ s: Scalar, _ beta: Float) -> Scalar {
        switch beta {
        case 0.75: return 1 / b.sqrt(s * b.sqrt(s))
        case 0.5: return 1 / b.sqrt(s)
        case 1: return 1 / s
        default: return b.pow(s, b.constant(-beta))
        }
    }

    mutating func lowerLRN(_ node: Node) throws {
        let p = try node.lrnAttributes()
        let input = node.inputs[0], dims = shape(input)
        let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let size = p.localSize, pre = (size - 1) / 2
        let (alpha, beta, k) = (p.alpha, p.beta, p.k)
        let x = Operand(buffer(input)), y = Operand(buffer(node.outputs[0]))
        let plane = h * w
        switch p.region {
        case .acrossChannels:
            let signature = "lrn.across c\(c) hw\(plane) n\(size) a\(alpha.bitPattern) b\(beta.bitPattern) k\(k.bitPattern)"
            try emitKernel(node, signature, operands: [x, y], tasks: n * c, work: n * c * plane * size) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                let alphaOverSize = alpha / Float(size)
                b.forEachTask { task in
                    let channel = task % c, image = task / c
                    let base = task * plane
                    b.loop(0..<plane) { i in y[base + i] = b.constant(k) }
                    let first = b.max(channel - pre, b.index(0)), last = b.min(channel - pre + size, b.index(c))
                    b.loop(from: first, to: last) { other in
                        let source = (image * c + other) * plane
                        b.loop(0..<plane) { i in
                            let v = x[source + i]
                            y[base + i] = y[base + i] + alphaOverSize * (v * v)
                        }
                    }
                    b.loop(0..<plane) { i in y[base + i] = Self.inversePower(b, y[base + i], beta) * x[base + i] }
                }
            }
        case .withinChannel:
            let signature = "lrn.within h\(h)w\(w) n\(size) a\(alpha.bitPattern) b\(beta.bitPattern)"
            try emitKernel(node, signature, operands: [x, y], tasks: n * c, work: n * c * plane * size * size) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { task in
                    let base = task * plane
                    b.loop(0..<h) { oy in
                        b.loop(0..<w) { ox in
                            let y0 = oy - pre, x0 = ox - pre
                            let y1 = b.min(y0 + size, b.index(h + pre)), x1 = b.min(x0 + size, b.index(w + pre))
                            let windowSize = b.float((y1 - y0) * (x1 - x0))
                            let sum = b.variable(b.constant(0))
                            b.loop(from: b.max(y0, b.index(0)), to: b.min(y1, b.index(h))) { iy in
                                b.loop(from: b.max(x0, b.index(0)), to: b.min(x1, b.index(w))) { ix in
                                    let v = x[base + iy * w + ix]
                                    sum.value = sum.value + v * v
                                }
                            }
                            let at = base + oy * w + ox
                            let scale = b.pow(alpha * (sum.value / windowSize) + 1, b.constant(-beta))
                            y[at] = x[at] * scale
                        }
                    }
                }
            }
        }
    }
}
