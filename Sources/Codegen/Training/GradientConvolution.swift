import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// im2col of one image into its column matrix: the forward convolution's kernel
    /// (`emitIm2col(_:_:channels:image:result:input:columns:bandRows:)`), so training compiles one
    /// im2col per geometry for both passes.
    mutating func emitIm2col(_ node: Node, _ layout: ColumnLayout, image: Operand, columns: Operand) throws {
        try emitIm2col(node, layout.geometry, channels: layout.channels, image: layout.image, result: layout.result, input: image, columns: columns)
    }

    /// col2im: folds a column matrix back into an image, summing overlapping windows (the image is
    /// overwritten, as Caffe zeroes it first). One task per channel, so tasks never collide.
    mutating func emitCol2im(_ node: Node, _ layout: ColumnLayout, columns: Operand, image: Operand) throws {
        let plane = layout.image.reduce(1, *)
        let width = layout.rowVectorWidth(lanes: cache.jit.features.vectorLanes)
        try emitKernel(node, "train.col2im \(layout.signature)" + (width.map { " rows of \($0)" } ?? ""), operands: [columns, image],
                       tasks: layout.channels, work: layout.columnCount) { b in
            let (col, x) = (b.operand(0), b.operand(1))
            b.forEachTask { channel in
                b.loop(0..<plane) { i in x[channel * plane + i] = b.constant(0) }
                layout.walk(b, channel: channel, unrolled: false) { column, start, lower, upper, inside in
                    layout.addRow(b, from: col, to: x, column: column, image: start, lower: lower, upper: upper, inside: inside, width: width)
                }
            }
        }
    }

    /// The weight gradient of one image, accumulated: `dW[g] += dY[g] (perGroup × spatial) ·
    /// columns[g]ᵀ (spatial × kernelDim)` for each group — convolution's form, and deconvolution's
    /// with the roles of its input and output gradient exchanged.
    mutating func emitWeightGradient(_ node: Node, outputs: Operand, columns: Operand, diff: Operand,
                                     perGroup: Int, kernelDim: Int, spatial: Int, groups: Int) {
        var gemm = GemmStep(m: perGroup, n: kernelDim, k: spatial, a: outputs, lda: spatial, b: columns, ldb: spatial, c: diff, ldc: kernelDim)
        gemm.transB = true
        gemm.beta = 1
        gemm.repeats = groups
        gemm.strideA = perGroup * spatial; gemm.strideB = kernelDim * spatial; gemm.strideC = perGroup * kernelDim
        emitGemm(node, gemm)
    }
}

extension TrainingLowering {
    /// `bias[c] += Σ_n Σ_s dy[n][c][s]`, per image then added, as Caffe's per-image `gemv` does.
    /// Each image's sum over `s` runs in vectors of the host's width (`rowSums`: one accumulator,
    /// then a tree over its lanes), not as one long dependent chain of scalar adds; like
    /// OpenBLAS's gemv in Caffe, it is not the left-to-right order, but the same order on every run.
    mutating func emitBiasGradient(_ node: Node, topDiff: Operand, biasDiff: Operand, outer: Int, channels: Int, inner: Int) throws {
        let lanes = base.cache.jit.features.vectorLanes
        try base.emitKernel(node, "bias.grad o\(outer) c\(channels) i\(inner) rows of \(lanes)",
                            operands: [topDiff, biasDiff], tasks: channels, work: outer * channels * inner) { b in
            let (dy, db) = (b.operand(0), b.operand(1))
            b.forEachTask { c in
                let total = b.variable(db[c])
                b.loop(0..<outer, unrolled: false) { n in
                    let sum = b.rowSums(1, count: inner, from: (n * channels + c) * inner, width: lanes) { i, mask in [dy.load(i, mask)] }[0]
                    total.value = sum + total.value
                }
                db[c] = total.value
            }
        }
    }

    // MARK: Convolution

