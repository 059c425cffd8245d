import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Pooling over N×C×H×W with Caffe's exact semantics (`PoolingLayer::Forward_cpu`):
    ///
    /// - output extents round up and drop a last window starting in the padding (`PoolingGeometry`);
    /// - MAX scans each window clipped to the image, row by row, keeping the first strict maximum
    ///   (starting from −FLT_MAX); the optional second top gets the flat index `h·W + w` of that
    ///   maximum as a float (−1 if nothing beat −FLT_MAX);
    /// - AVE sums the window clipped to the image but divides by the window clipped to
    ///   `[−pad, H + pad)`, so border averages count padding as zeros.
    ///
    /// One task per (image, channel) plane. Windows wholly inside the image (known at compile time
    /// from the geometry) are unrolled taps at constant offsets, visited in Caffe's order, so the
    /// result is the same bit for bit; border windows clip their bounds in the loop. `argmax`, for
    /// MAX, is where the arg-max indices go when the layer has no mask top (training saves them
    /// for backward).
    mutating func lowerPooling(_ node: Node, argmax: BufferID? = nil) throws {
        let p = try node.poolingAttributes()
        let input = node.inputs[0], dims = shape(input)
        let g = p.geometry
        guard dims.count == 4 else { return try lowerPoolingND(node, g) }
        let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let outDims = shape(node.outputs[0])
        let (oh, ow) = (outDims[2], outDims[3])
        let (kh, kw) = (g.kernel[0], g.kernel[1]), (sh, sw) = (g.stride[0], g.stride[1]), (ph, pw) = (g.pad[0], g.pad[1])
        var operands = [Operand(buffer(input)), Operand(buffer(node.outputs[0]))]
        let geometry = "h\(h)w\(w) k\(kh)x\(kw) s\(sh)x\(sw) p\(ph)x\(pw) o\(oh)x\(ow)"
        let work = n * c * oh * ow * kh * kw
        // Output positions whose window lies wholly inside the image (compile-time ranges): there
        // the window is kh×kw taps at constant offsets, unrolled, and the loop over ox vectorizes.
        let window = PoolingWindow(height: h, width: w, kernel: (kh, kw), pad: (ph, pw))
        let rows = Self.interior(count: oh, stride: sh, pad: ph, kernel: kh, extent: h)
        let columns = Self.interior(count: ow, stride: sw, pad: pw, kernel: kw, extent: w)
        // Interior rows a vector of outputs at a time (`PoolingRows`), where the stride allows.
        let lanes = cache.jit.features.vectorLanes
        let rowWidth = PoolingRows.applies(strideWidth: sw) && !columns.isEmpty ? KernelBuilder.rowWidth(outputs: columns.count, lanes: lanes) : nil
        // A last partial vector may be stored whole when its extra lanes stay inside the plane (the
        // task writes them afterwards): no masked store per row.
        let storesWhole = rowWidth.map { width in
            let lastFirst = columns.lowerBound + (columns.count - 1) / width * width
            return (rows.upperBound - 1) * ow + lastFirst + width <= oh * ow
        } ?? false
        let rowShape = rowWidth.map { " rows of \($0)" + (storesWhole ? " whole" : "") } ?? ""
        func poolingRows(_ b: KernelBuilder, maximum: Bool, plane: Index) -> PoolingRows? {
            rowWidth.map {
                PoolingRows(b: b, x: b.operand(0), y: b.operand(1), width: $0, image: (h, w), result: (oh, ow), kernel: (kh, kw), stride: (sh, sw),
                            pad: (ph, pw), maximum: maximum, source: plane * (h * w), target: plane * (oh * ow), storesWhole: storesWhole)
            }
        }
        /// Emits `element(oy, ox, inside)` over the plane, with `inside` true on the interior ranges;
        /// `vectors`, when given, computes the interior columns of interior rows.
        func overPlane(_ b: KernelBuilder, vectors: PoolingRows? = nil, _ element: (Index, Index, Bool) -> Void) {
            func row(_ oy: Index, inside: Bool) {
                b.loop(0..<columns.lowerBound) { element(oy, $0, false) }
                if inside, let vectors { vectors.emit(oy, columns: columns) } else { b.loop(columns) { element(oy, $0, inside) } }
                b.loop(columns.upperBound..<ow) { element(oy, $0, false) }
            }
            b.loop(0..<rows.lowerBound) { row($0, inside: false) }
            b.loop(rows) { row($0, inside: true) }
            b.loop(rows.upperBound..<oh) { row($0, inside: false) }
        }
        switch p.method {
        case .max:
            let maskBuffer = argmax ?? (node.outputs.count > 1 ? buffer(node.outputs[1]) : nil)
            let withMask = maskBuffer != nil
            if let maskBuffer { operands.append(Operand(maskBuffer)) }
            try emitKernel(node, "pool.max \(geometry) mask=\(withMask)" + (withMask ? "" : rowShape), operands: operands, tasks: n * c, work: work) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                let mask = withMask ? b.operand(2) : nil
                b.forEachTask { plane in
                    let source = plane * (h * w), target = plane * (oh * ow)
                    overPlane(b, vectors: withMask ? nil : poolingRows(b, maximum: true, plane: plane)) { oy, ox, inside in
                        let y0 = oy * sh - ph, x0 = ox * sw - pw
                        let at = target + oy * ow + ox
                        if inside {
                            var best = b.constant(-Float.greatestFiniteMagnitude)
                            var bestIndex = mask.map { _ in b.constant(-1) }
                            for ky in 0..<kh {
                                for kx in 0..<kw {
                                    let v = x[source + (y0 + ky) * w + (x0 + kx)], better = v > best
                                    best = b.select(better, v, best)
                                    bestIndex = bestIndex.map { b.select(better, b.float((y0 + ky) * w + (x0 + kx)), $0) }
                                }
                            }
                            y[at] = best
                            if let mask, let bestIndex { mask[at] = bestIndex }
                            return
                        }
                        let (best, bestIndex) = window.maximum(b, x, plane: source, y0: y0, x0: x0, index: mask != nil)
                        y[at] = best
                        if let mask, let bestIndex { mask[at] = bestIndex }
                    }
                }
            }
        case .ave where oh == 1 && ow == 1 && kh == h && kw == w && ph == 0 && pw == 0 && h * w >= lanes:
            // The window is the plane (global pooling): a vector sum over it, then a tree over the
            // lanes (not Caffe's left-to-right order: within the goldens' tolerance, not bit for
            // bit). One dependent chain of H·W scalar adds took 5× ONNX Runtime's time on SqueezeNet's pool10.
            try emitKernel(node, "pool.ave.plane \(geometry) lanes\(lanes)", operands: operands, tasks: n * c, work: work) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { plane in
                    let sum = b.rowSums(1, count: h * w, from: plane * (h * w), width: lanes) { i, mask in [x.load(i, mask)] }[0]
                    y[plane] = sum / b.constant(Float(kh * kw))
                }
            }
        case .ave:
            try emitKernel(node, "pool.ave \(geometry)" + rowShape, operands: operands, tasks: n * c, work: work) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { plane in
                    let source = plane * (h * w), target = plane * (oh * ow)
                    overPlane(b, vectors: poolingRows(b, maximum: false, plane: plane)) { oy, ox, inside in
                        let y0 = oy * sh - ph, x0 = ox * sw - pw
                        if inside {
                            var sum = b.constant(0)
                            for ky in 0..<kh {
                                for kx in 0..<kw { sum = sum + x[source + (y0 + ky) * w + (x0 + kx)] }
                            }
                            y[target + oy * ow + ox] = sum / b.constant(Float(kh * kw))
                            return
                        }
                        y[target + oy * ow + ox] = window.average(b, x, plane: source, y0: y0, x0: x0)
                    }
                }
            }
        case .stochastic:
            throw unsupported(node, "STOCHASTIC pooling has no CPU forward in Caffe either", hint: "use MAX or AVE")
        }
    }

    /// Pooling over every spatial axis of an N×C×D₁×…×Dₖ blob (k ≠ 2), with the 2-D kernel's rules
    /// on each axis (`PoolingWindowND`): MAX keeps the first strict maximum in row-major window
    /// order (the optional mask top gets its flat index in the plane), AVE divides the sum over the
    /// window clipped to the blob by the window clipped to `[−pad, D + pad)`. One task per plane.
    mutating func lowerPoolingND(_ node: Node, _ g: PoolingGeometry) throws {
        let p = try node.poolingAttributes()
        let input = node.inputs[0], dims = shape(input), outDims = shape(node.outputs[0])
        guard dims.count >= 3 else { throw unsupported(node, "pooling needs N×C and at least one spatial axis, got \(dims)") }
        guard p.method != .stochastic else {
            throw unsupported(node, "STOCHASTIC pooling has no CPU forward in Caffe either", hint: "use MAX or AVE")
        }
        let window = PoolingWindowND(input: Array(dims[2...]), output: Array(outDims[2...]), geometry: g)
        let planes = dims[0] * dims[1]
        let withMask = p.method == .max && node.outputs.count > 1
        var operands = [Operand(buffer(input)), Operand(buffer(node.outputs[0]))]
        if withMask { operands.append(Operand(buffer(node.outputs[1]))) }
        let method = p.method == .max ? "max" : "ave"
        try emitKernel(node, "pool.nd.\(method) \(window.signature) mask=\(withMask)", operands: operands, tasks: planes, work: planes * window.work) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            let mask = withMask ? b.operand(2) : nil
            b.forEachTask { plane in
                let source = plane * window.inputCount, target = plane * window.outputCount
                window.overOutputs(b) { starts, at in
                    if p.method == .max {
                        let (best, bestIndex) = window.maximum(b, x, plane: source, starts: starts, index: mask != nil)
                        y[target + at] = best
                        if let mask, let bestIndex { mask[target + at] = bestIndex }
                    } else {
                        y[target + at] = window.average(b, x, plane: source, starts: starts)
                    }
                }
            }
        }
    }

    /// The output positions along one axis whose window `[o·stride − pad, o·stride − pad + kernel)`
    /// lies inside `0..<extent`.
    static func interior(count: Int, stride: Int, pad: Int, kernel: Int, extent: Int) -> Range<Int> {
        let lower = min(count, ceilDiv(pad, stride))
        let last = extent + pad - kernel  // the largest window start, in padded coordinates
        let upper = last < 0 ? lower : max(lower, min(count, last / stride + 1))
        return lower..<upper
    }
}

