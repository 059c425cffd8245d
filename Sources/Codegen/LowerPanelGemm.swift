import Graph
import Runtime

/// A convolution is, per image and group, the product `Y = W · X` of M×K weights and a K×N
/// matrix: the image itself for a 1×1 convolution (N pixels, read in place), else its
/// im2col columns; then the bias and activation. On these products OpenBLAS makes three passes
/// over Y besides the product (it zeroes Y for β = 0, it packs both operands on every call, and
/// the epilogue reads Y back for the bias and ReLU), and at the small N of late layers (7×7 = 49
/// columns) its tiles fit badly. This kernel does one: the weights are packed once at compile
/// time into panels of `rows` output channels, X is read in place (N is contiguous), and each
/// output tile is written once, bias and activation included.
///
/// The tile is `rows` × `vectors`·`lanes` outputs, its accumulators kept in vector registers
/// through the K loop, each step loading `vectors` vectors of X and broadcasting `rows` weights.
/// One emitter serves every vector ISA; `Tile.table` sizes the tile for its register file
/// (accumulators + X vectors + one broadcast ≤ registers): AVX-512, 32 zmm: 8 × 3·16 (24
/// accumulators); AVX2 + FMA, 16 ymm: 4 × 3·8 (12 accumulators, 3 loads of X and 4 broadcasts per
/// K step, its K loop not unrolled). A task is one panel (its weights stream from L1/L2) over one chunk
/// of columns sized so the chunk of X stays in L2 while every panel of the task's thread reads it;
/// tasks are ordered image, chunk, panel, so a thread's contiguous share of them reuses its chunks.
/// Columns past the last whole tile run as one masked tile, or, when there are only a few, column by
/// column over the panel's rows (`tailByColumns`). A residual sum folded into the
/// convolution (`FuseResidual`) is read in the same store: the tile adds what the output buffer
/// (the shortcut's) holds. Used by default where the host has AVX-512, or AVX2 and FMA
/// (`isNative`), each group's M is a multiple of the tile's `rows`, K is at most the tile's
/// `maximumDepth` and, with a residual to add, the tile `addsResiduals` (depthwise convolutions
/// have their own kernel). On AVX2 the tile takes K ≤ 256 in place, and with X packed
/// (`PackedPanelGemm`) K = 64–512 over at least 64 columns and deeper K over at least 256, and in
/// place again K ≤ 512 over at most 64 columns (7×7 images) and any K over fewer columns than a
/// vector; the rest (14×14 layers' K = 1024, 7×7 ones' K ≥ 1024) stays with OpenBLAS.
///
/// Tiles tried for AVX2 (Benchmarks/README.md, "AVX2 path"; 1×1 convolutions of ResNet-50,
/// MobileNet and SqueezeNet, interleaved with OpenBLAS's Zen kernels + epilogue): 4 × 3·8 was the
/// fastest; 6 × 2·8 (2 loads, 6 broadcasts per 12 FMAs) was ~13 % slower in sum, 8 × 1·8 (8
/// accumulators, bound by the FMA latency) ~40 % slower. Against OpenBLAS, 4 × 3·8 wins up to
/// K = 256 and loses on most layers from K = 512 on (it reads X in place, 3 strided rows of 96
/// bytes per step, where OpenBLAS packs it): `maximumDepth` bounds the in-place kernel, and the
/// packing kernel takes the products where it measured faster (`packs(depth:columns:)`).
enum PanelGemm {
    /// An accumulator tile: `rows` output channels × `vectors` vectors of `lanes` columns.
    struct Tile: Equatable, Sendable {
        var lanes: Int
        var rows: Int
        var vectors: Int
        /// Whether the optimizer may unroll the K loop. Not when the tile fills all 16 registers:
        /// unrolled, the scheduler starts the next step's loads early and spills accumulators
        /// (SqueezeNet's conv10 on AVX2: 59 spills and reloads in the kernel, 17 without
        /// unrolling, none of them in the K loop).
        var unrolled: Bool
        /// The deepest product (K) the tile takes; deeper ones stay with OpenBLAS.
        var maximumDepth = Int.max
        /// Whether the tile takes convolutions that add their product to a folded residual (β =
        /// 1). The AVX2 tile does not in place: on ResNet-50's res2/res3 branch2c layers it ran at
        /// 0.79× of OpenBLAS with β = 1, reading the cold residual at the end of each tile
        /// (prefetching it before the K loop made it slower still). Its packing kernel does
        /// (`packs(depth:columns:)`): there the same layers ran ~10 % faster than OpenBLAS.
        var addsResiduals = true
        /// Whether the kernel packs X (`PackedPanelGemm`): K blocks of at most `depthBlock` rows of
        /// each column tile copied into a contiguous stack array, reused by a group of panels. Then
        /// `maximumDepth` bounds only the in-place kernel (training's unpacked left operands).
        var packsColumns = false
        var depthBlock = 256
        /// The products the packing kernel takes (where it measured faster than the in-place one
        /// or OpenBLAS): K at least `packedDepth` over at least `packedColumns` columns, and products
        /// deeper than `packedShallowDepth` only over at least `packedDeepColumns` columns (ResNet-50's
        /// res4 branch2a, K = 1024 over 196 columns, ran at 0.89–0.93× of OpenBLAS packed).
        var packedDepth = 64, packedColumns = 64, packedShallowDepth = 512, packedDeepColumns = 256
        /// Deeper products than `maximumDepth` the in-place kernel still takes: over fewer columns
        /// than a vector (a matrix-vector product, the weights streamed once: MobileNet's fc7,
        /// 1024 → 1000 on one pixel, 0.47 → 0.22 ms on the AVX2 path, single thread, against
        /// OpenBLAS's Zen kernels) and over at most `narrowColumns` columns up to `narrowDepth`
        /// (7×7 images: K = 512 → 1024 outputs ran at 0.82 of OpenBLAS's time at batch 1; K = 1024
        /// and 2048 gained 4–6 % at batch 1, single thread, but lost 15 % on ResNet-50's res5a at
        /// batch 16 with 2 threads, and K = 4608 and 14×14 images with K = 1024 lost everywhere).
        var narrowColumns = 0, narrowDepth = 0
        var columns: Int { vectors * lanes }

