import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Copies `rows` blocks of `length` floats: block r goes from `source + r·sourceStride` to
    /// `target + r·targetStride` (the operands carry the starting offsets). One task per block.
    mutating func emitBlockCopy(_ node: Node, from source: Operand, sourceStride: Int, to target: Operand, targetStride: Int,
                                rows: Int, length: Int) throws {
        try base.emitKernel(node, "copy.blocks n\(length) in\(sourceStride) out\(targetStride)", operands: [source, target],
                            tasks: rows, work: rows * length) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { row in
                b.loop(0..<length) { i in y[row * targetStride + i] = x[row * sourceStride + i] }
            }
        }
    }

    // MARK: Softmax

    /// Softmax backward, Caffe's order: `dx = (dy − Σ_c dy·y) · y` along the axis.
    mutating func lowerSoftmaxBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (outer, channels, inner) = try base.softmaxSplit(node, node.inputs[0])
        let dy = try topDiff(node, node.outputs[0])
        let y = data(node.outputs[0])
        let dx = bottomDiff(node, 0, reusing: dy)
        try base.emitKernel(node, "softmax.grad c\(channels) i\(inner)", operands: [dy, y, dx], tasks: outer * inner,
                            work: outer * inner * channels * 3) { b in
            let (topDiff, y, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { position in
                let start = inner == 1 ? position * channels : (position / inner) * (channels * inner) + position % inner
                let dot = b.variable(b.constant(0))
                b.loop(0..<channels) { j in dot.value = dot.value + topDiff[start + j * inner] * y[start + j * inner] }
                let total = dot.value
                b.loop(0..<channels) { j in
                    let at = start + j * inner
                    result[at] = (topDiff[at] - total) * y[at]
                }
            }
        }
    }

    // MARK: Concat and Slice

    /// Concat backward: each bottom's diff is its block of the top diff along the axis.
    mutating func lowerConcatBackward(_ node: Node) throws {
        let output = node.outputs[0], dims = shape(output)
        let axis = try node.axisAttribute()
        let outer = dims[..<axis].reduce(1, *), rowOut = dims[axis...].reduce(1, *)
        let dy = try topDiff(node, output)
        var offset = 0
        for (j, input) in node.inputs.enumerated() {
            let rowIn = shape(input)[axis...].reduce(1, *)
            if analysis.writesBottomDiff(node, j) {
                try emitBlockCopy(node, from: Operand(dy.buffer, offset: dy.offset + offset), sourceStride: rowOut,
                                  to: bottomDiff(node, j), targetStride: rowIn, rows: outer, length: rowIn)
            }
            offset += rowIn
        }
    }

    /// Slice forward: each top is a block of the bottom along the axis (one top shares the bottom).
    mutating func lowerSliceForward(_ node: Node) throws {
        let input = node.inputs[0], dims = shape(input)
        if node.outputs.count == 1 { base.lowerView(node); return }
        let axis = try node.axisAttribute()
        let outer = dims[..<axis].reduce(1, *), rowIn = dims[axis...].reduce(1, *)
        var offset = 0
        for output in node.outputs {
            let rowOut = shape(output)[axis...].reduce(1, *)
            try emitBlockCopy(node, from: Operand(base.buffer(input), offset: offset), sourceStride: rowIn,
                              to: data(output), targetStride: rowOut, rows: outer, length: rowOut)
            offset += rowOut
        }
    }

    /// Slice backward: the bottom diff assembled from the tops' diffs (zero where none was written).
    mutating func lowerSliceBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let input = node.inputs[0], dims = shape(input)
        if node.outputs.count == 1 { diffOf[input] = try topDiff(node, node.outputs[0]).buffer; return }
        let axis = try node.axisAttribute()
        let outer = dims[..<axis].reduce(1, *), rowIn = dims[axis...].reduce(1, *)
        let dx = bottomDiff(node, 0)
        var offset = 0
        for output in node.outputs {
            let rowOut = shape(output)[axis...].reduce(1, *)
            try emitBlockCopy(node, from: topDiff(node, output), sourceStride: rowOut,
                              to: Operand(dx.buffer, offset: dx.offset + offset), targetStride: rowIn, rows: outer, length: rowOut)
            offset += rowOut
        }
    }

    // MARK: Crop

    /// Crop's per-axis offsets into the bottom (0 before `axis`; one offset for all later axes, or
    /// one per axis).
    private func cropOffsets(_ node: Node) throws -> [Int] {
        let p = node.layer.cropParam
        let dims = shape(node.inputs[0])
        guard let axis = graph.values[node.inputs[0]].shape.canonicalAxis(Int(p.axis)), axis < dims.count else {
            throw Diagnostic("crop axis \(p.axis) is out of range for \(dims)", at: node.location, layer: node.name)
        }
        return dims.indices.map { i in
            guard i >= axis, !p.offset.isEmpty else { return 0 }
            return Int(p.offset.count == 1 ? p.offset[0] : p.offset[i - axis])
        }
    }

    /// `y[i] = x[i + offsets]` for every top element (or the reverse for backward): one task per
    /// row of the top's last axis.
    private mutating func emitCrop(_ node: Node, small: Operand, large: Operand, smallDims: [Int], largeDims: [Int],
                                   offsets: [Int], backward: Bool) throws {
        let rank = smallDims.count, last = smallDims[rank - 1]
        let rows = smallDims.dropLast().reduce(1, *)
        var largeStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { largeStrides[i] = largeStrides[i + 1] * largeDims[i + 1] }
        let base0 = zip(offsets, largeStrides).reduce(0) { $0 + $1.0 * $1.1 }
        let signature = "crop small\(smallDims) large\(largeDims) off\(offsets) backward=\(backward)"
        try base.emitKernel(node, signature, operands: [small, large], tasks: rows, work: rows * last) { b in
            let (s, l) = (b.operand(0), b.operand(1))
            b.forEachTask { row in
                var remaining = row
                var start = b.index(base0)
                for axis in stride(from: rank - 2, through: 0, by: -1) {
                    let coordinate = remaining % smallDims[axis]
                    remaining = remaining / smallDims[axis]
                    start = start + coordinate * largeStrides[axis]
                }
                b.loop(0..<last) { i in
                    if backward { l[start + i] = s[row * last + i] } else { s[row * last + i] = l[start + i] }
                }
            }
        }
    }

    mutating func lowerCropForward(_ node: Node) throws {
        try emitCrop(node, small: data(node.outputs[0]), large: data(node.inputs[0]), smallDims: shape(node.outputs[0]),
                     largeDims: shape(node.inputs[0]), offsets: cropOffsets(node), backward: false)
    }

    /// Crop backward: zero the bottom diff and copy the top diff into the cropped window. The
    /// reference bottom gets a zero diff, as in Caffe.
    mutating func lowerCropBackward(_ node: Node) throws {
        if analysis.writesBottomDiff(node, 1) { try base.emitFill(node, bottomDiff(node, 1), count: count(node.inputs[1]), value: 0) }
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitFill(node, dx, count: count(node.inputs[0]), value: 0)
        try emitCrop(node, small: dy, large: dx, smallDims: shape(node.outputs[0]), largeDims: shape(node.inputs[0]),
                     offsets: cropOffsets(node), backward: true)
    }

    // MARK: Tile

    private func tileSplit(_ node: Node) throws -> (outer: Int, inner: Int, tiles: Int) {
        let p = node.layer.tileParam
        let dims = shape(node.inputs[0])
        guard let axis = graph.values[node.inputs[0]].shape.canonicalAxis(Int(p.axis)), axis < dims.count else {
            throw Diagnostic("tile axis \(p.axis) is out of range for \(dims)", at: node.location, layer: node.name)
        }
        return (dims[..<axis].reduce(1, *), dims[axis...].reduce(1, *), Int(p.tiles))
    }

    /// Tile forward: each outer block of the bottom repeated `tiles` times.
    mutating func lowerTileForward(_ node: Node) throws {
        let (outer, inner, tiles) = try tileSplit(node)
        try base.emitTile(node, input: data(node.inputs[0]), output: data(node.outputs[0]), outer: outer, inner: inner, tiles: tiles)
    }

    /// Tile backward: the sum of the tiles' diffs, first tile copied then the others added.
    mutating func lowerTileBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (outer, inner, tiles) = try tileSplit(node)
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "tile.grad n\(inner) t\(tiles)", operands: [dy, dx], tasks: outer, work: outer * inner * tiles) { b in
            let (topDiff, result) = (b.operand(0), b.operand(1))
            b.forEachTask { o in
                b.loop(0..<inner) { i in
                    let total = b.variable(topDiff[o * tiles * inner + i])
                    b.loop(1..<max(1, tiles)) { t in total.value = total.value + topDiff[(o * tiles + t) * inner + i] }
                    result[o * inner + i] = total.value
                }
            }
        }
    }
}
