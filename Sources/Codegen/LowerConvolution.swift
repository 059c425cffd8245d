import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Convolution as Caffe computes it: per image, unfold the input into columns with a JIT'd,
    /// shape-specialized im2col (skipped for 1×1 stride-1 unpadded kernels, whose input already is
    /// the column matrix), multiply each group's weights by its columns with `sgemm`, then add the
    /// bias per output channel in one epilogue kernel over the whole output.
    ///
    /// Shapes: input N×C×H×W, weights O×(C/G)×KH×KW, output N×O×OH×OW; for group g,
    /// `out[g] (O/G × OH·OW) = W[g] (O/G × K) · columns[g] (K × OH·OW)` with `K = C/G·KH·KW`.
    /// A layer with several bottoms applies the same weights to each (Caffe's shared-weight form).
    mutating func lowerConvolution(_ node: Node) throws {
        let p = node.layer.convolutionParam
        let blobs = try parameterBlobs(node)
        guard let first = node.inputs.first else { return }
        let geometry = try ConvolutionGeometry(p, rank: shape(first).count)
        guard geometry.channelAxis == 1, shape(first).count == 4 else {
            throw unsupported(node, "only 2-D convolution over N×C×H×W blobs is lowered so far (this one has \(shape(first).count - 2) spatial axes)")
        }
        let weights = constant(node, "weights", blobs[0])
        let bias = geometry.biasTerm ? constant(node, "bias", blobs[1]) : nil
        for (input, output) in zip(node.inputs, node.outputs) {
            try lowerConvolution(node, geometry, input: input, output: output, weights: weights, bias: bias)
        }
    }

    private mutating func lowerConvolution(_ node: Node, _ g: ConvolutionGeometry, input: ValueID, output: ValueID,
                                           weights: BufferID, bias: BufferID?) throws {
        let (n, c, h, w) = (shape(input)[0], shape(input)[1], shape(input)[2], shape(input)[3])
        let (o, oh, ow) = (shape(output)[1], shape(output)[2], shape(output)[3])
        let groups = g.group
        let (kh, kw) = (g.kernel[0], g.kernel[1])
        let k = c / groups * kh * kw, spatial = oh * ow
        let x = buffer(input), y = buffer(output)
        let isPointwise = g.kernel.allSatisfy { $0 == 1 } && g.stride.allSatisfy { $0 == 1 } && g.pad.allSatisfy { $0 == 0 }
        let columns = isPointwise ? nil : scratch(node, "columns", count: c * kh * kw * spatial)
        for image in 0..<n {
            let source: Operand
            if let columns {
                try emitIm2col(node, g, channels: c, height: h, width: w, outHeight: oh, outWidth: ow,
                               input: Operand(x, offset: image * c * h * w), columns: Operand(columns))
                source = Operand(columns)
            } else {
                source = Operand(x, offset: image * c * h * w)
            }
            var gemm = GemmStep(m: o / groups, n: spatial, k: k, a: Operand(weights), lda: k,
                                b: source, ldb: spatial, c: Operand(y, offset: image * o * spatial), ldc: spatial)
            gemm.repeats = groups
            gemm.strideA = o / groups * k
            gemm.strideB = k * spatial
            gemm.strideC = o / groups * spatial
            emitGemm(node, gemm)
        }
        if let bias {
            try emitChannelAffine(node, input: Operand(y), output: Operand(y), outer: n, channels: o, inner: spatial,
                                  shift: Operand(bias))
        }
    }

    /// Unfolds one C×H×W image into a (C·KH·KW) × (OH·OW) column matrix, zero where a window
    /// reaches into the padding. One task per input channel. For each kernel column `kx` the range
    /// of output columns that land inside the image is a compile-time constant, so the generated
    /// rows are a zero run, a strided copy and a zero run, with no per-element bounds checks.
    private mutating func emitIm2col(_ node: Node, _ g: ConvolutionGeometry, channels c: Int, height h: Int, width w: Int,
                                     outHeight oh: Int, outWidth ow: Int, input: Operand, columns: Operand) throws {
        let (kh, kw) = (g.kernel[0], g.kernel[1])
        let (sh, sw) = (g.stride[0], g.stride[1]), (ph, pw) = (g.pad[0], g.pad[1]), (dh, dw) = (g.dilation[0], g.dilation[1])
        let signature = "im2col c\(c) h\(h)w\(w) k\(kh)x\(kw) s\(sh)x\(sw) p\(ph)x\(pw) d\(dh)x\(dw) o\(oh)x\(ow)"
        try emitKernel(node, signature, operands: [input, columns], tasks: c, work: c * kh * kw * oh * ow) { b in
            let (x, col) = (b.operand(0), b.operand(1))
            b.forEachTask { channel in
                b.loop(0..<kh) { ky in
                    for kx in 0..<kw {
                        // Output columns whose input column ox·sw − pw + kx·dw lies in 0..<w.
                        let shift = kx * dw - pw
                        let lower = Swift.min(ow, Swift.max(0, ceilDiv(-shift, sw)))
                        let upper = Swift.max(lower, Swift.min(ow, ceilDiv(w - shift, sw)))
                        b.loop(0..<oh) { oy in
                            let iy = oy * sh + ky * dh - ph
                            let inside = iy >= 0 && iy < h
                            let row = channel * (h * w) + b.max(b.index(0), b.min(iy, b.index(h - 1))) * w
                            let out = ((channel * kh + ky) * kw + kx) * (oh * ow) + oy * ow
                            b.loop(0..<lower) { ox in col[out + ox] = b.constant(0) }
                            b.loop(lower..<upper) { ox in
                                col[out + ox] = b.select(inside, x[row + ox * sw + shift], b.constant(0))
                            }
                            b.loop(upper..<ow) { ox in col[out + ox] = b.constant(0) }
                        }
                    }
                }
            }
        }
    }

    /// InnerProduct: `y (M×N) = x (M×K) · Wᵀ + bias`, where M is the product of the axes before
    /// `axis` and K of the rest; with `transpose: true` the stored weights are K×N and used as is.
    mutating func lowerInnerProduct(_ node: Node) throws {
        let p = node.layer.innerProductParam
        let blobs = try parameterBlobs(node)
        let weights = constant(node, "weights", blobs[0])
        let bias = p.biasTerm ? constant(node, "bias", blobs[1]) : nil
        let input = node.inputs[0], output = node.outputs[0]
        guard let axis = graph.values[input].shape.canonicalAxis(Int(p.axis)) else {
            throw unsupported(node, "axis \(p.axis) is out of range")
        }
        let m = shape(input)[..<axis].reduce(1, *), k = shape(input)[axis...].reduce(1, *), n = Int(p.numOutput)
        let x = buffer(input), y = buffer(output)
        var gemm = GemmStep(m: m, n: n, k: k, a: Operand(x), lda: k, b: Operand(weights), ldb: p.transpose ? n : k,
                            c: Operand(y), ldc: n)
        gemm.transB = !p.transpose
        emitGemm(node, gemm)
        if let bias {
            try emitChannelAffine(node, input: Operand(y), output: Operand(y), outer: m, channels: n, inner: 1, shift: Operand(bias))
        }
    }
}

/// `⌈a / b⌉` for a positive `b` and any `a`.
func ceilDiv(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? (a + b - 1) / b : -((-a) / b)
}
