import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Convolution as Caffe computes it: per image, unfold the input into columns with a JIT'd,
    /// shape-specialized im2col (skipped for 1×1 stride-1 unpadded kernels, whose input already is
    /// the column matrix), multiply each group's weights by its columns with `sgemm`, then add the
    /// bias per output channel and apply the fused activation in one epilogue pass. One image runs
    /// each step across all threads; a batch runs whole images per thread (an item loop).
    ///
    /// Shapes (2-D; N-D is the same with more spatial axes): input N×C×H×W, weights
    /// O×(C/G)×KH×KW, output N×O×OH×OW; for group g,
    /// `out[g] (O/G × OH·OW) = W[g] (O/G × K) · columns[g] (K × OH·OW)` with `K = C/G·KH·KW`.
    /// A layer with several bottoms applies the same weights to each (Caffe's shared-weight form).
    mutating func lowerConvolution(_ node: Node) throws {
        let blobs = try parameterBlobs(node)
        guard let first = node.inputs.first else { return }
        let geometry = try node.convolutionGeometry()
        guard geometry.channelAxis == 1 else {
            throw unsupported(node, "only convolution with the channel axis 1 (N×C×spatial blobs) is lowered so far")
        }
        let (channels, outputs) = (shape(first)[1], shape(node.outputs[0])[1])
        if let residual = node.fusedResidual {
            try lowerConvolution(node, geometry, blobs: blobs, residual: residual)
            return
        }
        let bias = geometry.biasTerm ? parameter(node, 1, "bias", blobs) : nil
        let path = convolutionPath(node, geometry, input: first, output: node.outputs[0])
        if case .winograd(let tile) = path {
            let area = tile.alpha * tile.alpha
            let transformed = try derivedConstant(node, "winograd weights", count: area * outputs * channels, from: 0, blobs) { weights, target in
                Self.winogradWeights(weights, outputs: outputs, channels: channels, tile: tile, into: target)
            }
            for (input, output) in zip(node.inputs, node.outputs) {
                try emitWinogradConvolution(node, tile: tile, items: shape(input)[0], channels: channels, outputs: outputs,
                                            image: Array(shape(input)[2...]), result: Array(shape(output)[2...]), pad: geometry.pad,
                                            input: Operand(buffer(input)), output: Operand(buffer(output)), transformed: transformed,
                                            bias: bias.map { Operand($0) })
            }
            return
        }
        if path == .panels {
            try lowerPanelGemm(node, geometry, blobs: blobs, bias: bias)
            return
        }
        let weights = parameter(node, 0, "weights", blobs)
        for (input, output) in zip(node.inputs, node.outputs) {
            try lowerConvolution(node, geometry, path: path, input: input, output: output, weights: weights, bias: bias)
        }
    }

    /// A batch of `items` images through Winograd F(m×m, 3×3) (`emitWinograd`) with the filters
    /// `transformed` (`winogradWeights`): large images band by band, each band's transforms and
    /// GEMMs on one thread while its tiles are in cache; smaller ones image by image, one image per
    /// thread. Inference and training forwards call it, and training's input gradient of a 3×3
    /// stride-1 convolution (itself such a convolution of the top diff), whose scratch buffers
    /// take `label` so they stay apart from the forward's.
    mutating func emitWinogradConvolution(_ node: Node, tile: WinogradTile, items n: Int, channels: Int, outputs: Int, image: [Int],
                                          result: [Int], pad: [Int], input: Operand, output: Operand, transformed: BufferID,
                                          bias: Operand?, label: String = "winograd") throws {
        let area = tile.alpha * tile.alpha
        let (rows, columns) = tile.tiles(result[0], result[1])
        let (imageCount, resultCount) = (channels * image.reduce(1, *), outputs * result.reduce(1, *))
        if let bandRows = winogradBandRows(tile, result: result, channels: channels, outputs: outputs) {
            let bandTiles = bandRows * columns
            let v = scratch(node, "\(label) input", count: area * channels * bandTiles * threads)
            let m = scratch(node, "\(label) products", count: area * outputs * bandTiles * threads)
            for item in 0..<n {
                try emitItemLoop(node, items: rows / bandRows, strides: [:],
                                 privateSlices: [v: area * channels * bandTiles, m: area * outputs * bandTiles], taskSlices: true) { lowering in
                    try lowering.emitWinograd(node, tile: tile, bandRows: bandRows, channels: channels, outputs: outputs, image: image,
                                              result: result, pad: pad, input: Operand(input.buffer, offset: input.offset + item * imageCount),
                                              output: Operand(output.buffer, offset: output.offset + item * resultCount), transformed: transformed,
                                              bias: bias, scratch: Operand(v), products: Operand(m))
                }
            }
            return
        }
        let tiles = rows * columns
        let copies = n > 1 ? threads : 1
        let v = scratch(node, "\(label) input", count: area * channels * tiles * copies)
        let m = scratch(node, "\(label) products", count: area * outputs * tiles * copies)
        try emitItemLoop(node, items: n, strides: [input.buffer: imageCount, output.buffer: resultCount],
                         privateSlices: [v: area * channels * tiles, m: area * outputs * tiles]) { lowering in
            try lowering.emitWinograd(node, tile: tile, channels: channels, outputs: outputs, image: image, result: result, pad: pad,
                                      input: input, output: output, transformed: transformed,
                                      bias: bias, scratch: Operand(v), products: Operand(m))
        }
    }

    /// How a convolution runs, decided here alone for the plain and the residual lowering: Winograd
    /// (3×3, stride 1, by the policy), a direct depthwise kernel, im2col + GEMM band by band
    /// (large column matrices), or im2col (none for 1×1) + a product: the JIT'd `PanelGemm` where
    /// the host and the shapes allow it, else OpenBLAS + epilogue. Caffe gives every bottom of a
    /// convolution the same shape, so the first one decides.
    enum ConvolutionPath: Equatable {
        case winograd(WinogradTile)
        case depthwise
        case banded(rows: Int)
        case panels
        case gemm
    }

    func convolutionPath(_ node: Node, _ g: ConvolutionGeometry, input: ValueID, output: ValueID) -> ConvolutionPath {
        let dims = shape(input), c = dims[1], result = Array(shape(output)[2...])
        if let tile = winogradTile(node, g, input: dims, outputs: shape(output)[1]) { return .winograd(tile) }
        if g.group == c, g.group > 1, dims.count == 4 { return .depthwise }
        if !g.isPointwise, let rows = bandRows(columnRows: c * g.kernel.reduce(1, *), result: result) { return .banded(rows: rows) }
        return usesPanelGemm(g, inputs: c, outputs: shape(output)[1], columns: result.reduce(1, *)) ? .panels : .gemm
    }

    /// A convolution with a residual folded in (`FuseResidual`): `activation(conv(x) + bias + r)`.
    /// When the im2col/1×1 product path applies and nothing needs `r`'s buffer afterwards, the output
    /// takes that buffer over and the product accumulates onto it (β = 1), so the addition costs
    /// nothing; otherwise the convolution is lowered as usual and one kernel adds `r` and applies
    /// the activation.
    private mutating func lowerConvolution(_ node: Node, _ g: ConvolutionGeometry, blobs: [[Float]], residual: ValueID) throws {
        let (input, output) = (node.inputs[0], node.outputs[0])
        let r = buffer(residual)
        let free = program.buffers[r].isActivation && program.buffers[r].count == count(output) && r != buffer(input)
            && !program.inputs.contains { $0.buffer == r } && valuesLiving(in: r).allSatisfy { lastUse[$0] <= node.id }
        var path = convolutionPath(node, g, input: input, output: output)
        // The AVX2 tile adds residuals only in its packing kernel (faster than OpenBLAS with β = 1 there).
        let depth = shape(input)[1] / g.group * g.kernel.reduce(1, *), columns = shape(output)[2...].reduce(1, *)
        if path == .panels, !panelTile.addsResiduals, !panelTile.packs(depth: depth, columns: columns) { path = .gemm }
        if path == .gemm || path == .panels, free {
            bind(output, to: r)
            let bias = g.biasTerm ? parameter(node, 1, "bias", blobs) : nil
            if path == .panels {
                try lowerPanelGemm(node, g, blobs: blobs, bias: bias, accumulate: true)
                return
            }
            try lowerConvolution(node, g, path: .gemm, input: input, output: output, weights: parameter(node, 0, "weights", blobs), bias: bias,
                                 accumulate: true)
            return
        }
        var plain = node
        (plain.fusedActivation, plain.fusedResidual) = (nil, nil)
        try lowerConvolution(plain)
        let elements = count(output), activation = node.fusedActivation
        try emitKernel(node, "residual.add" + (activation.map { " " + $0.signature } ?? ""), operands: [Operand(buffer(output)), Operand(r)],
                       tasks: elements, work: 2 * elements) { b in
            let (y, addend) = (b.operand(0), b.operand(1))
            b.forEachTask { i in
                let sum = y[i] + addend[i]
                y[i] = activation?.apply(b, sum) ?? sum
            }
        }
    }

    /// The depthwise, banded or im2col (or 1×1) + GEMM + epilogue lowering, as `path` says; with
    /// `accumulate` (the `.gemm` path only) the GEMM adds its product to what the output buffer
    /// holds (β = 1).
    private mutating func lowerConvolution(_ node: Node, _ g: ConvolutionGeometry, path: ConvolutionPath, input: ValueID, output: ValueID,
                                           weights: BufferID, bias: BufferID?, accumulate: Bool = false) throws {
        let (n, c) = (shape(input)[0], shape(input)[1])
        let o = shape(output)[1]
        let image = Array(shape(input)[2...]), result = Array(shape(output)[2...])
        let groups = g.group
        let k = c / groups * g.kernel.reduce(1, *), spatial = result.reduce(1, *), imageCount = c * image.reduce(1, *)
        let x = buffer(input), y = buffer(output)
        if path == .depthwise {
            try emitDepthwise(node, g, batch: n, channels: c, outputs: o, image: image, result: result,
                              input: Operand(x), output: Operand(y), weights: Operand(weights), bias: bias.map { Operand($0) })
            return
        }
        if case .banded(let rows) = path {
            for item in 0..<n {
                try emitBandedConvolution(node, g, channels: c, outputs: o, image: image, result: result, rows: rows,
                                          input: Operand(x, offset: item * imageCount), output: Operand(y, offset: item * o * spatial),
                                          weights: weights, bias: bias)
            }
            return
        }
        try emitImageByImage(node, g, input: input, output: output) { lowering, source in
            var gemm = GemmStep(m: o / groups, n: spatial, k: k, a: Operand(weights), lda: k, b: source, ldb: spatial, c: Operand(y), ldc: spatial)
            gemm.repeats = groups
            gemm.strideA = o / groups * k
            gemm.strideB = k * spatial
            gemm.strideC = o / groups * spatial
            if accumulate { gemm.beta = 1 }
            lowering.emitGemm(node, gemm)
            try lowering.emitEpilogue(node, Operand(y), outer: 1, channels: o, inner: spatial, bias: bias.map { Operand($0) })
        }
    }

    /// `product` once per image of `input`'s batch, as an item loop (each thread convolves whole
    /// images): it gets the image's K×N matrix, the image itself for a 1×1 convolution or else its
    /// im2col columns, written first into the thread's own scratch; `output` is the image's.
    mutating func emitImageByImage(_ node: Node, _ g: ConvolutionGeometry, input: ValueID, output: ValueID,
                                   _ product: (inout Lowering, _ source: Operand) throws -> Void) throws {
        let (n, c) = (shape(input)[0], shape(input)[1])
        let image = Array(shape(input)[2...]), result = Array(shape(output)[2...])
        let (x, y) = (buffer(input), buffer(output))
        let columnCount = c * g.kernel.reduce(1, *) * result.reduce(1, *)
        let columns = g.isPointwise ? nil : scratch(node, "columns", count: columnCount * (n > 1 ? threads : 1))
        try emitItemLoop(node, items: n, strides: [x: c * image.reduce(1, *), y: count(output) / n],
                         privateSlices: columns.map { [$0: columnCount] } ?? [:]) { lowering in
            guard let columns else { return try product(&lowering, Operand(x)) }
            try lowering.emitIm2col(node, g, channels: c, image: image, result: result, input: Operand(x), columns: Operand(columns))
            try product(&lowering, Operand(columns))
        }
    }

    /// Output rows per band under `banding`: the smallest divisor of the first spatial extent whose
    /// band is at least `banding.minimumColumns` wide (so every band has the same shape), or nil when
    /// the column matrix is small enough, there would be fewer bands than threads, or the
    /// convolution has a single spatial axis.
    func bandRows(columnRows: Int, result: [Int]) -> Int? {
        guard result.count >= 2, let height = result.first else { return nil }
        let rowWidth = result.dropFirst().reduce(1, *)
        guard columnRows * rowWidth * height * MemoryLayout<Float>.size > banding.minimumBytes else { return nil }
        let rows = (1...height).first { height % $0 == 0 && $0 * rowWidth >= banding.minimumColumns } ?? height
        return height / rows >= max(2, threads) ? rows : nil
    }

    /// A convolution of one image whose column matrix is too large to stay in cache, band by
    /// band: for each band of `rows` output rows, im2col writes that band's columns into the
    /// thread's own scratch, a GEMM turns them into the band's outputs, and the epilogue adds the
    /// bias and activation, all while the columns are still in L2. Bands are shared among the
    /// threads (an item loop), so nothing synchronises inside the layer. VGG16's 224×224 3×3
    /// convolutions would otherwise write and reread a 115 MB column matrix.
    private mutating func emitBandedConvolution(_ node: Node, _ g: ConvolutionGeometry, channels c: Int, outputs o: Int, image: [Int],
                                                result: [Int], rows: Int, input: Operand, output: Operand, weights: BufferID,
                                                bias: BufferID?) throws {
        let groups = g.group
        let k = c / groups * g.kernel.reduce(1, *), spatial = result.reduce(1, *)
        let bands = result[0] / rows, bandWidth = rows * result.dropFirst().reduce(1, *)
        let columns = scratch(node, "columns", count: c * g.kernel.reduce(1, *) * bandWidth * threads)
        let slice = c * g.kernel.reduce(1, *) * bandWidth
        try emitItemLoop(node, items: bands, strides: [output.buffer: bandWidth], privateSlices: [columns: slice], taskSlices: true) { lowering in
            try lowering.emitIm2col(node, g, channels: c, image: image, result: result, input: input, columns: Operand(columns), bandRows: rows)
            var gemm = GemmStep(m: o / groups, n: bandWidth, k: k, a: Operand(weights), lda: k, b: Operand(columns), ldb: bandWidth,
                                c: output, ldc: spatial)
            gemm.repeats = groups
            gemm.strideA = o / groups * k
            gemm.strideB = k * bandWidth
            gemm.strideC = o / groups * spatial
            lowering.emitGemm(node, gemm)
            let activation = node.fusedActivation
            if bias != nil || activation != nil {
                let signature = "epilogue.band c\(o) s\(spatial) w\(bandWidth) bias=\(bias != nil)" + (activation.map { " " + $0.signature } ?? "")
                try lowering.emitKernel(node, signature, operands: [output] + (bias.map { [Operand($0)] } ?? []), tasks: bands, work: o * spatial) { b in
                    let y = b.operand(0)
                    let shift = bias.map { _ in b.operand(1) }
                    b.forEachTask { band in
                        b.loop(0..<o) { channel in
                            let t = shift.map { $0[channel] }
                            b.loop(0..<bandWidth) { i in
                                let at = channel * spatial + band * bandWidth + i
                                var value = y[at]
                                if let t { value = value + t }
                                if let activation { value = activation.apply(b, value) }
                                y[at] = value
                            }
                        }
                    }
                }
            }
        }
    }

    /// The pass after a GEMM: adds the bias per output channel and applies the node's fused
    /// activation, in one read and one write of the output (nothing is emitted when there is neither).
    mutating func emitEpilogue(_ node: Node, _ output: Operand, outer: Int, channels: Int, inner: Int, bias: Operand?) throws {
        let activation = node.fusedActivation
        guard bias != nil || activation != nil else { return }
        let signature = "epilogue c\(channels) i\(inner) bias=\(bias != nil)" + (activation.map { " " + $0.signature } ?? "")
        // Row t of the product right before is output channel t: the executable may run each GEMM
        // row block's epilogue on the same thread, right after the block.
        var followsRows = false
        if outer == 1, case .gemm(let g)? = program.steps.last?.action, g.c == output, g.repeats == 1, g.m == channels,
           g.n == inner, g.ldc == inner {
            followsRows = true
        }
        try emitKernel(node, signature, operands: [output] + (bias.map { [$0] } ?? []), tasks: outer * channels,
                       work: outer * channels * inner, rowsOfGemm: followsRows) { b in
            let y = b.operand(0)
            let shift = bias.map { _ in b.operand(1) }
            b.forEachTask { row in
                let channel = channels == 1 ? b.index(0) : row % channels
                let t = shift.map { $0[channel] }
                b.loop(0..<inner) { i in
                    let at = row * inner + i
                    var value = y[at]
                    if let t { value = value + t }
                    if let activation { value = activation.apply(b, value) }
                    y[at] = value
                }
            }
        }
    }

    /// Unfolds one C×(spatial) image into a (C·∏kernel) × (∏output) column matrix, zero where a
    /// window reaches into the padding, for any number of spatial axes. One task per input channel.
    /// Along the last axis the range of output positions that land inside the image depends only on
    /// the kernel offset, so it is a compile-time constant: each generated row is a zero run, a
    /// strided copy and a zero run, with no per-element bounds checks. Outer axes contribute one
    /// "row inside the image" predicate per output row. The walk and the row moves are
    /// `ColumnLayout`'s, shared with training's col2im: a stride-1 row of up to eight vectors moves
    /// as masked vector loads and stores, so 14- or 16-wide rows (CIFAR, ResNet's late stages) are
    /// not left to scalar remainder loops.
    ///
    /// With `bandRows`, the kernel's tasks are bands of that many rows of the first output axis
    /// instead of channels: task `b` writes the columns of output rows `b·bandRows..<(b+1)·bandRows`
    /// only, as a (C·∏kernel) × (bandRows·∏other output axes) matrix.
    mutating func emitIm2col(_ node: Node, _ g: ConvolutionGeometry, channels c: Int, image: [Int], result: [Int],
                             input: Operand, columns: Operand, bandRows: Int? = nil) throws {
        let layout = ColumnLayout(channels: c, image: image, result: result, g)
        let width = layout.rowVectorWidth(lanes: cache.jit.features.vectorLanes)
        let signature = "im2col \(layout.signature)" + (bandRows.map { " band\($0)" } ?? "") + (width.map { " rows of \($0)" } ?? "")
        let tasks = bandRows.map { result[0] / $0 } ?? c
        try emitKernel(node, signature, operands: [input, columns], tasks: tasks, work: c * layout.kernelCount * layout.resultCount) { b in
            let (x, col) = (b.operand(0), b.operand(1))
            b.forEachTask { task in
                /// One channel's rows: the task's channel, or every channel within a band's task.
                func channel(_ channel: Index) {
                    layout.walk(b, channel: channel, band: bandRows.map { (task, $0) }, unrolled: false) { column, start, lower, upper, inside in
                        layout.copyRow(b, from: x, to: col, column: column, image: start, lower: lower, upper: upper, inside: inside, width: width)
                    }
                }
                if bandRows == nil { channel(task) } else { b.loop(0..<c) { channel($0) } }
            }
        }
    }

    /// Depthwise convolution (one input channel per group, `O/C` outputs per channel) as a direct
    /// kernel: each output plane sums its KH×KW taps (unrolled, constant offsets) over the clipped
    /// window, then adds the bias. One task per (image, output channel) plane. A GEMM per group
    /// would have one row, so the im2col traffic would dominate; here the input is read in place.
    /// When the horizontal stride is 1 or 2, rows are computed a vector of outputs at a time
    /// (`DepthwiseRows`). Otherwise each output is a scalar: outputs whose window lies wholly
    /// inside the image read their taps at constant offsets with no clamping, so that loop
    /// vectorizes; the sum's order is the same everywhere.
    private mutating func emitDepthwise(_ node: Node, _ g: ConvolutionGeometry, batch n: Int, channels c: Int, outputs o: Int,
                                        image: [Int], result: [Int], input: Operand, output: Operand,
                                        weights: Operand, bias: Operand?) throws {
        let (h, w) = (image[0], image[1]), (oh, ow) = (result[0], result[1])
        let (kh, kw) = (g.kernel[0], g.kernel[1]), (sh, sw) = (g.stride[0], g.stride[1])
        let (ph, pw) = (g.pad[0], g.pad[1]), (dh, dw) = (g.dilation[0], g.dilation[1])
        let multiplier = o / c
        let activation = node.fusedActivation
        let signature = "conv.depthwise c\(c) m\(multiplier) h\(h)w\(w) k\(kh)x\(kw) s\(sh)x\(sw) p\(ph)x\(pw) d\(dh)x\(dw) o\(oh)x\(ow) bias=\(bias != nil)"
            + (activation.map { " " + $0.signature } ?? "")
        let operands = [input, output, weights] + (bias.map { [$0] } ?? [])
        // Outputs whose whole (dilated) window lies inside the image, known from the geometry.
        let rows = Self.interior(count: oh, stride: sh, pad: ph, kernel: (kh - 1) * dh + 1, extent: h)
        let columns = Self.interior(count: ow, stride: sw, pad: pw, kernel: (kw - 1) * dw + 1, extent: w)
        if sw <= 2 {
            // The host's vector width (16 lanes with AVX-512, 8 with AVX2), half of it for rows that fit.
            let lanes = cache.jit.features.vectorLanes
            let width = KernelBuilder.rowWidth(outputs: ow, lanes: lanes)
            try emitKernel(node, signature + " rows of \(width)", operands: operands, tasks: n * o, work: n * o * oh * ow * kh * kw) { b in
                let biasValues = bias.map { _ in b.operand(3) }
                b.forEachTask { plane in
                    let channel = plane % o, item = plane / o
                    let source = (item * c + channel / multiplier) * (h * w), target = plane * (oh * ow)
                    let row = DepthwiseRows(
                        b: b, x: b.operand(0), y: b.operand(1), width: width, image: (h, w), result: (oh, ow),
                        kernel: (kh, kw), stride: (sh, sw), pad: (ph, pw), dilation: (dh, dw), source: source, target: target,
                        taps: (0..<(kh * kw)).map { b.splat(b.operand(2)[channel * (kh * kw) + $0], width: width) },
                        bias: biasValues.map { b.splat($0[channel], width: width) }, activation: activation)
                    for oy in 0..<rows.lowerBound { row.emit(b.index(oy), fixedRow: oy, last: oy == oh - 1) }
                    b.loop(rows) { row.emit($0, fixedRow: nil, last: rows.upperBound == oh) }
                    for oy in rows.upperBound..<oh { row.emit(b.index(oy), fixedRow: oy, last: oy == oh - 1) }
                }
            }
            return
        }
        try emitKernel(node, signature, operands: operands, tasks: n * o, work: n * o * oh * ow * kh * kw) { b in
            let (x, y, weight) = (b.operand(0), b.operand(1), b.operand(2))
            let biasValues = bias.map { _ in b.operand(3) }
            b.forEachTask { plane in
                let channel = plane % o, item = plane / o
                let source = (item * c + channel / multiplier) * (h * w), target = plane * (oh * ow)
                let taps = (0..<(kh * kw)).map { weight[channel * (kh * kw) + $0] }
                /// One output: the taps summed in Caffe's order; `inside` windows read at constant
                /// offsets, border windows clamp and zero what falls in the padding.
                func element(_ oy: Index, _ ox: Index, inside windowInside: Bool) {
                        var sum: Scalar?
                        for ky in 0..<kh {
                            let iy = oy * sh + (ky * dh - ph)
                            let rowInside = iy >= 0 && iy < h
                            let row = windowInside ? iy * w : b.max(b.index(0), b.min(iy, b.index(h - 1))) * w
                            for kx in 0..<kw {
                                let ix = ox * sw + (kx * dw - pw)
                                let term: Scalar
                                if windowInside {
                                    term = x[source + row + ix] * taps[ky * kw + kx]
                                } else {
                                    let inside = rowInside && (ix >= 0 && ix < w)
                                    let column = b.max(b.index(0), b.min(ix, b.index(w - 1)))
                                    term = b.select(inside, x[source + row + column], b.constant(0)) * taps[ky * kw + kx]
                                }
                                sum = sum.map { $0 + term } ?? term
                            }
                        }
                        var value = sum!
                        if let biasValues { value = value + biasValues[channel] }
                        if let activation { value = activation.apply(b, value) }
                        y[target + oy * ow + ox] = value
                }
                func row(_ oy: Index, inside: Bool) {
                    b.loop(0..<columns.lowerBound) { element(oy, $0, inside: false) }
                    b.loop(columns) { element(oy, $0, inside: inside) }
                    b.loop(columns.upperBound..<ow) { element(oy, $0, inside: false) }
                }
                b.loop(0..<rows.lowerBound) { row($0, inside: false) }
                b.loop(rows) { row($0, inside: true) }
                b.loop(rows.upperBound..<oh) { row($0, inside: false) }
            }
        }
    }

    /// InnerProduct: `y (M×N) = x (M×K) · Wᵀ + bias`, where M is the product of the axes before
    /// `axis` and K of the rest; with `transpose: true` the stored weights are K×N and used as is.
    mutating func lowerInnerProduct(_ node: Node) throws {
        let p = try node.innerProductAttributes()
        let blobs = try parameterBlobs(node)
        let bias = p.biasTerm ? parameter(node, 1, "bias", blobs) : nil
        let input = node.inputs[0], output = node.outputs[0]
        let axis = p.axis
        let m = shape(input)[..<axis].reduce(1, *), k = shape(input)[axis...].reduce(1, *), n = p.numOutput
        let x = buffer(input), y = buffer(output)
        if innerProductPanels, (2...InnerProductPanels.maximumRows).contains(m), n % InnerProductPanels.width == 0,
           k * n >= InnerProductPanels.minimumWeights {
            let transpose = p.transpose
            let panels = try derivedConstant(node, "weight panels", count: n * k, from: 0, blobs) { weights, target in
                InnerProductPanels.pack(weights, outputs: n, inputs: k, transposed: transpose, into: target)
            }
            try emitInnerProductPanels(node, rows: m, inputs: k, outputs: n, x: Operand(x), panels: Operand(panels), y: Operand(y))
            try emitEpilogue(node, Operand(y), outer: m, channels: n, inner: 1, bias: bias.map { Operand($0) })
            return
        }
        let weights = parameter(node, 0, "weights", blobs)
        var gemm = GemmStep(m: m, n: n, k: k, a: Operand(x), lda: k, b: Operand(weights), ldb: p.transpose ? n : k,
                            c: Operand(y), ldc: n)
        gemm.transB = !p.transpose
        emitGemm(node, gemm)
        try emitEpilogue(node, Operand(y), outer: m, channels: n, inner: 1, bias: bias.map { Operand($0) })
    }
}

