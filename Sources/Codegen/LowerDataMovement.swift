import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Crop (`CropLayer::Forward_cpu`): the top takes the second bottom's shape from `axis` on;
    /// axis `i ≥ axis` starts at `offset[0]` (one offset for all axes) or `offset[i − axis]`, axes
    /// before `axis` are kept whole. One task per output row (all axes but the last), each a
    /// contiguous copy; the input offset of a row is computed from constants.
    mutating func lowerCrop(_ node: Node) throws {
        let p = node.layer.cropParam
        let input = node.inputs[0], output = node.outputs[0]
        let inDims = shape(input), outDims = shape(output)
        guard let start = graph.values[input].shape.canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range") }
        let offsets = try inDims.indices.map { axis -> Int in
            guard axis >= start else { return 0 }
            let offset = p.offset.isEmpty ? 0 : Int(p.offset.count == 1 ? p.offset[0] : p.offset[axis - start])
            guard offset + outDims[axis] <= inDims[axis] else {
                throw Diagnostic("crop offset \(offset) on axis \(axis) with size \(outDims[axis]) exceeds the bottom's \(inDims[axis])",
                                 at: node.location, layer: node.name)
            }
            return offset
        }
        guard !outDims.isEmpty else { return }
        let last = outDims.count - 1
        var inStrides = [Int](repeating: 1, count: inDims.count)
        for axis in stride(from: last - 1, through: 0, by: -1) { inStrides[axis] = inStrides[axis + 1] * inDims[axis + 1] }
        let rows = outDims[..<last].reduce(1, *), width = outDims[last]
        let signature = "crop in\(inDims) out\(outDims) off\(offsets)"
        try emitKernel(node, signature, operands: [Operand(buffer(input)), Operand(buffer(output))], tasks: rows, work: rows * width) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { row in
                var source = b.index(offsets[last])
                var rest = row
                for axis in stride(from: last - 1, through: 0, by: -1) {
                    source = source + (rest % outDims[axis] + offsets[axis]) * inStrides[axis]
                    rest = rest / outDims[axis]
                }
                b.loop(0..<width) { i in y[row * width + i] = x[source + i] }
            }
        }
    }

    /// Slice (`SliceLayer::Forward_cpu`): splits `axis` (or legacy `slice_dim`) at `slice_point`s,
    /// or into equal parts when none are given; each top copies its block of every outer row.
    mutating func lowerSlice(_ node: Node) throws {
        let input = node.inputs[0], dims = shape(input)
        let axis = try node.axisAttribute()
        let outer = dims[..<axis].reduce(1, *), inner = dims[(axis + 1)...].reduce(1, *)
        let rowIn = dims[axis] * inner
        var start = 0
        for output in node.outputs {
            let size = shape(output)[axis], rowOut = size * inner
            try emitKernel(node, "slice.rows in\(rowIn) out\(rowOut)", operands: [Operand(buffer(input), offset: start * inner), Operand(buffer(output))],
                           tasks: outer, work: outer * rowOut) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { row in
                    b.loop(0..<rowOut) { i in y[row * rowOut + i] = x[row * rowIn + i] }
                }
            }
            start += size
        }
        guard start == dims[axis] else {
            throw Diagnostic("the tops cover \(start) of the \(dims[axis]) entries of axis \(axis)", at: node.location, layer: node.name)
        }
    }

    /// Tile (`TileLayer::Forward_cpu`): each outer row (axes before `axis`) of `inner` values
    /// (axes from `axis` on) is repeated `tiles` times. One task per (row, tile).
    mutating func lowerTile(_ node: Node) throws {
        let p = node.layer.tileParam
        let input = node.inputs[0], dims = shape(input)
        guard let axis = graph.values[input].shape.canonicalAxis(Int(p.axis)) else { throw unsupported(node, "axis \(p.axis) is out of range") }
        let tiles = Int(p.tiles)
        guard tiles > 0 else { throw unsupported(node, "tiles must be positive, got \(tiles)") }
        try emitTile(node, input: Operand(buffer(input)), output: Operand(buffer(node.outputs[0])),
                     outer: dims[..<axis].reduce(1, *), inner: dims[axis...].reduce(1, *), tiles: tiles)
    }

    /// Each of `outer` rows of `inner` values written `tiles` times in a row; one task per (row,
    /// tile). Also the training compiler's Tile forward.
    mutating func emitTile(_ node: Node, input: Operand, output: Operand, outer: Int, inner: Int, tiles: Int) throws {
        try emitKernel(node, "tile i\(inner) t\(tiles)", operands: [input, output], tasks: outer * tiles, work: outer * tiles * inner) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { task in
                let row = task / tiles
                b.loop(0..<inner) { i in y[task * inner + i] = x[row * inner + i] }
            }
        }
    }

    /// BatchReindex: top item `i` is bottom item `int(index[i])` (Caffe truncates the float).
    /// Caffe CHECKs `0 <= index < N`: when the index blob is a net input, `CompiledNet.run` checks
    /// it first and throws an error naming the layer; a computed index is clamped into `0..<N` so
    /// the kernel never reads outside the bottom.
    mutating func lowerBatchReindex(_ node: Node) throws {
        let input = node.inputs[0], dims = shape(input)
        let items = shape(node.outputs[0]).first ?? 0, inner = dims.dropFirst().reduce(1, *), n = dims.first ?? 0
        guard n > 0 else { return }
        checkIndices(node, node.inputs[1], limit: n, what: "batch indices")
        let operands = [Operand(buffer(input)), Operand(buffer(node.inputs[1])), Operand(buffer(node.outputs[0]))]
        try emitKernel(node, "batch_reindex n\(n) i\(inner)", operands: operands, tasks: items, work: items * inner) { b in
            let (x, index, y) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { item in
                let source = b.max(b.index(0), b.min(b.int(index[item]), b.index(n - 1)))
                b.loop(0..<inner) { i in y[item * inner + i] = x[source * inner + i] }
            }
        }
    }

    /// Embed (`EmbedLayer::Forward_cpu`): each index `int(x)` selects a row of the
    /// input_dim × num_output weights, plus the bias. Caffe DCHECKs the range: when the index blob
    /// is a net input, `CompiledNet.run` checks it first and throws an error naming the layer; a
    /// computed index is clamped into `0..<input_dim` so the kernel never reads outside the weights.
    mutating func lowerEmbed(_ node: Node) throws {
        let p = node.layer.embedParam
        let blobs = try parameterBlobs(node)
        let (k, n) = (Int(p.inputDim), Int(p.numOutput))
        guard k > 0, n > 0 else { throw unsupported(node, "input_dim and num_output must be positive") }
        let weights = parameter(node, 0, "weights", blobs)
        let bias = p.biasTerm ? parameter(node, 1, "bias", blobs) : nil
        let m = count(node.inputs[0])
        checkIndices(node, node.inputs[0], limit: k, what: "indices into input_dim \(k)")
        try emitEmbed(node, indices: Operand(buffer(node.inputs[0])), weights: Operand(weights), output: Operand(buffer(node.outputs[0])),
                      bias: bias.map { Operand($0) }, count: m, inputDim: k, outputs: n)
    }

    /// Embed's lookup: output row `i` is weight row `indices[i]` (clamped into `0..<inputDim`)
    /// plus the bias. One task per index. Also the training compiler's Embed forward.
    mutating func emitEmbed(_ node: Node, indices: Operand, weights: Operand, output: Operand, bias: Operand?,
                            count m: Int, inputDim k: Int, outputs n: Int) throws {
        try emitKernel(node, "embed k\(k) n\(n) bias=\(bias != nil)", operands: [indices, weights, output] + (bias.map { [$0] } ?? []),
                       tasks: m, work: m * n) { b in
            let (x, weight, y) = (b.operand(0), b.operand(1), b.operand(2))
            let biasValues = bias.map { _ in b.operand(3) }
            b.forEachTask { item in
                let row = b.max(b.index(0), b.min(b.int(x[item]), b.index(k - 1)))
                b.loop(0..<n) { j in
                    let value = weight[row * n + j]
                    y[item * n + j] = biasValues.map { value + $0[j] } ?? value
                }
            }
        }
    }

    /// DummyData with constant fillers: each top is filled with its filler's value (one filler
    /// for all tops, or one per top) by a kernel at every run. Other filler types are random in
    /// Caffe and are refused.
    mutating func lowerDummyData(_ node: Node) throws {
        let fillers = node.layer.dummyDataParam.dataFiller
        for (index, output) in node.outputs.enumerated() {
            let filler: Caffe_FillerParameter? = fillers.isEmpty ? nil : (fillers.count == 1 ? fillers[0] : (index < fillers.count ? fillers[index] : nil))
            let type = filler?.type ?? "constant"
            guard type == "constant" else {
                throw unsupported(node, "DummyData top \(index) uses a '\(type)' filler; only constant fillers are lowered (random ones differ from Caffe's generator)",
                                  hint: "feed the blob as an Input instead")
            }
            try emitFill(node, Operand(buffer(output)), count: count(output), value: filler?.value ?? 0)
        }
    }

    /// Sets `count` values from `target` on to `value` (DummyData's constant tops, and the training
    /// compiler's zeroed diffs and constant gradients).
    mutating func emitFill(_ node: Node, _ target: Operand, count: Int, value: Float) throws {
        try emitKernel(node, "fill \(value.bitPattern)", operands: [target], tasks: count, work: count) { b in
            let y = b.operand(0)
            b.forEachTask { i in y[i] = b.constant(value) }
        }
    }

    /// Im2col layer: Caffe's im2col of each image of N×C×H×W into N×(C·KH·KW)×OH×OW, with the
    /// same JIT'd unfolding as Convolution.
    mutating func lowerIm2colLayer(_ node: Node) throws {
        let input = node.inputs[0], output = node.outputs[0]
        let g = try node.convolutionGeometry()
        guard g.channelAxis == 1 else { throw unsupported(node, "only the channel axis 1 is lowered so far") }
        let dims = shape(input)
        let (n, c) = (dims[0], dims[1]), image = Array(dims[2...])
        let result = image.indices.map { g.convolutionOutput(image[$0], axis: $0) }
        let imageCount = c * image.reduce(1, *), columnCount = c * g.kernel.reduce(1, *) * result.reduce(1, *)
        guard columnCount * n == count(output) else {
            throw Diagnostic("im2col output should hold \(columnCount * n) values, the graph says \(shape(output))", at: node.location, layer: node.name)
        }
        for item in 0..<n {
            try emitIm2col(node, g, channels: c, image: image, result: result,
                           input: Operand(buffer(input), offset: item * imageCount), columns: Operand(buffer(output), offset: item * columnCount))
        }
    }

    /// Registers a run-time range check of `value` when it is a net input (or a view of one).
    private mutating func checkIndices(_ node: Node, _ value: ValueID, limit: Int, what: String) {
        let id = buffer(value)
        if let input = program.inputs.first(where: { $0.buffer == id }) {
            inputChecks.append(InputCheck(input: input.name, layer: node.name, kind: .indices(limit: limit, what: what)))
        }
    }
}