    /// Convolution backward, per bottom/top pair, image by image as Caffe's `Backward_cpu`: the
    /// bias gradient, then per image `dW[g] += dy[g] · colᵀ` over im2col of the input (GEMM,
    /// accumulating) and `col[g] = W[g]ᵀ · dy[g]` folded back by col2im into the input diff. That
    /// second product runs on the JIT'd panel GEMM (transposed weights packed by a host step
    /// before each backward) when its rows fill the tile's panels; OpenBLAS otherwise. So does the
    /// first, as `dWᵀ += col · dyᵀ` with the columns read in place as the left operand's rows
    /// (`emitPanelGemm(rowStride:)`), into per-thread transposed copies.
    ///
    /// The images are an item loop shared among the threads, each with its own columns. With more
    /// than one thread, each thread accumulates its images' weight gradient into a private copy
    /// (zeroed first), and one pass then adds the copies to the parameter's diff in thread order:
    /// deterministic for a given thread count, Caffe's exact summation order on one thread.
    mutating func lowerConvolutionBackward(_ node: Node) throws {
        guard let first = node.inputs.first else { return }
        let g = try node.convolutionGeometry()
        guard g.channelAxis == 1 else { throw unsupported(node, "only convolution with the channel axis 1 has a backward so far") }
        let weights = parameter(node, 0)
        let wantsWeights = propagatesToParameter(node, 0), wantsBias = g.biasTerm && propagatesToParameter(node, 1)
        let weightCount = shape(node.inputs[0])[1] / g.group * g.kernel.reduce(1, *) * shape(node.outputs[0])[1]
        for (i, (input, output)) in zip(node.inputs, node.outputs).enumerated() {
            let dy = try topDiff(node, output)
            let (n, c, o) = (shape(input)[0], shape(input)[1], shape(output)[1])
            let layout = ColumnLayout(channels: c, image: Array(shape(input)[2...]), result: Array(shape(output)[2...]), g)
            let spatial = layout.resultCount, kernelDim = c / g.group * layout.kernelCount
            if wantsBias {
                try emitBiasGradient(node, topDiff: dy, biasDiff: parameter(node, 1).diff, outer: n, channels: o, inner: spatial)
            }
            let wantsInput = analysis.writesBottomDiff(node, i)
            guard wantsWeights || wantsInput else { continue }
            let x = data(input)
            let inputDiff = wantsInput ? bottomDiff(node, i) : nil
            // The input diff of a 3×3 stride-1 convolution is itself one, of the top diff padded by
            // 2 − pad with the filters turned by 180° and their channel axes exchanged: it runs as
            // Winograd wherever the forward's policy would pick Winograd for that convolution.
            var exchanged = g
            exchanged.pad = g.pad.map { 2 - $0 }
            let dataWinograd = inputDiff != nil && g.pad.allSatisfy({ $0 <= 2 })
                ? base.winogradTile(node, exchanged, input: shape(output), outputs: c) : nil
            if let tile = dataWinograd, let dx = inputDiff {
                let transformed = try base.derivedConstant(node, "data-gradient winograd weights", count: tile.alpha * tile.alpha * c * o,
                                                           from: 0, try base.parameterBlobs(node)) { w, target in
                    Lowering.winogradWeights(w, outputs: c, channels: o, tile: tile, exchanged: true, into: target)
                }
                var plain = node
                (plain.fusedActivation, plain.fusedResidual) = (nil, nil)
                try base.emitWinogradConvolution(plain, tile: tile, items: n, channels: o, outputs: c, image: Array(shape(output)[2...]),
                                                 result: Array(shape(input)[2...]), pad: exchanged.pad, input: dy, output: dx,
                                                 transformed: transformed, bias: nil, label: "data-gradient winograd")
                guard wantsWeights else { continue }
            }
            let dx = dataWinograd == nil ? inputDiff : nil
            // The input diff's product Wᵀ · dy (kernelDim × spatial per image) runs on the panel GEMM
            // when its rows fill panels, with the transposed weights packed before each backward:
            // for a 1×1 convolution over the whole batch (like its forward), for others per image
            // into the thread's columns, which col2im then folds.
            let tile = base.panelTile
            let transposedPanels = dx != nil && g.group == 1 && base.panelGemms && kernelDim % tile.rows == 0 && o <= tile.maximumDepth
            let pointwiseData = transposedPanels && g.isPointwise
            var transposed: BufferID?
            if transposedPanels {
                transposed = try base.derivedConstant(node, "transposed weight panels", count: o * kernelDim, from: 0, try base.parameterBlobs(node)) { w, target in
                    PanelGemm.packTransposed(w, outputs: kernelDim, inputs: o, rows: tile.rows, into: target)
                }
            }
            let threads = n > 1 ? base.threads : 1
            // The weight gradient's product on the panel GEMM, as dWᵀ (kernelDim × o) += columns
            // (kernelDim × spatial, the left operand read in place, row by row) · dyᵀ (spatial × o,
            // transposed per image), when the column rows fill panels: into per-thread transposed
            // copies, summed and transposed back after the loop.
            let weightPanels = wantsWeights && g.group == 1 && base.panelGemms && kernelDim % tile.rows == 0 && spatial <= tile.maximumDepth
            // Small images (14×14, 7×7) give that product a short K, and each product reads and
            // writes the whole kernelDim × o gradient: a block of images side by side in K
            // (`rowBlocks`) makes it one product per block. Blocks keep every thread busy.
            let block = weightPanels ? Self.weightGradientBlock(images: n, threads: threads, spatial: spatial, maximumDepth: tile.maximumDepth) : 1
            let columns = layout.isPointwise ? nil : base.scratch(node, "columns", count: layout.columnCount * block * threads)
            // Per-thread weight gradients, when images run on several threads at once (or transposed).
            let partials = wantsWeights && (threads > 1 || weightPanels)
                ? base.scratch(node, "weight gradient per thread", count: weightCount * threads) : nil
            if let partials { try base.emitFill(node, Operand(partials), count: weightCount * threads, value: 0) }
            let transposedDiff = weightPanels ? base.scratch(node, "top diff transposed", count: spatial * o * block * threads) : nil
            let perGroup = o / g.group
            var strides = [x.buffer: layout.imageCount * block, dy.buffer: o * spatial * block]
            if let dx { strides[dx.buffer] = layout.imageCount * block }
            var slices: [BufferID: Int] = [:]
            if let columns { slices[columns] = layout.columnCount * block }
            if let partials { slices[partials] = weightCount }
            if let transposedDiff { slices[transposedDiff] = spatial * o * block }
            /// Image `i` of the block's part of `operand`, images `size` apart.
            func image(_ operand: Operand, _ i: Int, _ size: Int) -> Operand { Operand(operand.buffer, offset: operand.offset + i * size) }
            try base.emitItemLoop(node, items: n / block, strides: strides, privateSlices: slices) { lowering in
                if wantsWeights {
                    for i in 0..<block {
                        if let columns {
                            try lowering.emitIm2col(node, layout, image: image(x, i, layout.imageCount), columns: Operand(columns, offset: i * layout.columnCount))
                        }
                        if let transposedDiff {
                            try lowering.emitAxisPermutation(node, input: image(dy, i, o * spatial), output: Operand(transposedDiff, offset: i * spatial * o),
                                                             dims: [o, spatial], order: [1, 0])
                        }
                    }
                    if let transposedDiff, let partials {
                        try lowering.emitPanelGemm(node, matrices: 1, groups: 1, inputs: spatial * block, outputs: kernelDim, spatial: o,
                                                   input: Operand(transposedDiff), output: Operand(partials),
                                                   panels: columns.map { Operand($0) } ?? x, bias: nil, accumulate: true,
                                                   activation: false, rowStride: spatial,
                                                   rowBlocks: (block, columns == nil ? layout.imageCount : layout.columnCount))
                    } else {
                        lowering.emitWeightGradient(node, outputs: dy, columns: columns.map { Operand($0) } ?? x,
                                                    diff: partials.map { Operand($0) } ?? weights.diff,
                                                    perGroup: perGroup, kernelDim: kernelDim, spatial: spatial, groups: g.group)
                    }
                }
                for i in 0..<block {
                    let imageColumns = columns.map { Operand($0, offset: i * layout.columnCount) }
                    if let dx, !pointwiseData, let transposed, let imageColumns {
                        try lowering.emitPanelGemm(node, matrices: 1, groups: 1, inputs: o, outputs: kernelDim, spatial: spatial,
                                                   input: image(dy, i, o * spatial), output: imageColumns, panels: Operand(transposed),
                                                   bias: nil, accumulate: false)
                        try lowering.emitCol2im(node, layout, columns: imageColumns, image: image(dx, i, layout.imageCount))
                    } else if let dx, !pointwiseData {
                        let target = image(dx, i, layout.imageCount)
                        var gemm = GemmStep(m: kernelDim, n: spatial, k: perGroup, a: weights.data, lda: kernelDim,
                                            b: image(dy, i, o * spatial), ldb: spatial, c: imageColumns ?? target, ldc: spatial)
                        gemm.transA = true
                        gemm.repeats = g.group
                        gemm.strideA = perGroup * kernelDim; gemm.strideB = perGroup * spatial; gemm.strideC = kernelDim * spatial
                        lowering.emitGemm(node, gemm)
                        if let imageColumns { try lowering.emitCol2im(node, layout, columns: imageColumns, image: target) }
                    }
                }
            }
            if pointwiseData, let dx, let transposed {
                try base.emitPanelGemm(node, matrices: n, groups: 1, inputs: o, outputs: c, spatial: spatial, input: dy, output: dx,
                                       panels: Operand(transposed), bias: nil, accumulate: false)
            }
            if let partials, weightPanels {
                // dW[m][j] += Σ_t dWᵀ_t[j][m], in thread order; one task per output channel m.
                // K and M are read at run time (`KernelExtents`): one kernel for every convolution.
                let copies = (0..<threads).map { Operand(partials, offset: $0 * weightCount) }
                let extents = try base.extents(node, "weight partials", [kernelDim, o])
                try base.emitKernel(node, "weight.partials.sum.transposed t\(threads)", operands: [weights.diff, extents] + copies,
                                    tasks: o, work: weightCount * threads) { b in
                    let diff = b.operand(0)
                    let kernelDim = b.extent(b.operand(1), 0), o = b.extent(b.operand(1), 1)
                    b.forEachTask { m in
                        b.loop(from: b.index(0), to: kernelDim) { j in
                            var total = diff[m * kernelDim + j]
                            for t in 0..<threads { total = total + b.operand(2 + t)[j * o + m] }
                            diff[m * kernelDim + j] = total
                        }
                    }
                }
            } else if let partials {
                // Each thread's copy is its own operand, so the kernel does not depend on the
                // weight count: one kernel serves every convolution of the net.
                let copies = (0..<threads).map { Operand(partials, offset: $0 * weightCount) }
                try base.emitKernel(node, "weight.partials.sum t\(threads)", operands: [weights.diff] + copies, tasks: weightCount,
                                    work: weightCount * threads) { b in
                    let diff = b.operand(0)
                    b.forEachTask { j in
                        var total = diff[j]
                        for t in 0..<threads { total = total + b.operand(1 + t)[j] }
                        diff[j] = total
                    }
                }
            }
        }
    }