/// One output row of a depthwise plane, `width` outputs at a time: per vector, the KH×KW taps in
/// Caffe's order (each a vector load of the input row times the broadcast weight), then the bias
/// and the activation, stored under the row's lane mask. Horizontal padding costs nothing: the
/// lanes of a load that fall outside the image row are masked off and read as 0, and which lanes
/// those are is known per (vector, tap) at compile time. Stride 2 reads two vectors and keeps the
/// even lanes. Rows near the top and bottom are emitted one by one (`fixedRow`), leaving out the
/// taps whose input row is padding; the rows between run in one loop and read every tap.
///
/// This is what makes short rows fast: the 14- and 7-wide planes of MobileNet's later layers are
/// one masked vector per row, where the scalar kernel's interior loop was too short to vectorize
/// and its border outputs each clamped and selected per tap.
struct DepthwiseRows {
    let b: KernelBuilder
    let x: Buffer, y: Buffer
    let width: Int
    let image: (h: Int, w: Int), result: (h: Int, w: Int)
    let kernel: (h: Int, w: Int), stride: (h: Int, w: Int), pad: (h: Int, w: Int), dilation: (h: Int, w: Int)
    /// The plane's first input and output elements.
    let source: Index, target: Index
    let taps: [FloatVector]
    let bias: FloatVector?
    let activation: FusedActivation?