/// One pooling window of a H×W plane as Caffe's `PoolingLayer` evaluates it, for the kernels of
/// Pooling, SPP and pooling's gradient: the window starting at `(y0, x0)` (padded coordinates, so
/// possibly negative) is clipped to the image for the values it reads.
struct PoolingWindow {
    var height: Int, width: Int
    var kernel: (h: Int, w: Int)
    var pad: (h: Int, w: Int)

    /// Caffe's SPP geometry along one axis for `bins` bins (`SPPLayer`): kernel ⌈extent/bins⌉ (also
    /// the stride), pad half the remainder, then PoolingLayer's output extent (rounded up, dropping
    /// a last window that would start in the padding).
    static func pyramidAxis(extent: Int, bins: Int) -> (kernel: Int, pad: Int, out: Int) {
        let kernel = (extent + bins - 1) / bins
        let pad = (kernel * bins - extent + 1) / 2
        var out = ceilDiv(extent + 2 * pad - kernel, kernel) + 1
        if pad > 0, (out - 1) * kernel >= extent + pad { out -= 1 }
        return (kernel, pad, out)
    }

    /// MAX: the first strict maximum, row by row, starting from −FLT_MAX; with `index`, also its
    /// flat position `h·W + w` in the plane as a float (−1 when nothing beat −FLT_MAX).
    func maximum(_ b: KernelBuilder, _ x: Buffer, plane: Index, y0: Index, x0: Index, index: Bool) -> (Scalar, Scalar?) {
        let y1 = b.min(y0 + kernel.h, b.index(height)), x1 = b.min(x0 + kernel.w, b.index(width))
        let best = b.variable(b.constant(-Float.greatestFiniteMagnitude))
        let bestIndex = b.variable(b.constant(-1))
        b.loop(from: b.max(y0, b.index(0)), to: y1) { iy in
            b.loop(from: b.max(x0, b.index(0)), to: x1) { ix in
                let at = iy * width + ix
                let v = x[plane + at]
                let better = v > best.value
                best.value = b.select(better, v, best.value)
                if index { bestIndex.value = b.select(better, b.float(at), bestIndex.value) }
            }
        }
        return (best.value, index ? bestIndex.value : nil)
    }