    /// Images per weight-gradient product (`lowerConvolutionBackward`): the largest divisor of the
    /// batch that leaves every thread a block and keeps K = images · spatial within 512 (and the
    /// tile's in-place depth). One when a single image's K is already that deep.
    static func weightGradientBlock(images n: Int, threads: Int, spatial: Int, maximumDepth: Int) -> Int {
        let depth = min(512, maximumDepth)
        return (1...max(1, n / max(1, threads))).last { n % $0 == 0 && $0 * spatial <= depth } ?? 1
    }

    // MARK: Deconvolution

    /// Deconvolution forward (Caffe's transposed convolution): per image, `col[g] = W[g]ᵀ · x[g]`
    /// then col2im into the top, plus the bias. Weights are C_in × (O/G) × kernel.
    mutating func lowerDeconvolutionForward(_ node: Node) throws {
        guard let first = node.inputs.first else { return }
        let g = try node.convolutionGeometry()
        guard g.channelAxis == 1 else { throw unsupported(node, "only deconvolution with the channel axis 1 is lowered so far") }
        let weights = parameter(node, 0)
        for (input, output) in zip(node.inputs, node.outputs) {
            let (n, c, o) = (shape(input)[0], shape(input)[1], shape(output)[1])
            let layout = ColumnLayout(channels: o, image: Array(shape(output)[2...]), result: Array(shape(input)[2...]), g)
            let spatial = layout.resultCount, kernelDim = o / g.group * layout.kernelCount, perGroup = c / g.group
            let x = data(input), y = data(output)
            let columns = layout.isPointwise ? nil : Operand(base.scratch(node, "columns", count: layout.columnCount))
            for item in 0..<n {
                let target = Operand(y.buffer, offset: item * layout.imageCount)
                var gemm = GemmStep(m: kernelDim, n: spatial, k: perGroup, a: weights.data, lda: kernelDim,
                                    b: Operand(x.buffer, offset: item * c * spatial), ldb: spatial, c: columns ?? target, ldc: spatial)
                gemm.transA = true
                gemm.repeats = g.group
                gemm.strideA = perGroup * kernelDim; gemm.strideB = perGroup * spatial; gemm.strideC = kernelDim * spatial
                base.emitGemm(node, gemm)
                if let columns { try base.emitCol2im(node, layout, columns: columns, image: target) }
            }
            if g.biasTerm {
                try base.emitChannelAffine(node, input: y, output: y, outer: n, channels: o, inner: layout.image.reduce(1, *),
                                           shift: parameter(node, 1).data)
            }
        }
    }