    /// Output row `oy`; `fixedRow` is its value when known, to leave out taps in the padding.
    /// Unless the row may be the plane's `last`, a row's partial last vector is stored whole: the
    /// lanes past the row land in the next row, which this task writes afterwards. Masked stores
    /// are slow where they are not AVX-512's (`vmaskmovps` to memory on Zen 4: MobileNet's 14×14
    /// depthwise layers ran at 0.45× of the AVX-512 path's time with one per output row).
    func emit(_ oy: Index, fixedRow: Int?, last: Bool) {
        for first in Swift.stride(from: 0, to: result.w, by: width) {
            let lanes = min(width, result.w - first)
            var sum: FloatVector?
            for ky in 0..<kernel.h {
                let offset = ky * dilation.h - pad.h
                if let fixedRow, !(0..<image.h).contains(fixedRow * stride.h + offset) { continue }
                let rowStart = source + (oy * stride.h + offset) * image.w
                for kx in 0..<kernel.w {
                    let term = b.stridedRow(x, rowStart, column: first * stride.w + kx * dilation.w - pad.w, stride: stride.w, lanes: lanes,
                                            width: width, rowWidth: image.w) * taps[ky * kernel.w + kx]
                    sum = sum.map { $0 + term } ?? term
                }
            }
            var value = sum ?? b.splat(0, width: width)
            if let bias { value = value + bias }
            if let activation { value = activation.apply(b, value) }
            let spills = !last && width - lanes <= result.w  // the extra lanes stay inside the next row
            y.store(value, at: target + oy * result.w + first, LaneMask(first: spills ? width : lanes, of: width))
        }
    }
}