        /// Whether a K-deep product over `n` columns runs the packing kernel.
        func packs(depth k: Int, columns n: Int) -> Bool {
            packsColumns && k >= packedDepth && n >= packedColumns && (k <= packedShallowDepth || n >= packedDeepColumns)
        }

        /// Whether the panel GEMM takes a K-deep product over `n` columns at all.
        func takes(depth k: Int, columns n: Int) -> Bool {
            k <= maximumDepth || packs(depth: k, columns: n) || n < lanes || (n <= narrowColumns && k <= narrowDepth)
        }

        /// One tile per vector width (`CPUFeatures.vectorLanes`); the 4-lane one (SSE, 16 xmm)
        /// is used only when a caller asks for panel GEMMs on such a host.
        static let table = [Tile(lanes: 16, rows: 8, vectors: 3, unrolled: true),
                            Tile(lanes: 8, rows: 4, vectors: 3, unrolled: false, maximumDepth: 256, addsResiduals: false, packsColumns: true,
                                 narrowColumns: 64, narrowDepth: 512),
                            Tile(lanes: 4, rows: 4, vectors: 3, unrolled: false, maximumDepth: 256, addsResiduals: false)]

        /// The tile for vectors of `lanes` floats.
        static func forLanes(_ lanes: Int) -> Tile { table.first { $0.lanes == lanes } ?? table[table.count - 1] }
    }

    /// Whether the panel GEMM beats OpenBLAS + epilogue on a CPU with `features`: AVX-512, or AVX2
    /// with FMA (without FMA, `llvm.fma` would be a library call per lane).
    static func isNative(_ features: CPUFeatures) -> Bool {
        features.contains("avx512f") || (features.contains("avx2") && features.contains("fma"))
    }