    /// Deconvolution backward: the bias gradient over the top diff; im2col of the top diff; then
    /// `dW[g] += x[g] · colᵀ` and `dx[g] = W[g] · col[g]`.
    mutating func lowerDeconvolutionBackward(_ node: Node) throws {
        guard let first = node.inputs.first else { return }
        let g = try node.convolutionGeometry()
        let weights = parameter(node, 0)
        let wantsWeights = propagatesToParameter(node, 0), wantsBias = g.biasTerm && propagatesToParameter(node, 1)
        for (i, (input, output)) in zip(node.inputs, node.outputs).enumerated() {
            let dy = try topDiff(node, output)
            let (n, c, o) = (shape(input)[0], shape(input)[1], shape(output)[1])
            let layout = ColumnLayout(channels: o, image: Array(shape(output)[2...]), result: Array(shape(input)[2...]), g)
            let spatial = layout.resultCount, kernelDim = o / g.group * layout.kernelCount, perGroup = c / g.group
            if wantsBias {
                try emitBiasGradient(node, topDiff: dy, biasDiff: parameter(node, 1).diff, outer: n, channels: o, inner: layout.image.reduce(1, *))
            }
            let wantsInput = analysis.writesBottomDiff(node, i)
            guard wantsWeights || wantsInput else { continue }
            let x = data(input)
            let dx = wantsInput ? bottomDiff(node, i) : nil
            let columns = layout.isPointwise ? nil : Operand(base.scratch(node, "columns", count: layout.columnCount))
            for item in 0..<n {
                let gradient = Operand(dy.buffer, offset: dy.offset + item * layout.imageCount)
                if let columns { try base.emitIm2col(node, layout, image: gradient, columns: columns) }
                let source = columns ?? gradient
                if wantsWeights {
                    base.emitWeightGradient(node, outputs: Operand(x.buffer, offset: item * c * spatial), columns: source, diff: weights.diff,
                                       perGroup: perGroup, kernelDim: kernelDim, spatial: spatial, groups: g.group)
                }
                if let dx {
                    var gemm = GemmStep(m: perGroup, n: spatial, k: kernelDim, a: weights.data, lda: kernelDim,
                                        b: source, ldb: spatial, c: Operand(dx.buffer, offset: dx.offset + item * c * spatial), ldc: spatial)
                    gemm.repeats = g.group
                    gemm.strideA = perGroup * kernelDim; gemm.strideB = kernelDim * spatial; gemm.strideC = perGroup * spatial
                    base.emitGemm(node, gemm)
                }
            }
        }
    }

