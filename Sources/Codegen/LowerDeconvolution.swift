import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Deconvolution (transposed convolution) as Caffe computes it (`DeconvolutionLayer::Forward_cpu`,
    /// i.e. convolution's backward-data): per image and group, `columns (O/G·KH·KW × H·W) =
    /// W[g]ᵀ · x[g]` with `sgemm` (weights stored C×(O/G)×KH×KW), then a JIT'd col2im folds the
    /// columns into the O×OH×OW output, then the bias is added per output channel.
    ///
    /// col2im is generated in gather form: each output pixel sums the column entries of the taps
    /// that land on it, in Caffe's (ky, kx) order starting from zero, so the float sums round
    /// exactly as Caffe's scatter loop does. One task per output channel. 2-D only.
    mutating func lowerDeconvolution(_ node: Node) throws {
        let blobs = try parameterBlobs(node)
        guard let first = node.inputs.first else { return }
        let g = try node.convolutionGeometry()
        guard g.channelAxis == 1, g.kernel.count == 2 else {
            throw unsupported(node, "only 2-D deconvolution over N×C×H×W blobs with the channel axis 1 is lowered so far")
        }
        let weights = parameter(node, 0, "weights", blobs)
        let bias = g.biasTerm ? parameter(node, 1, "bias", blobs) : nil
        for (input, output) in zip(node.inputs, node.outputs) {
            let (n, c, h, w) = (shape(input)[0], shape(input)[1], shape(input)[2], shape(input)[3])
            let (o, oh, ow) = (shape(output)[1], shape(output)[2], shape(output)[3])
            let groups = g.group
            let (kh, kw) = (g.kernel[0], g.kernel[1])
            let rows = o / groups * kh * kw, spatial = h * w, inner = c / groups
            let x = buffer(input), y = buffer(output)
            let columns = scratch(node, "columns", count: o * kh * kw * spatial)
            for item in 0..<n {
                // columns[g] (rows × spatial) = W[g]ᵀ (rows × C/G) · x[g] (C/G × spatial)
                var gemm = GemmStep(m: rows, n: spatial, k: inner, a: Operand(weights), lda: rows,
                                    b: Operand(x, offset: item * c * spatial), ldb: spatial, c: Operand(columns), ldc: spatial)
                gemm.transA = true
                gemm.repeats = groups
                gemm.strideA = inner * rows
                gemm.strideB = inner * spatial
                gemm.strideC = rows * spatial
                emitGemm(node, gemm)
                try emitCol2im(node, g, channels: o, image: (oh, ow), columnsExtent: (h, w),
                               columns: Operand(columns), output: Operand(y, offset: item * o * oh * ow))
            }
            if let bias {
                try emitChannelAffine(node, input: Operand(y), output: Operand(y), outer: n, channels: o, inner: oh * ow,
                                      shift: Operand(bias))
            }
        }
    }

    /// Folds a (C·KH·KW) × (CH·CW) column matrix into a C×H×W image (Caffe's `col2im_cpu`, written
    /// as a gather): pixel (y, x) adds column row (c, ky, kx) at position ((y + pad − ky·dil) / stride,
    /// …) when that division is exact and in range, for ky then kx in increasing order.
    private mutating func emitCol2im(_ node: Node, _ g: ConvolutionGeometry, channels c: Int, image: (Int, Int),
                                     columnsExtent: (Int, Int), columns: Operand, output: Operand) throws {
        let (h, w) = image, (ch, cw) = columnsExtent
        let (kh, kw) = (g.kernel[0], g.kernel[1]), (sh, sw) = (g.stride[0], g.stride[1])
        let (ph, pw) = (g.pad[0], g.pad[1]), (dh, dw) = (g.dilation[0], g.dilation[1])
        let signature = "col2im c\(c) h\(h)w\(w) k\(kh)x\(kw) s\(sh)x\(sw) p\(ph)x\(pw) d\(dh)x\(dw) col\(ch)x\(cw)"
        try emitKernel(node, signature, operands: [columns, output], tasks: c, work: c * h * w * kh * kw) { b in
            let (col, y) = (b.operand(0), b.operand(1))
            b.forEachTask { channel in
                b.loop(0..<h) { oy in
                    b.loop(0..<w) { ox in
                        var sum = b.constant(0)
                        for ky in 0..<kh {
                            let ny = oy + (ph - ky * dh)
                            let iy = b.max(b.index(0), b.min(ny / sh, b.index(ch - 1)))
                            let rowValid = ny >= 0 && (ny % sh) < 1 && (ny / sh) < ch
                            for kx in 0..<kw {
                                let nx = ox + (pw - kx * dw)
                                let ix = b.max(b.index(0), b.min(nx / sw, b.index(cw - 1)))
                                let valid = rowValid && nx >= 0 && (nx % sw) < 1 && (nx / sw) < cw
                                let row = (channel * (kh * kw) + (ky * kw + kx)) * (ch * cw)
                                sum = b.select(valid, sum + col[row + iy * cw + ix], sum)
                            }
                        }
                        y[channel * (h * w) + oy * w + ox] = sum
                    }
                }
            }
        }
    }
}
