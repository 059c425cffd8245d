import Dispatch
import Foundation
import Graph
import Runtime

/// A pointer handed to concurrent workers that write disjoint parts of its memory.
private struct UncheckedPointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(_ pointer: UnsafeMutablePointer<Float>) { self.pointer = pointer }
}

/// When an inference convolution runs as Winograd instead of im2col + GEMM: a 3×3, stride-1,
/// undilated, ungrouped 2-D convolution whose transformed input and products take at most
/// `maximumBytes` per image, as F(4×4, 3×3) when the image has at least `largeTileMinimumTiles`
/// 4×4 output tiles, else as F(2×2, 3×3) when it has at least `minimumTiles` 2×2 tiles (smaller
/// images make the GEMMs too narrow to pay). Nil in `Lowering` disables it (training keeps
/// Caffe's im2col, whose constants are the parameters themselves). The defaults were measured on
/// this project's benchmark nets: F(2×2) from 7×7 tiles (14×14 images: VGG16's conv5 5.2 → 3.3
/// ms, ResNet-50's res4 3×3s), F(4×4) from 6×6 tiles (28×28 images: VGG16's conv4 11.9 ms as
/// F(2×2) → 8.4 ms); F(4×4) on 4×4 tiles (14×14) was slower than F(2×2) there.
public struct WinogradPolicy: Sendable {
    public var minimumTiles: Int
    public var maximumBytes: Int
    /// 4×4 output tiles from which F(4×4, 3×3) is used; nil: never (F(2×2, 3×3) only).
    public var largeTileMinimumTiles: Int?

    public init(minimumTiles: Int = 49, maximumBytes: Int = 64 << 20, largeTileMinimumTiles: Int? = 36) {
        self.minimumTiles = minimumTiles
        self.maximumBytes = maximumBytes
        self.largeTileMinimumTiles = largeTileMinimumTiles
    }
}

/// The three matrices of Winograd's minimal filtering F(m×m, 3×3) on α×α input tiles (α = m + 2),
/// from Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks": `Y = Aᵀ·[(G·g·Gᵀ) ⊙
/// (Bᵀ·d·B)]·A` gives the m×m outputs of the 3×3 filter `g` over the tile `d`. F(2×2) multiplies
/// 2.25× less than the direct product, F(4×4) 4× less, at the price of larger constants in the
/// transforms (F(4×4)'s results differ from the direct sum by ~1e-5 of the output's magnitude in
/// float, F(2×2)'s by ~1e-6).
struct WinogradTile: Sendable, Equatable {
    /// Outputs per tile side.
    let m: Int
    /// Bᵀ, α×α.
    let bt: [[Float]]
    /// G, α×3.
    let g: [[Double]]
    /// Aᵀ, m×α.
    let at: [[Float]]

    var alpha: Int { m + 2 }

    static let f2 = WinogradTile(
        m: 2,
        bt: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        g: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        at: [[1, 1, 1, 0], [0, 1, -1, -1]])

    /// Interpolation points 0, ±1, ±2 and ∞.
    static let f4 = WinogradTile(
        m: 4,
        bt: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
             [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        g: [[1.0 / 4, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6],
            [1.0 / 24, 1.0 / 12, 1.0 / 6], [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1]],
        at: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])

    /// Output tiles over an oh×ow result.
    func tiles(_ oh: Int, _ ow: Int) -> (rows: Int, columns: Int) { ((oh + m - 1) / m, (ow + m - 1) / m) }

    /// Σ coefficients[k]·values[k] with zero terms left out and ±1 as additions, so the kernel does
    /// only the arithmetic the matrix asks for.
    static func combine(_ b: KernelBuilder, _ coefficients: [Float], _ values: [Scalar]) -> Scalar {
        var sum: Scalar?
        for (coefficient, value) in zip(coefficients, values) where coefficient != 0 {
            let magnitude = abs(coefficient)
            let term = magnitude == 1 ? value : magnitude * value
            if let partial = sum {
                sum = coefficient > 0 ? partial + term : partial - term
            } else {
                sum = coefficient > 0 ? term : -term
            }
        }
        return sum ?? b.constant(0)
    }
}

