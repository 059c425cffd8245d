import Graph
import Runtime

/// When an inference convolution runs as Winograd F(2×2, 3×3) instead of im2col + GEMM: a 3×3,
/// stride-1, undilated, ungrouped 2-D convolution with at least `minimumTiles` 2×2 output tiles
/// per image (smaller images make the sixteen GEMMs too narrow to pay) and whose transformed
/// input and products take at most `maximumBytes` per image. Nil in `Lowering` disables it
/// (training keeps Caffe's im2col, whose constants are the parameters themselves).
public struct WinogradPolicy: Sendable {
    public var minimumTiles: Int
    public var maximumBytes: Int

    public init(minimumTiles: Int = 100, maximumBytes: Int = 64 << 20) {
        self.minimumTiles = minimumTiles
        self.maximumBytes = maximumBytes
    }
}

extension Lowering {
    /// Whether `node` (weights O×C×3×3) on an input of `dims` runs as Winograd under the policy.
    func usesWinograd(_ node: Node, _ g: ConvolutionGeometry, input dims: [Int], outputs o: Int) -> Bool {
        guard let policy = winograd, dims.count == 4, g.group == 1, g.kernel == [3, 3], g.stride == [1, 1], g.dilation == [1, 1],
              g.pad.allSatisfy({ $0 <= 2 }) else { return false }
        let (oh, ow) = (dims[2] + 2 * g.pad[0] - 2, dims[3] + 2 * g.pad[1] - 2)
        guard oh > 0, ow > 0 else { return false }
        let tiles = (oh + 1) / 2 * ((ow + 1) / 2)
        return tiles >= policy.minimumTiles && 16 * tiles * (dims[1] + o) * MemoryLayout<Float>.size <= policy.maximumBytes
    }

    /// The weights transformed once, at compile time: `U = G·g·Gᵀ` for each 3×3 filter `g`, laid
    /// out as 16 matrices O×C (one per position of the 4×4 transform), the GEMMs' left operands.
    /// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
    static func winogradWeights(_ weights: [Float], outputs o: Int, channels c: Int, into u: UnsafeMutablePointer<Float>) {
        for oc in 0..<(o * c) {
            let g = Array(weights[(oc * 9)..<(oc * 9 + 9)])
            // t = G·g (4×3), then U = t·Gᵀ (4×4).
            var t = [Float](repeating: 0, count: 12)
            for j in 0..<3 {
                let (a, b, d) = (g[j], g[3 + j], g[6 + j])
                t[j] = a
                t[3 + j] = 0.5 * (a + b + d)
                t[6 + j] = 0.5 * (a - b + d)
                t[9 + j] = d
            }
            for i in 0..<4 {
                let (a, b, d) = (t[i * 3], t[i * 3 + 1], t[i * 3 + 2])
                let row = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
                for j in 0..<4 { u[(i * 4 + j) * o * c + oc] = row[j] }
            }
        }
    }

