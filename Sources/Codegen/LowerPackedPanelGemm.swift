import Graph
import Runtime

/// The panel GEMM with its right operand packed: for tiles whose K loop would otherwise read X in
/// place, three strided rows per K step (`PanelGemm.Tile.packsColumns`, the AVX2 tile).
///
/// A task is one chunk of column tiles of one matrix times one group of weight panels, tasks
/// ordered matrix, group, chunk: a thread's contiguous share of them reads each group's weights
/// from memory once and then from L2 for the group's next chunks (at 7×7 outputs and K = 2048,
/// ResNet-50's res5 weights are 4 MB for 49 columns: reading them once per chunk instead, each
/// thread streamed all of them, and the kernel ran at 0.7× of OpenBLAS). For each
/// tile of its chunk, K is cut into blocks of at most `depthBlock` rows; each block of the tile's
/// columns (depth × `columns` floats, 24 KB for the AVX2 tile) is copied once into a contiguous
/// stack array, where it stays in L1 while every panel of the group multiplies it. The panels'
/// weights (group × K × rows floats, kept under `groupBytes`) stay in L2 across the chunk's tiles.
/// This is the blocking OpenBLAS does for its own GEMM, without its packing of the weights (they
/// are packed once, at compile time) and with the bias, activation and residual in the last
/// block's store: the first block writes (or, with `accumulate`, adds to) the output tile, later
/// blocks add to it, the last one applies the bias and activation. K of any depth is one kernel.
enum PackedPanelGemm {
    /// The weights of one task's panel group are kept under this size (they are reread for every
    /// tile of the task's chunk, from L2).
    static let groupBytes = 128 << 10

    /// Panels per task: as many as keep the group's weights under `groupBytes`, at most all.
    static func panelsPerGroup(inputs k: Int, rows: Int, panels: Int) -> Int {
        min(panels, max(1, groupBytes / (k * rows * MemoryLayout<Float>.size)))
    }

    /// Whole tiles per task chunk: as `PanelGemm.chunkTiles` (the chunk of X stays in L2 while
    /// the group's panels read it), but at least four tasks per thread where the tiles allow, so
    /// the threads' contiguous shares of the tasks stay even.
    static func chunkTiles(inputs k: Int, tile: PanelGemm.Tile, wholeTiles: Int, otherTasks: Int, threads: Int) -> Int {
        let cached = PanelGemm.chunkTiles(inputs: k, tile: tile)
        let wanted = (4 * max(1, threads) + otherTasks - 1) / otherTasks  // chunks for four tasks per thread
        return max(1, min(cached, (wholeTiles + wanted - 1) / wanted))
    }

    /// The K blocks for depth `k`: `count` blocks of `depth` rows, the last one `last` rows (the
    /// blocks as equal as possible, none deeper than `maximum`).
    static func blocks(depth k: Int, maximum: Int) -> (count: Int, depth: Int, last: Int) {
        let count = max(1, (k + maximum - 1) / maximum)
        let depth = (k + count - 1) / count
        return (count, depth, k - (count - 1) * depth)
    }
}