    /// The pixels one task reads (K × chunk columns) are kept under this size.
    static let chunkBytes = 256 << 10

    /// Writes panels `[M / rows][K][rows]` from Caffe's M×K weights.
    static func pack(_ w: UnsafeBufferPointer<Float>, outputs m: Int, inputs k: Int, rows: Int, into panels: UnsafeMutablePointer<Float>) {
        for panel in 0..<(m / rows) {
            for kk in 0..<k {
                for r in 0..<rows { panels[(panel * k + kk) * rows + r] = w[(panel * rows + r) * k + kk] }
            }
        }
    }

    /// Writes panels `[M / rows][K][rows]` of the transpose of Caffe's K×M weights (a 1×1
    /// convolution's O×C weights as the C×O matrix of its backward-data product).
    static func packTransposed(_ w: UnsafeBufferPointer<Float>, outputs m: Int, inputs k: Int, rows: Int, into panels: UnsafeMutablePointer<Float>) {
        for panel in 0..<(m / rows) {
            for kk in 0..<k {
                for r in 0..<rows { panels[(panel * k + kk) * rows + r] = w[kk * m + panel * rows + r] }
            }
        }
    }

    /// Whether the last `columns` (< lanes) columns of a tail (past the last whole tile and whole
    /// vector) run column by column (`columnTail`: per K step one FMA per column over the panel's
    /// `rows` outputs) rather than as one more masked vector of the tile (`mask`; one FMA per
    /// row). On 7×7 images (49 columns = one 48-column tile + 1) the masked vector spent 8 FMAs
    /// per step on one column: ResNet-50's and MobileNet's 7×7 1×1 convolutions ran ~20 % slower
    /// than on a 48-column image. Both kinds of FMA (of `rows` lanes, or of a half or whole
    /// vector) issue at the same rate on the hosts measured, so the cheaper is the one with fewer;
    /// a 16-lane vector counts twice (Zen 4 splits it in two).
    static func tailByColumns(_ columns: Int, mask: LaneMask, tile: Tile) -> Bool {
        columns < tile.rows * (mask.lanes.count > 8 ? 2 : 1)
    }

    /// Independent partial sums per column in `columnTail`: FMAs in flight ≈ latency (4 cycles) ×
    /// 2 pipes, shared among the tail's columns.
    static func tailChains(columns: Int) -> Int { max(1, 8 / columns) }

    /// Whole tiles of `tile` per task chunk for K input channels.
    static func chunkTiles(inputs k: Int, tile: Tile) -> Int { max(1, chunkBytes / (k * tile.columns * MemoryLayout<Float>.size)) }
}

extension Lowering {
    /// Whether `PanelGemm` can run this convolution's product (see its conditions); for
    /// `convolutionPath`, which tries Winograd, depthwise and banded first.
    func usesPanelGemm(_ g: ConvolutionGeometry, inputs c: Int, outputs: Int, columns: Int) -> Bool {
        let tile = panelTile
        return panelGemms && (outputs / g.group) % tile.rows == 0 && tile.takes(depth: c / g.group * g.kernel.reduce(1, *), columns: columns)
    }

    /// The panel GEMM's tile for the JIT's vector width.
    var panelTile: PanelGemm.Tile { PanelGemm.Tile.forLanes(cache.jit.features.vectorLanes) }