    /// Winograd F(2×2, 3×3) for one image: the input transform writes `V = Bᵀ·d·B` for every
    /// 4×4 input patch `d` (tiles 2 apart, zero outside the image) as 16 matrices C×T; sixteen
    /// GEMMs give `M = U·V` (O×T each); the output transform writes `Aᵀ·m·A` (2×2 outputs per tile),
    /// adds the bias and applies the fused activation. 2.25× fewer multiplications than the direct
    /// product, for two cheap passes over the tiles; the float rounding differs from Caffe's
    /// im2col order by ~1e-6 of the output's magnitude.
    mutating func emitWinograd(_ node: Node, channels c: Int, outputs o: Int, image: [Int], result: [Int], pad: [Int],
                               input: Operand, output: Operand, transformed u: BufferID, bias: Operand?,
                               scratch v: Operand, products m: Operand) throws {
        let (h, w) = (image[0], image[1]), (oh, ow) = (result[0], result[1])
        let (th, tw) = ((oh + 1) / 2, (ow + 1) / 2), tiles = th * tw
        let (ph, pw) = (pad[0], pad[1])
        try emitKernel(node, "winograd.input c\(c) h\(h)w\(w) p\(ph)x\(pw) t\(th)x\(tw)", operands: [input, v], tasks: c,
                       work: c * tiles * 16) { b in
            let (x, transformed) = (b.operand(0), b.operand(1))
            b.forEachTask { channel in
                b.loop(0..<th) { ty in
                    b.loop(0..<tw) { tx in
                        var d: [[Scalar]] = []
                        for i in 0..<4 {
                            let iy = ty * 2 + (i - ph)
                            let rowInside = iy >= 0 && iy < h
                            let row = channel * (h * w) + b.max(b.index(0), b.min(iy, b.index(h - 1))) * w
                            d.append((0..<4).map { j in
                                let ix = tx * 2 + (j - pw)
                                let column = b.max(b.index(0), b.min(ix, b.index(w - 1)))
                                return b.select(rowInside && (ix >= 0 && ix < w), x[row + column], b.constant(0))
                            })
                        }
                        // Bᵀ·d, then ·B: rows (columns) r0 − r2, r1 + r2, r2 − r1, r1 − r3.
                        func transform(_ r: [Scalar]) -> [Scalar] { [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]] }
                        let left = (0..<4).map { j in transform((0..<4).map { d[$0][j] }) }   // left[j][i] = (Bᵀd)[i][j]
                        let tile = ty * tw + tx
                        for i in 0..<4 {
                            let values = transform((0..<4).map { left[$0][i] })
                            for j in 0..<4 { transformed[(i * 4 + j) * (c * tiles) + channel * tiles + tile] = values[j] }
                        }
                    }
                }
            }
        }
        var gemm = GemmStep(m: o, n: tiles, k: c, a: Operand(u), lda: c, b: v, ldb: tiles, c: m, ldc: tiles)
        gemm.repeats = 16
        (gemm.strideA, gemm.strideB, gemm.strideC) = (o * c, c * tiles, o * tiles)
        emitGemm(node, gemm)
        let activation = node.fusedActivation
        let signature = "winograd.output o\(o) t\(th)x\(tw) out\(oh)x\(ow) bias=\(bias != nil)" + (activation.map { " " + $0.signature } ?? "")
        try emitKernel(node, signature, operands: [m, output] + (bias.map { [$0] } ?? []), tasks: o, work: o * tiles * 16) { b in
            let (products, y) = (b.operand(0), b.operand(1))
            let shift = bias.map { _ in b.operand(2) }
            b.forEachTask { channel in
                let offset = shift.map { $0[channel] }
                /// Writes the `rows`×`columns` corner of the tile's 2×2 outputs (1 at an odd edge).
                func tile(_ ty: Index, _ tx: Index, rows: Int, columns: Int) {
                    let at = channel * tiles + ty * tw + tx
                    let q = (0..<16).map { products[$0 * (o * tiles) + at] }
                    // Aᵀ·q·A with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
                    func reduce(_ r: [Scalar]) -> [Scalar] { [r[0] + r[1] + r[2], r[1] - r[2] - r[3]] }
                    let left = (0..<4).map { j in reduce((0..<4).map { q[$0 * 4 + j] }) }   // left[j][i] = (Aᵀq)[i][j]
                    for i in 0..<rows {
                        let values = reduce((0..<4).map { left[$0][i] })
                        for j in 0..<columns {
                            var value = values[j]
                            if let offset { value = value + offset }
                            if let activation { value = activation.apply(b, value) }
                            y[channel * (oh * ow) + (ty * 2 + i) * ow + tx * 2 + j] = value
                        }
                    }
                }
                let (fullRows, fullColumns) = (oh / 2, ow / 2)
                b.loop(0..<fullRows) { ty in
                    b.loop(0..<fullColumns) { tx in tile(ty, tx, rows: 2, columns: 2) }
                    if ow % 2 == 1 { tile(ty, b.index(fullColumns), rows: 2, columns: 1) }
                }
                if oh % 2 == 1 {
                    b.loop(0..<fullColumns) { tx in tile(b.index(fullRows), tx, rows: 1, columns: 2) }
                    if ow % 2 == 1 { tile(b.index(fullRows), b.index(fullColumns), rows: 1, columns: 1) }
                }
            }
        }
    }
}