/// An InnerProduct over a few rows (a handful of ROIs, a small batch) streams its weights once
/// instead of packing them for a GEMM (OpenBLAS packs the whole weight matrix for every call,
/// twice the memory traffic of the product itself, which is all that matters when the weights
/// are hundreds of MB and the rows few). The weights are regrouped at compile time into panels
/// of `width` outputs, each panel K×width contiguous, so one task reads one panel front to back.
enum InnerProductPanels {
    static let width = 16
    static let maximumRows = 8
    /// Weight matrices smaller than this stay with the GEMM (they fit in cache anyway).
    static let minimumWeights = 1 << 20

    /// Writes panels `[n / width][k][width]` from Caffe's N×K weights (K×N with `transpose: true`).
    static func pack(_ w: UnsafeBufferPointer<Float>, outputs n: Int, inputs k: Int, transposed: Bool, into panels: UnsafeMutablePointer<Float>) {
        for panel in 0..<(n / width) {
            for kk in 0..<k {
                for lane in 0..<width {
                    let j = panel * width + lane
                    panels[(panel * k + kk) * width + lane] = transposed ? w[kk * n + j] : w[j * k + kk]
                }
            }
        }
    }
}

extension Lowering {
    /// `y (M×N) = x (M×K) · Wᵀ` by weight panels (see `InnerProductPanels`): one task per panel of
    /// 16 outputs keeps M×16 running sums while it walks the panel's K rows once, summing in the
    /// order k = 0, 1, …
    mutating func emitInnerProductPanels(_ node: Node, rows m: Int, inputs k: Int, outputs n: Int,
                                         x: Operand, panels: Operand, y: Operand) throws {
        let width = InnerProductPanels.width
        try emitKernel(node, "ip.panels m\(m) k\(k) n\(n)", operands: [x, panels, y], tasks: n / width, work: m * n * k) { b in
            let (input, weights, output) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { panel in
                let sums = (0..<(m * width)).map { _ in b.variable(b.constant(0)) }
                let start = panel * (k * width)
                b.loop(0..<k) { kk in
                    let w = (0..<width).map { weights[start + kk * width + $0] }
                    for i in 0..<m {
                        let value = input[kk + i * k]
                        for lane in 0..<width { sums[i * width + lane].value = sums[i * width + lane].value + value * w[lane] }
                    }
                }
                for i in 0..<m {
                    for lane in 0..<width { output[panel * width + (i * n + lane)] = sums[i * width + lane].value }
                }
            }
        }
    }
}

/// `⌈a / b⌉` for a positive `b` and any `a`.
func ceilDiv(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? (a + b - 1) / b : -((-a) / b)
}