extension Lowering {
    /// The Winograd variant `node` (weights O×C×3×3) on an input of `dims` runs as under the policy; nil: im2col.
    func winogradTile(_ node: Node, _ g: ConvolutionGeometry, input dims: [Int], outputs o: Int) -> WinogradTile? {
        guard let policy = winograd, dims.count == 4, g.group == 1, g.kernel == [3, 3], g.stride == [1, 1], g.dilation == [1, 1],
              g.pad.allSatisfy({ $0 <= 2 }) else { return nil }
        let (oh, ow) = (dims[2] + 2 * g.pad[0] - 2, dims[3] + 2 * g.pad[1] - 2)
        guard oh > 0, ow > 0 else { return nil }
        func fits(_ tile: WinogradTile, atLeast minimum: Int) -> Bool {
            let (rows, columns) = tile.tiles(oh, ow)
            let perStep = (winogradBandRows(tile, result: [oh, ow], channels: dims[1], outputs: o) ?? rows) * columns
            return rows * columns >= minimum && tile.alpha * tile.alpha * perStep * (dims[1] + o) * MemoryLayout<Float>.size <= policy.maximumBytes
        }
        if let minimum = policy.largeTileMinimumTiles, fits(.f4, atLeast: minimum) { return .f4 }
        return fits(.f2, atLeast: policy.minimumTiles) ? .f2 : nil
    }

    /// Tile rows per band when an image's transformed input and products (α²·T·(C+O) floats) are
    /// larger than `banding.minimumBytes`: the smallest divisor of the tile rows whose band has at
    /// least 192 tiles (narrower GEMMs lose more than the cache saves). Nil: the whole image at
    /// once (small enough, or fewer bands than threads).
    func winogradBandRows(_ tile: WinogradTile, result: [Int], channels c: Int, outputs o: Int) -> Int? {
        let (th, tw) = tile.tiles(result[0], result[1])
        guard tile.alpha * tile.alpha * th * tw * (c + o) * MemoryLayout<Float>.size > banding.minimumBytes else { return nil }
        let rows = (1...th).first { th % $0 == 0 && $0 * tw >= 192 } ?? th
        return th / rows >= max(2, threads) ? rows : nil
    }