    // MARK: InnerProduct

    /// InnerProduct backward: `dW += dyᵀ · x` (or `xᵀ · dy` for `transpose`), `db += Σ_m dy`,
    /// `dx = dy · W` (or `dy · Wᵀ`).
    mutating func lowerInnerProductBackward(_ node: Node) throws {
        let p = try node.innerProductAttributes()
        let input = node.inputs[0], output = node.outputs[0]
        let axis = p.axis
        let m = shape(input)[..<axis].reduce(1, *), k = shape(input)[axis...].reduce(1, *), n = p.numOutput
        let dy = try topDiff(node, output)
        let x = data(input), weights = parameter(node, 0)
        if propagatesToParameter(node, 0) {
            var gemm: GemmStep
            if p.transpose {
                gemm = GemmStep(m: k, n: n, k: m, a: x, lda: k, b: dy, ldb: n, c: weights.diff, ldc: n)
            } else {
                gemm = GemmStep(m: n, n: k, k: m, a: dy, lda: n, b: x, ldb: k, c: weights.diff, ldc: k)
            }
            gemm.transA = true
            gemm.beta = 1
            base.emitGemm(node, gemm)
        }
        if p.biasTerm, propagatesToParameter(node, 1) {
            try emitBiasGradient(node, topDiff: dy, biasDiff: parameter(node, 1).diff, outer: m, channels: n, inner: 1)
        }
        if analysis.writesBottomDiff(node, 0) {
            let dx = bottomDiff(node, 0)
            var gemm = GemmStep(m: m, n: k, k: n, a: dy, lda: n, b: weights.data, ldb: p.transpose ? n : k, c: dx, ldc: k)
            gemm.transB = p.transpose
            base.emitGemm(node, gemm)
        }
    }
}