extension Lowering {
    /// `emitPanelGemm` for a tile that `packsColumns` (same operands, same result; see
    /// `PackedPanelGemm`).
    mutating func emitPackedPanelGemm(_ node: Node, matrices n: Int, groups: Int, inputs k: Int, outputs m: Int, spatial: Int,
                                      input: Operand, output: Operand, panels: Operand, bias: Operand?, accumulate: Bool,
                                      activation: FusedActivation?) throws {
        let tileShape = panelTile
        let (rows, lanes, tileColumns) = (tileShape.rows, tileShape.lanes, tileShape.columns)
        let wholeTiles = spatial / tileColumns, tail = spatial % tileColumns
        let panelCount = m / rows
        let groupPanels = PackedPanelGemm.panelsPerGroup(inputs: k, rows: rows, panels: panelCount)
        let panelGroups = (panelCount + groupPanels - 1) / groupPanels
        let chunkTiles = PackedPanelGemm.chunkTiles(inputs: k, tile: tileShape, wholeTiles: wholeTiles, otherTasks: n * panelGroups, threads: threads)
        let chunks = max(1, (wholeTiles + chunkTiles - 1) / chunkTiles)
        let blocks = PackedPanelGemm.blocks(depth: k, maximum: tileShape.depthBlock)
        // Extents are read at run time (`KernelExtents`); the block structure (one block, two, or
        // more) and the tail's masks shape the code and stay in the signature.
        let blockShape = blocks.count == 1 ? "one" : blocks.count == 2 ? "two" : "many"
        let extents = try self.extents(node, "packed panel gemm", [k, spatial, panelCount, groupPanels, panelGroups, chunkTiles, chunks, wholeTiles,
                                                                   blocks.count, blocks.depth, blocks.last])
        let signature = "conv.panels.packed \(rows)x\(tileShape.vectors)x\(lanes) g\(groups) tail\(tail) blocks:\(blockShape) maxblock\(tileShape.depthBlock)"
            + " bias=\(bias != nil)" + (accumulate ? " accumulate" : "") + (activation.map { " " + $0.signature } ?? "")
        try emitKernel(node, signature, operands: [input, output, panels, extents] + (bias.map { [$0] } ?? []),
                       tasks: n * chunks * panelGroups, work: n * m * spatial * k) { b in
            let (x, y, a) = (b.operand(0), b.operand(1), b.operand(2))
            let shift = bias.map { _ in b.operand(4) }
            let e = b.operand(3)
            let k = b.extent(e, 0), spatial = b.extent(e, 1), panelCount = b.extent(e, 2), groupPanels = b.extent(e, 3)
            let panelGroups = b.extent(e, 4), chunkTiles = b.extent(e, 5), chunks = b.extent(e, 6), wholeTiles = b.extent(e, 7)
            let blockCount = b.extent(e, 8), blockDepth = b.extent(e, 9), lastDepth = b.extent(e, 10)
            let m = panelCount * rows
            let packed = b.stackArray(count: tileShape.depthBlock * tileColumns)
            b.forEachTask { task in
                let matrix = task / (chunks * panelGroups), chunk = task % chunks
                let firstPanel = ((task % (chunks * panelGroups)) / chunks) * groupPanels
                let endPanel = b.min(firstPanel + groupPanels, panelCount)
                let pixels = matrix * (k * spatial), groupPanelBase = (matrix % groups) * panelCount
                /// One tile at column `first`, vector `j` of it holding the lanes of `masks[j]`.
                func tile(_ first: Index, _ masks: [LaneMask]) {
                    let widths = masks.map(\.lanes.count)
                    let packedMasks = widths.map { LaneMask(first: $0, of: $0) }
                    /// K rows `start ..< start + depth` of the tile, for every panel of the group.
                    func block(_ start: Index, depth: Index, first isFirst: Bool, last isLast: Bool) {
                        b.loop(from: b.index(0), to: depth, unrolled: false) { kk in
                            let row = pixels + (start + kk) * spatial + first
                            for (j, mask) in masks.enumerated() {
                                packed.store(x.load(row + j * lanes, mask), at: kk * tileColumns + j * lanes, packedMasks[j])
                            }
                        }
                        b.loop(from: firstPanel, to: endPanel, unrolled: false) { p in
                            let panel = groupPanelBase + p  // among all groups' panels
                            let weights = panel * (k * rows) + start * rows
                            let zeros = (0..<rows).flatMap { _ in widths.map { b.splat(0, width: $0) } }
                            let sums = b.loop(from: b.index(0), to: depth, carrying: zeros, unrolled: tileShape.unrolled) { kk, sums in
                                let columns = packedMasks.enumerated().map { j, mask in packed.load(kk * tileColumns + j * lanes, mask) }
                                var next = sums
                                for r in 0..<rows {
                                    let weight = a[weights + kk * rows + r]
                                    for j in columns.indices {
                                        next[r * columns.count + j] = b.fma(b.splat(weight, width: widths[j]), columns[j], sums[r * columns.count + j])
                                    }
                                }
                                return next
                            }
                            let outputs = matrix * (m * spatial) + p * (spatial * rows)
                            for r in 0..<rows {
                                let t = isLast ? shift.map { $0[panel * rows + r] } : nil
                                for (j, mask) in masks.enumerated() {
                                    let at = outputs + r * spatial + first + j * lanes
                                    var value = sums[r * masks.count + j]
                                    if accumulate || !isFirst { value = y.load(at, mask) + value }
                                    if let t { value = value + b.splat(t, width: widths[j]) }
                                    if isLast, let activation { value = activation.apply(b, value) }
                                    y.store(value, at: at, mask)
                                }
                            }
                        }
                    }
                    if blocks.count == 1 {
                        block(b.index(0), depth: k, first: true, last: true)
                        return
                    }
                    block(b.index(0), depth: blockDepth, first: true, last: false)
                    if blocks.count > 2 {
                        b.loop(from: b.index(1), to: blockCount - 1, unrolled: false) { kb in
                            block(kb * blockDepth, depth: blockDepth, first: false, last: false)
                        }
                    }
                    block((blockCount - 1) * blockDepth, depth: lastDepth, first: false, last: true)
                }
                let full = Array(repeating: LaneMask(first: lanes, of: lanes), count: tileShape.vectors)
                b.loop(from: chunk * chunkTiles, to: b.min(chunk * chunkTiles + chunkTiles, wholeTiles), unrolled: false) { t in
                    tile(t * tileColumns, full)
                }
                if tail > 0 {
                    // Once, in the last chunk's tasks: the loop runs from chunks − 1 to chunk + 1.
                    let masks = stride(from: 0, to: tail, by: lanes).map { start in
                        let left = tail - start
                        return left > lanes / 2 ? LaneMask(first: min(lanes, left), of: lanes) : LaneMask(first: left, of: lanes / 2)
                    }
                    b.loop(from: chunks - 1, to: chunk + 1, unrolled: false) { _ in tile(wholeTiles * tileColumns, masks) }
                }
            }
        }
    }
}