    /// Every bottom/top pair of a convolution by `PanelGemm`, its weights packed once: 1×1
    /// convolutions over the images in place (the batch in the kernel's tasks), others over im2col
    /// columns image by image (an item loop, each thread with its own columns). A grouped
    /// convolution is one product per group: the groups' channels, column rows, outputs and
    /// panels are each contiguous, so the kernel takes (image, group) pairs as its matrices. With
    /// `accumulate`, the product is added to what the top's buffer holds (a residual sum folded
    /// in, as the GEMM path's β = 1).
    mutating func lowerPanelGemm(_ node: Node, _ g: ConvolutionGeometry, blobs: [[Float]], bias: BufferID?, accumulate: Bool = false) throws {
        let c = shape(node.inputs[0])[1], o = shape(node.outputs[0])[1], groups = g.group
        let (k, m) = (c / groups * g.kernel.reduce(1, *), o / groups)  // per group
        // Caffe's O × (C/G)·KH·KW weights packed as one O-row matrix: panel p lies in group p·rows / m.
        let rows = panelTile.rows
        let panels = try derivedConstant(node, "weight panels", count: o * k, from: 0, blobs) { weights, target in
            PanelGemm.pack(weights, outputs: o, inputs: k, rows: rows, into: target)
        }
        for (input, output) in zip(node.inputs, node.outputs) {
            let n = shape(input)[0], spatial = shape(output)[2...].reduce(1, *), y = Operand(buffer(output))
            if g.isPointwise {
                try emitPanelGemm(node, matrices: n * groups, groups: groups, inputs: k, outputs: m, spatial: spatial, input: Operand(buffer(input)),
                                  output: y, panels: Operand(panels), bias: bias.map { Operand($0) }, accumulate: accumulate)
                continue
            }
            try emitImageByImage(node, g, input: input, output: output) { lowering, columns in
                try lowering.emitPanelGemm(node, matrices: groups, groups: groups, inputs: k, outputs: m, spatial: spatial, input: columns,
                                           output: y, panels: Operand(panels), bias: bias.map { Operand($0) }, accumulate: accumulate)
            }
        }
    }