    /// AVE: the sum over the window clipped to the image, divided by the window clipped to
    /// `[−pad, extent + pad)`, so border averages count padding as zeros.
    func average(_ b: KernelBuilder, _ x: Buffer, plane: Index, y0: Index, x0: Index) -> Scalar {
        let y1 = b.min(y0 + kernel.h, b.index(height + pad.h)), x1 = b.min(x0 + kernel.w, b.index(width + pad.w))
        let windowSize = b.float((y1 - y0) * (x1 - x0))
        let sum = b.variable(b.constant(0))
        b.loop(from: b.max(y0, b.index(0)), to: b.min(y1, b.index(height))) { iy in
            b.loop(from: b.max(x0, b.index(0)), to: b.min(x1, b.index(width))) { ix in
                sum.value = sum.value + x[plane + iy * width + ix]
            }
        }
        return sum.value / windowSize
    }
}

/// One pooling window over any number of spatial axes, for N-D Pooling's forward and backward: the
/// window starting at `starts` (padded coordinates, possibly negative) is clipped to the blob for
/// the values it reads, and to `[−pad, extent + pad)` for AVE's divisor, axis by axis, exactly as
/// the 2-D `PoolingWindow`. Positions are row-major within one (image, channel) plane.
struct PoolingWindowND {
    var input: [Int], output: [Int]
    var kernel: [Int], stride: [Int], pad: [Int]