    /// The weights transformed (at compile time for inference, before each forward in training):
    /// `U = G·g·Gᵀ` for each 3×3 filter `g`, laid out as α² matrices O×C (one per position of the
    /// α×α transform), the GEMMs' left operands. With `exchanged`, `source` holds the filters of
    /// the convolution C → O whose input gradient this is (c × o × 3 × 3): filter (a, b) is that
    /// convolution's filter (b, a) turned by 180°, as the input gradient of a 3×3 stride-1
    /// convolution is the top diff convolved so.
    static func winogradWeights(_ source: UnsafeBufferPointer<Float>, outputs o: Int, channels c: Int, tile: WinogradTile,
                                exchanged: Bool = false, into u: UnsafeMutablePointer<Float>) {
        let alpha = tile.alpha, g = tile.g.flatMap { $0 }  // G, α×3 row-major
        // This runs for every (O, C) pair of every Winograd layer at each compile (kernel cache or
        // not): output channels are shared among the cores, and each chunk reuses one scratch for
        // t = G·f (α×3), allocating nothing per filter.
        let chunks = min(o, max(1, ProcessInfo.processInfo.activeProcessorCount))
        let target = UncheckedPointer(u), weights = UncheckedPointer(UnsafeMutablePointer(mutating: source.baseAddress!))
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let u = target.pointer, weights = weights.pointer
            var t = [Double](repeating: 0, count: alpha * 3)
            for oc in (chunk * o / chunks * c)..<((chunk + 1) * o / chunks * c) {
                // Tap (row, column) of this filter: the stored one, or the exchanged filter's turned tap.
                let f = exchanged ? ((oc % c) * o + oc / c) * 9 : oc * 9
                func tap(_ row: Int, _ column: Int) -> Double { Double(weights[f + (exchanged ? 8 - (row * 3 + column) : row * 3 + column)]) }
                for i in 0..<alpha {
                    for j in 0..<3 {
                        t[i * 3 + j] = g[i * 3] * tap(0, j) + g[i * 3 + 1] * tap(1, j) + g[i * 3 + 2] * tap(2, j)
                    }
                }
                // U = t·Gᵀ (α×α), each entry rounded to float once.
                for i in 0..<alpha {
                    for j in 0..<alpha {
                        let value = t[i * 3] * g[j * 3] + t[i * 3 + 1] * g[j * 3 + 1] + t[i * 3 + 2] * g[j * 3 + 2]
                        u[(i * alpha + j) * o * c + oc] = Float(value)
                    }
                }
            }
        }
    }

    /// Winograd F(m×m, 3×3) for one image, in bands of `bandRows` tile rows (all of them for one
    /// band): the input transform writes `V = Bᵀ·d·B` for every α×α input patch `d` (tiles m apart,
    /// zero outside the image) as α² matrices C×T (T: a band's tiles); α² GEMMs give `M = U·V`
    /// (O×T each); the output transform writes `Aᵀ·q·A` (m×m outputs per tile, fewer at the bottom
    /// and right edges), adds the bias and applies the fused activation. Each kernel's tasks are
    /// (band, channel) pairs, band-major, so an item loop over bands with task slices runs one
    /// band's transforms and GEMMs on one thread while its V and M are still in cache.
    mutating func emitWinograd(_ node: Node, tile: WinogradTile, bandRows: Int? = nil, channels c: Int, outputs o: Int, image: [Int],
                               result: [Int], pad: [Int], input: Operand, output: Operand, transformed u: BufferID, bias: Operand?,
                               scratch v: Operand, products p: Operand) throws {
        let (h, w) = (image[0], image[1]), (oh, ow) = (result[0], result[1])
        let (m, alpha) = (tile.m, tile.alpha)
        let (th, tw) = tile.tiles(oh, ow)
        let rowsPerBand = bandRows ?? th, bands = th / rowsPerBand, tiles = rowsPerBand * tw
        let (ph, pw) = (pad[0], pad[1])
        try emitKernel(node, "winograd.input m\(m) c\(c) h\(h)w\(w) p\(ph)x\(pw) t\(th)x\(tw) band\(rowsPerBand)", operands: [input, v],
                       tasks: bands * c, work: c * th * tw * alpha * alpha) { b in
            let (x, transformed) = (b.operand(0), b.operand(1))
            // Tiles whose whole α×α patch lies inside the image read it at affine offsets (no
            // clamping, no selects), which the vectorizer turns into interleaved loads across tiles.
            let rowsInside = Self.interior(count: th, stride: m, pad: ph, kernel: alpha, extent: h)
            let columnsInside = Self.interior(count: tw, stride: m, pad: pw, kernel: alpha, extent: w)
            b.forEachTask { task in
                let (band, channel) = bands == 1 ? (b.index(0), task) : (task / c, task % c)
                b.loop(0..<rowsPerBand) { local in
                    let ty = band * rowsPerBand + local
                    func transform(_ tx: Index, inside: Bool) {
                        var d: [[Scalar]] = []
                        for i in 0..<alpha {
                            let iy = ty * m + (i - ph)
                            if inside {
                                let row = channel * (h * w) + iy * w
                                d.append((0..<alpha).map { j in x[row + tx * m + (j - pw)] })
                                continue
                            }
                            let rowInside = iy >= 0 && iy < h
                            let row = channel * (h * w) + b.max(b.index(0), b.min(iy, b.index(h - 1))) * w
                            d.append((0..<alpha).map { j in
                                let ix = tx * m + (j - pw)
                                let column = b.max(b.index(0), b.min(ix, b.index(w - 1)))
                                return b.select(rowInside && (ix >= 0 && ix < w), x[row + column], b.constant(0))
                            })
                        }
                        // left = Bᵀ·d, then V = left·B.
                        let left = (0..<alpha).map { i in (0..<alpha).map { j in WinogradTile.combine(b, tile.bt[i], (0..<alpha).map { d[$0][j] }) } }
                        let position = local * tw + tx
                        for i in 0..<alpha {
                            for j in 0..<alpha {
                                transformed[(i * alpha + j) * (c * tiles) + channel * tiles + position] = WinogradTile.combine(b, tile.bt[j], left[i])
                            }
                        }
                    }
                    // Border tiles, the inside run (empty on a border row), border tiles.
                    let rowInside = ty >= rowsInside.lowerBound && ty < b.index(rowsInside.upperBound)
                    let insideEnd = b.select(rowInside, b.index(columnsInside.upperBound), b.index(columnsInside.lowerBound))
                    b.loop(0..<columnsInside.lowerBound) { transform($0, inside: false) }
                    b.loop(from: b.index(columnsInside.lowerBound), to: insideEnd) { transform($0, inside: true) }
                    b.loop(from: insideEnd, to: b.index(tw)) { transform($0, inside: false) }
                }
            }
        }
        var gemm = GemmStep(m: o, n: tiles, k: c, a: Operand(u), lda: c, b: v, ldb: tiles, c: p, ldc: tiles)
        gemm.repeats = alpha * alpha
        (gemm.strideA, gemm.strideB, gemm.strideC) = (o * c, c * tiles, o * tiles)
        emitGemm(node, gemm)
        let activation = node.fusedActivation
        let signature = "winograd.output m\(m) o\(o) t\(th)x\(tw) out\(oh)x\(ow) bias=\(bias != nil)" + (activation.map { " " + $0.signature } ?? "")
        try emitKernel(node, signature + " band\(rowsPerBand)", operands: [p, output] + (bias.map { [$0] } ?? []), tasks: bands * o,
                       work: o * th * tw * alpha * alpha) { b in
            let (products, y) = (b.operand(0), b.operand(1))
            let shift = bias.map { _ in b.operand(2) }
            b.forEachTask { task in
                let (band, channel) = bands == 1 ? (b.index(0), task) : (task / o, task % o)
                let offset = shift.map { $0[channel] }
                /// Writes the `rows`×`columns` corner of the m×m outputs of the band's tile (local, tx).
                func write(_ local: Index, _ tx: Index, rows: Int, columns: Int) {
                    let ty = band * rowsPerBand + local
                    let at = channel * tiles + local * tw + tx
                    let q = (0..<(alpha * alpha)).map { products[$0 * (o * tiles) + at] }
                    // left = Aᵀ·q (m×α), then Y = left·A.
                    let left = (0..<rows).map { i in (0..<alpha).map { j in WinogradTile.combine(b, tile.at[i], (0..<alpha).map { q[$0 * alpha + j] }) } }
                    for i in 0..<rows {
                        for j in 0..<columns {
                            var value = WinogradTile.combine(b, tile.at[j], left[i])
                            if let offset { value = value + offset }
                            if let activation { value = activation.apply(b, value) }
                            y[channel * (oh * ow) + (ty * m + i) * ow + tx * m + j] = value
                        }
                    }
                }
                let fullColumns = ow / m
                let (lastRows, lastColumns) = (oh % m, ow % m)
                // Every tile row of the band is whole, but for the image's last one when oh % m ≠ 0.
                let fullRows = lastRows == 0 ? b.index(rowsPerBand) : b.select(band >= bands - 1, b.index(rowsPerBand - 1), b.index(rowsPerBand))
                b.loop(from: b.index(0), to: fullRows) { local in
                    b.loop(0..<fullColumns) { tx in write(local, tx, rows: m, columns: m) }
                    if lastColumns > 0 { write(local, b.index(fullColumns), rows: m, columns: lastColumns) }
                }
                if lastRows > 0 {
                    b.loop(from: fullRows, to: b.index(rowsPerBand)) { local in
                        b.loop(0..<fullColumns) { tx in write(local, tx, rows: lastRows, columns: m) }
                        if lastColumns > 0 { write(local, b.index(fullColumns), rows: lastRows, columns: lastColumns) }
                    }
                }
            }
        }
    }
}