    /// `y = activation(W · x + bias)` for each of the `matrices` K×N matrices `x` (consecutive in
    /// `input`, their M×N products consecutive in `output`), by `PanelGemm`; matrix `i` is group
    /// `i % groups`, whose M×K weights and M biases are the group's. With `accumulate`,
    /// `activation((y + W · x) + bias)`. The node's fused activation applies unless
    /// `activation: false` (backward products).
    ///
    /// With `rowStride`, the left operand is not packed panels but a plain row-major M×K matrix
    /// whose rows are `rowStride` apart (one matrix, one group): each K step broadcasts one value
    /// from each of the tile's rows, `rows` streams read in order. Training's weight gradient
    /// multiplies the columns it has just built this way, so nothing is packed per image.
    /// `rowBlocks` (with `rowStride`) splits K into `count` blocks of `rowStride` steps whose rows
    /// start `stride` apart: several images' columns side by side in K, each image's where it lies,
    /// so a small image's weight gradient is one product over a block of images, not one per image.
    mutating func emitPanelGemm(_ node: Node, matrices n: Int, groups: Int, inputs k: Int, outputs m: Int, spatial: Int,
                                        input: Operand, output: Operand, panels: Operand, bias: Operand?, accumulate: Bool,
                                        activation applies: Bool = true, rowStride: Int? = nil,
                                        rowBlocks: (count: Int, stride: Int)? = nil) throws {
        precondition(rowStride == nil || (n == 1 && groups == 1), "an unpacked left operand is one matrix")
        precondition(rowBlocks == nil || (rowStride.map { $0 * rowBlocks!.count == k } ?? false), "row blocks split K in rowStride steps")
        let blocks = rowBlocks.flatMap { $0.count > 1 ? $0 : nil }
        let tileShape = panelTile
        if tileShape.packs(depth: k, columns: spatial), rowStride == nil {
            return try emitPackedPanelGemm(node, matrices: n, groups: groups, inputs: k, outputs: m, spatial: spatial, input: input, output: output,
                                           panels: panels, bias: bias, accumulate: accumulate, activation: applies ? node.fusedActivation : nil)
        }
        let (rows, lanes, tileColumns) = (tileShape.rows, tileShape.lanes, tileShape.columns)
        let wholeTiles = spatial / tileColumns, tail = spatial % tileColumns
        let chunkTiles = PanelGemm.chunkTiles(inputs: k, tile: tileShape)
        let chunks = max(1, (wholeTiles + chunkTiles - 1) / chunkTiles), panelCount = m / rows
        let activation = applies ? node.fusedActivation : nil
        // The product's extents are read at run time (`KernelExtents`), so every product with the
        // same tile, tail and epilogue shares one kernel; the tail's masks shape the code.
        let extents = try self.extents(node, "panel gemm", [k, spatial, panelCount, chunkTiles, chunks, wholeTiles])
        let signature = "conv.panels \(rows)x\(tileShape.vectors)x\(lanes) g\(groups) tail\(tail) bias=\(bias != nil)" + (accumulate ? " accumulate" : "")
            + (activation.map { " " + $0.signature } ?? "") + (rowStride.map { " rows\($0)" } ?? "")
            + (blocks.map { " blocks\($0.count)x\($0.stride)" } ?? "")
        try emitKernel(node, signature, operands: [input, output, panels, extents] + (bias.map { [$0] } ?? []),
                       tasks: n * chunks * panelCount, work: n * m * spatial * k) { b in
            let (x, y, a) = (b.operand(0), b.operand(1), b.operand(2))
            let shift = bias.map { _ in b.operand(4) }
            let k = b.extent(b.operand(3), 0), spatial = b.extent(b.operand(3), 1), panelCount = b.extent(b.operand(3), 2)
            let chunkTiles = b.extent(b.operand(3), 3), chunks = b.extent(b.operand(3), 4), wholeTiles = b.extent(b.operand(3), 5)
            let m = panelCount * rows
            b.forEachTask { task in
                let matrix = task / (chunks * panelCount), chunk = (task % (chunks * panelCount)) / panelCount
                let panel = (matrix % groups) * panelCount + task % panelCount  // among all groups' panels
                let pixels = matrix * (k * spatial), weights = panel * (k * rows)
                let outputs = matrix * (m * spatial) + (task % panelCount) * (spatial * rows)
                /// One tile at column `first`: `masks` are its vectors' lanes inside the image, vector
                /// `j` from column `first + lanes·j` (a last vector of half the lanes is half the
                /// work on hosts that split full-width operations in two).
                func tile(_ first: Index, _ masks: [LaneMask]) {
                    let widths = masks.map(\.lanes.count)
                    let zeros = (0..<rows).flatMap { _ in widths.map { b.splat(0, width: $0) } }
                    /// One K step: `kk` of the right operand, `left` the left operand's element of row 0.
                    func step(_ kk: Index, left: Index, _ sums: [FloatVector]) -> [FloatVector] {
                        let row = pixels + kk * spatial + first
                        let columns = masks.enumerated().map { j, mask in x.load(row + j * lanes, mask) }
                        var next = sums
                        for r in 0..<rows {
                            // One load; the optimizer merges equal broadcasts of it.
                            let weight = rowStride.map { a[left + r * $0] } ?? a[left + r]
                            for j in columns.indices {
                                next[r * columns.count + j] = b.fma(b.splat(weight, width: widths[j]), columns[j], sums[r * columns.count + j])
                            }
                        }
                        return next
                    }
                    let sums: [FloatVector]
                    if let rowStride, let blocks {
                        sums = b.loop(0..<blocks.count, carrying: zeros, unrolled: false) { block, outer in
                            b.loop(0..<rowStride, carrying: outer, unrolled: tileShape.unrolled) { s, sums in
                                step(block * rowStride + s, left: block * blocks.stride + panel * (rows * rowStride) + s, sums)
                            }
                        }
                    } else {
                        sums = b.loop(from: b.index(0), to: k, carrying: zeros, unrolled: tileShape.unrolled) { kk, sums in
                            step(kk, left: rowStride.map { panel * (rows * $0) + kk } ?? weights + kk * rows, sums)
                        }
                    }
                    for r in 0..<rows {
                        let t = shift.map { $0[panel * rows + r] }
                        for (j, mask) in masks.enumerated() {
                            let at = outputs + r * spatial + first + j * lanes
                            var value = accumulate ? y.load(at, mask) + sums[r * masks.count + j] : sums[r * masks.count + j]
                            if let t { value = value + b.splat(t, width: widths[j]) }
                            if let activation { value = activation.apply(b, value) }
                            y.store(value, at: at, mask)
                        }
                    }
                }
                /// The last `count` columns at `first`, each one vector over the panel's `rows` outputs
                /// (`PanelGemm.columnTail`): per K step one load of the panel's `rows` weights and one
                /// broadcast and FMA per column, in `chains` interleaved partial sums per column so the
                /// FMAs do not wait on each other's latency.
                func columnTail(_ first: Index, _ count: Int) {
                    let chains = PanelGemm.tailChains(columns: count), whole = LaneMask(first: rows, of: rows)
                    /// One K step into partial sum `chain`: `row` the step's first column in X, `left` its weights.
                    func step(row: Index, left: Index, chain: Int, _ sums: [FloatVector]) -> [FloatVector] {
                        let w = a.load(left, whole)
                        var next = sums
                        for c in 0..<count {
                            next[c * chains + chain] = b.fma(b.splat(x[row + c], width: rows), w, sums[c * chains + chain])
                        }
                        return next
                    }
                    let zeros = Array(repeating: b.splat(0, width: rows), count: count * chains), rounds = k / chains
                    let strides = (0..<chains).map { $0 * spatial }  // loop-invariant row offsets of a round's steps
                    var sums = b.loop(from: b.index(0), to: rounds, carrying: zeros, unrolled: false) { q, sums in
                        let row = pixels + (q * chains) * spatial + first, left = weights + q * (chains * rows)
                        return (0..<chains).reduce(sums) { sums, chain in step(row: row + strides[chain], left: left + chain * rows, chain: chain, sums) }
                    }
                    if chains > 1 {
                        sums = b.loop(from: rounds * chains, to: k, carrying: sums, unrolled: false) { kk, sums in
                            step(row: pixels + kk * spatial + first, left: weights + kk * rows, chain: 0, sums)
                        }
                    }
                    let lanes = b.stackArray(count: rows)
                    for c in 0..<count {
                        let total = sums[(c * chains + 1)..<((c + 1) * chains)].reduce(sums[c * chains], +)
                        lanes.store(total, at: b.index(0), whole)
                        for r in 0..<rows {
                            let at = outputs + r * spatial + first + c
                            var value = accumulate ? y[at] + lanes[b.index(r)] : lanes[b.index(r)]
                            if let shift { value = value + shift[panel * rows + r] }
                            if let activation { value = activation.apply(b, value) }
                            y[at] = value
                        }
                    }
                }
                let full = Array(repeating: LaneMask(first: lanes, of: lanes), count: tileShape.vectors)
                b.loop(from: chunk * chunkTiles, to: b.min(chunk * chunkTiles + chunkTiles, wholeTiles)) { t in
                    tile(t * tileColumns, full)
                }
                if tail > 0 {
                    // Once, in the last chunk's tasks: the loop runs from chunks − 1 to chunk + 1.
                    let masks = stride(from: 0, to: tail, by: lanes).map { start in
                        let left = tail - start
                        return left > lanes / 2 ? LaneMask(first: min(lanes, left), of: lanes) : LaneMask(first: left, of: lanes / 2)
                    }
                    let (vectors, rest) = tail.quotientAndRemainder(dividingBy: lanes)
                    if rowStride == nil, rest > 0, PanelGemm.tailByColumns(rest, mask: masks[vectors], tile: tileShape) {
                        // Whole vectors as a narrower tile, the columns past them one by one.
                        b.loop(from: chunks - 1, to: chunk + 1) { _ in
                            if vectors > 0 { tile(wholeTiles * tileColumns, Array(masks[..<vectors])) }
                            columnTail(wholeTiles * tileColumns + vectors * lanes, rest)
                        }
                    } else {
                        b.loop(from: chunks - 1, to: chunk + 1) { _ in tile(wholeTiles * tileColumns, masks) }
                    }
                }
            }
        }
    }
}