    init(input: [Int], output: [Int], geometry g: PoolingGeometry) {
        self.input = input
        self.output = output
        (kernel, stride, pad) = (g.kernel, g.stride, g.pad)
    }

    var inputCount: Int { input.reduce(1, *) }
    var outputCount: Int { output.reduce(1, *) }
    var work: Int { outputCount * kernel.reduce(1, *) }
    /// Every constant the kernels specialize on, for the kernel cache key.
    var signature: String {
        func joined(_ v: [Int]) -> String { v.map(String.init).joined(separator: "x") }
        return "in\(joined(input)) out\(joined(output)) k\(joined(kernel)) s\(joined(stride)) p\(joined(pad))"
    }

    /// Row-major strides of the input plane.
    private var inputStrides: [Int] {
        var strides = Array(repeating: 1, count: input.count)
        for axis in Swift.stride(from: input.count - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * input[axis + 1] }
        return strides
    }

    /// Emits `body(starts, flat output position)` for every output position of a plane.
    func overOutputs(_ b: KernelBuilder, _ body: ([Index], Index) -> Void) {
        func axis(_ d: Int, _ starts: [Index], _ flat: Index) {
            guard d < output.count else { return body(starts, flat) }
            b.loop(0..<output[d]) { o in axis(d + 1, starts + [o * stride[d] - pad[d]], flat * output[d] + o) }
        }
        axis(0, [], b.index(0))
    }

    /// Emits `body(flat input position)` over the window clipped to the blob, row-major.
    func overWindow(_ b: KernelBuilder, starts: [Index], _ body: (Index) -> Void) {
        let strides = inputStrides
        func axis(_ d: Int, _ flat: Index) {
            guard d < input.count else { return body(flat) }
            let upper = b.min(starts[d] + kernel[d], b.index(input[d]))
            b.loop(from: b.max(starts[d], b.index(0)), to: upper) { i in axis(d + 1, flat + i * strides[d]) }
        }
        axis(0, b.index(0))
    }

    /// MAX: the first strict maximum from −FLT_MAX; with `index`, its flat position as a float
    /// (−1 when nothing beat −FLT_MAX).
    func maximum(_ b: KernelBuilder, _ x: Buffer, plane: Index, starts: [Index], index: Bool) -> (Scalar, Scalar?) {
        let best = b.variable(b.constant(-Float.greatestFiniteMagnitude))
        let bestIndex = b.variable(b.constant(-1))
        overWindow(b, starts: starts) { at in
            let v = x[plane + at]
            let better = v > best.value
            best.value = b.select(better, v, best.value)
            if index { bestIndex.value = b.select(better, b.float(at), bestIndex.value) }
        }
        return (best.value, index ? bestIndex.value : nil)
    }

    /// AVE's divisor: the window clipped to `[−pad, extent + pad)` on every axis.
    func divisor(_ b: KernelBuilder, starts: [Index]) -> Scalar {
        var size = b.index(1)
        for d in 0..<input.count {
            size = size * (b.min(starts[d] + kernel[d], b.index(input[d] + pad[d])) - starts[d])
        }
        return b.float(size)
    }

    /// AVE: the sum over the window clipped to the blob, divided by `divisor`.
    func average(_ b: KernelBuilder, _ x: Buffer, plane: Index, starts: [Index]) -> Scalar {
        let sum = b.variable(b.constant(0))
        overWindow(b, starts: starts) { at in sum.value = sum.value + x[plane + at] }
        return sum.value / divisor(b, starts: starts)
    }
}
