import Graph
import Runtime

/// A pointwise convolution (1×1, stride 1, no padding, one group) is the product `Y = W · X` of
/// the M×K weights and the image's K×N pixels, with the bias and activation after it. For nets
/// made of such products (MobileNet, SqueezeNet's squeezes, ResNet's bottlenecks) OpenBLAS does
/// three passes over Y besides the product: it zeroes Y (β = 0), it packs both operands on every
/// call, and the epilogue reads Y back for the bias and ReLU. This kernel does one: the weights are
/// packed once at compile time into panels of `rows` output channels, the pixels are read in place
/// (N is contiguous), and each output tile is written once, bias and activation included.
///
/// The tile is `rows` × `vectors`·16 outputs: 24 `<16 x float>` accumulators that stay in the
/// AVX-512 registers through the K loop, each step loading `vectors` pixel vectors and
/// broadcasting `rows` weights. A task is one panel (its weights stay in L1) over one chunk of
/// columns sized so the chunk's pixels stay in L2 while every panel of the task's thread reads them;
/// tasks are ordered image, chunk, panel, so a thread's contiguous share of them reuses its chunks.
/// Columns past the last whole tile run as one masked tile. A residual sum folded into the
/// convolution (`FuseResidual`) is read in the same store: the tile adds what the output buffer
/// (the shortcut's) holds. Used where the host has AVX-512 (with 16 registers the tile would
/// spill) and M is a multiple of `rows`.
enum PointwiseKernel {
    static let rows = 8
    static let vectors = 3
    static let lanes = 16
    static var tileColumns: Int { vectors * lanes }
    /// The pixels one task reads (K × chunk columns) are kept under this size.
    static let chunkBytes = 256 << 10

    /// Writes panels `[M / rows][K][rows]` from Caffe's M×K weights.
    static func pack(_ weights: [Float], outputs m: Int, inputs k: Int, into panels: UnsafeMutablePointer<Float>) {
        weights.withUnsafeBufferPointer { w in
            for panel in 0..<(m / rows) {
                for kk in 0..<k {
                    for r in 0..<rows { panels[(panel * k + kk) * rows + r] = w[(panel * rows + r) * k + kk] }
                }
            }
        }
    }

    /// Whole tiles per task chunk for K input channels.
    static func chunkTiles(inputs k: Int) -> Int { max(1, chunkBytes / (k * tileColumns * MemoryLayout<Float>.size)) }
}

extension Lowering {
    /// Whether `PointwiseKernel` runs this convolution (see its conditions).
    func usesPointwiseKernel(_ g: ConvolutionGeometry, outputs: Int) -> Bool {
        pointwiseKernels && g.isPointwise && g.group == 1 && outputs % PointwiseKernel.rows == 0
    }

    /// Every bottom/top pair of a pointwise convolution by `PointwiseKernel`, its weights packed
    /// once; with `accumulate`, the product is added to what the top's buffer holds (a residual
    /// sum folded in, as the GEMM path's β = 1).
    mutating func lowerPointwise(_ node: Node, weights: [Float], bias: BufferID?, accumulate: Bool = false) throws {
        let (k, m) = (shape(node.inputs[0])[1], shape(node.outputs[0])[1])
        let panels = try preparedConstant(node, "pointwise weights", count: m * k) { target in
            PointwiseKernel.pack(weights, outputs: m, inputs: k, into: target)
        }
        for (input, output) in zip(node.inputs, node.outputs) {
            try emitPointwise(node, batch: shape(input)[0], inputs: k, outputs: m, spatial: shape(output)[2...].reduce(1, *),
                              input: Operand(buffer(input)), output: Operand(buffer(output)), panels: Operand(panels),
                              bias: bias.map { Operand($0) }, accumulate: accumulate)
        }
    }

    /// `y = activation(W · x + bias)` for each of the `n` images, by `PointwiseKernel`; with
    /// `accumulate`, `activation((y + W · x) + bias)`.
    private mutating func emitPointwise(_ node: Node, batch n: Int, inputs k: Int, outputs m: Int, spatial: Int, input: Operand,
                                        output: Operand, panels: Operand, bias: Operand?, accumulate: Bool) throws {
        let (rows, lanes, tileColumns) = (PointwiseKernel.rows, PointwiseKernel.lanes, PointwiseKernel.tileColumns)
        let wholeTiles = spatial / tileColumns, tail = spatial % tileColumns
        let chunkTiles = PointwiseKernel.chunkTiles(inputs: k)
        let chunks = max(1, (wholeTiles + chunkTiles - 1) / chunkTiles), panelCount = m / rows
        let activation = node.fusedActivation
        let signature = "conv.pointwise k\(k) m\(m) n\(spatial) chunk\(chunkTiles) bias=\(bias != nil)" + (accumulate ? " accumulate" : "")
            + (activation.map { " " + $0.signature } ?? "")
        try emitKernel(node, signature, operands: [input, output, panels] + (bias.map { [$0] } ?? []),
                       tasks: n * chunks * panelCount, work: n * m * spatial * k) { b in
            let (x, y, a) = (b.operand(0), b.operand(1), b.operand(2))
            let shift = bias.map { _ in b.operand(3) }
            b.forEachTask { task in
                let image = task / (chunks * panelCount), chunk = (task % (chunks * panelCount)) / panelCount
                let panel = task % panelCount
                let pixels = image * (k * spatial), weights = panel * (k * rows)
                let outputs = image * (m * spatial) + panel * (rows * spatial)
                /// One tile at column `first`: `masks` are its vectors' lanes inside the image.
                func tile(_ first: Index, _ masks: [LaneMask]) {
                    let zero = b.splat(0, width: lanes)
                    let sums = b.loop(0..<k, carrying: Array(repeating: zero, count: rows * masks.count)) { kk, sums in
                        let row = pixels + kk * spatial + first
                        let columns = masks.enumerated().map { j, mask in x.load(row + j * lanes, mask) }
                        var next = sums
                        for r in 0..<rows {
                            let weight = b.splat(a[weights + kk * rows + r], width: lanes)
                            for j in columns.indices { next[r * columns.count + j] = b.fma(weight, columns[j], sums[r * columns.count + j]) }
                        }
                        return next
                    }
                    for r in 0..<rows {
                        let t = shift.map { b.splat($0[panel * rows + r], width: lanes) }
                        for (j, mask) in masks.enumerated() {
                            let at = outputs + r * spatial + first + j * lanes
                            var value = accumulate ? y.load(at, mask) + sums[r * masks.count + j] : sums[r * masks.count + j]
                            if let t { value = value + t }
                            if let activation { value = activation.apply(b, value) }
                            y.store(value, at: at, mask)
                        }
                    }
                }
                let full = Array(repeating: LaneMask(first: lanes, of: lanes), count: PointwiseKernel.vectors)
                b.loop(from: chunk * chunkTiles, to: b.min(chunk * chunkTiles + chunkTiles, b.index(wholeTiles))) { t in
                    tile(t * tileColumns, full)
                }
                if tail > 0 {
                    // Once, in the last chunk's tasks: the loop runs from chunks − 1 to chunk + 1.
                    let masks = stride(from: 0, to: tail, by: lanes).map { LaneMask(first: min(lanes, tail - $0), of: lanes) }
                    b.loop(from: b.index(chunks - 1), to: chunk + 1) { _ in tile(b.index(wholeTiles * tileColumns), masks) }
                }
            }
        }
    }
}
