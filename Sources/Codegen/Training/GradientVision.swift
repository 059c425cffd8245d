import CaffeFormat
import Foundation
import Graph
import Runtime

/// One 2-D pooling with Caffe's window rules over N·C planes of h × w, writing an oh × ow grid per
/// plane at `planeStride` apart within `imageStride`-sized images (so SPP can pool every level
/// straight into its slice of the concatenated top).
struct PoolWindow {
    var max: Bool
    var channels: Int, h: Int, w: Int
    var kernel: (Int, Int), stride: (Int, Int), pad: (Int, Int)
    var oh: Int, ow: Int
    var outputImageStride: Int

    /// The shared window scans for this geometry.
    var scan: PoolingWindow { PoolingWindow(height: h, width: w, kernel: kernel, pad: pad) }

    var signature: String {
        "\(max ? "max" : "ave") c\(channels) h\(h)w\(w) k\(kernel.0)x\(kernel.1) s\(stride.0)x\(stride.1) p\(pad.0)x\(pad.1) o\(oh)x\(ow) img\(outputImageStride)"
    }

    /// Caffe's SPP level `level`: `2^level` bins a side, kernel ⌈extent/bins⌉ = stride, pad half the
    /// remainder, output extent from Caffe's pooling rule.
    static func pyramidLevel(_ level: Int, max: Bool, channels: Int, h: Int, w: Int, outputImageStride: Int) -> PoolWindow {
        let bins = 1 << level
        let (y, x) = (PoolingWindow.pyramidAxis(extent: h, bins: bins), PoolingWindow.pyramidAxis(extent: w, bins: bins))
        return PoolWindow(max: max, channels: channels, h: h, w: w, kernel: (y.kernel, x.kernel), stride: (y.kernel, x.kernel),
                          pad: (y.pad, x.pad), oh: y.out, ow: x.out, outputImageStride: outputImageStride)
    }
}

extension TrainingLowering {
    /// Pooling forward for `window` (MAX: first strict maximum from −FLT_MAX; AVE: sum over the
    /// clipped window divided by the window clipped to the padded image). One task per plane.
    mutating func emitPool(_ node: Node, _ window: PoolWindow, input: Operand, output: Operand, images: Int) throws {
        let g = window
        try base.emitKernel(node, "train.pool \(g.signature)", operands: [input, output], tasks: images * g.channels,
                            work: images * g.channels * g.oh * g.ow * g.kernel.0 * g.kernel.1) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { plane in
                let source = plane * (g.h * g.w)
                let target = (plane / g.channels) * g.outputImageStride + (plane % g.channels) * (g.oh * g.ow)
                b.loop(0..<g.oh) { oy in
                    b.loop(0..<g.ow) { ox in
                        let y0 = oy * g.stride.0 - g.pad.0, x0 = ox * g.stride.1 - g.pad.1
                        let at = target + oy * g.ow + ox
                        y[at] = g.max ? g.scan.maximum(b, x, plane: source, y0: y0, x0: x0, index: false).0
                                      : g.scan.average(b, x, plane: source, y0: y0, x0: x0)
                    }
                }
            }
        }
    }

    /// Pooling backward for `window`, adding into `dx` (which the caller zeroed): MAX to the
    /// recomputed first maximum, AVE spread over the clipped window.
    mutating func emitPoolBackward(_ node: Node, _ window: PoolWindow, input: Operand, topDiff: Operand, dx: Operand, images: Int) throws {
        let g = window
        try base.emitKernel(node, "train.pool.grad \(g.signature)", operands: [input, topDiff, dx], tasks: images * g.channels,
                            work: images * g.channels * g.oh * g.ow * g.kernel.0 * g.kernel.1) { b in
            let (x, dy, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                let source = plane * (g.h * g.w)
                let target = (plane / g.channels) * g.outputImageStride + (plane % g.channels) * (g.oh * g.ow)
                b.loop(0..<g.oh) { oy in
                    b.loop(0..<g.ow) { ox in
                        let y0 = oy * g.stride.0 - g.pad.0, x0 = ox * g.stride.1 - g.pad.1
                        let gradient = dy[target + oy * g.ow + ox]
                        if g.max {
                            let (_, bestIndex) = g.scan.maximum(b, x, plane: source, y0: y0, x0: x0, index: true)
                            let winner = b.int(bestIndex!)
                            b.when(winner >= 0) { result[source + winner] = result[source + winner] + gradient }
                        } else {
                            let y1 = b.min(y0 + g.kernel.0, b.index(g.h + g.pad.0)), x1 = b.min(x0 + g.kernel.1, b.index(g.w + g.pad.1))
                            let share = gradient / b.float((y1 - y0) * (x1 - x0))
                            b.loop(from: b.max(y0, b.index(0)), to: b.min(y1, b.index(g.h))) { iy in
                                b.loop(from: b.max(x0, b.index(0)), to: b.min(x1, b.index(g.w))) { ix in
                                    let at = source + iy * g.w + ix
                                    result[at] = result[at] + share
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: SPP

    /// SPP's levels, each pooled into its slice of the (N, C·Σ bins²) top; one level is plain
    /// pooling with a 4-D top.
    private func pyramid(_ node: Node) throws -> (windows: [PoolWindow], offsets: [Int], images: Int) {
        let p = node.layer.sppParam
        let dims = shape(node.inputs[0])
        guard dims.count == 4 else { throw unsupported(node, "SPP needs an N×C×H×W input, got \(dims)") }
        guard p.pool != .stochastic else { throw unsupported(node, "STOCHASTIC pooling has no CPU implementation in Caffe either") }
        let levels = Int(p.pyramidHeight)
        let perImage = count(node.outputs[0]) / max(1, dims[0])
        var windows: [PoolWindow] = [], offsets: [Int] = [], offset = 0
        for level in 0..<levels {
            let window = PoolWindow.pyramidLevel(level, max: p.pool == .max, channels: dims[1], h: dims[2], w: dims[3], outputImageStride: perImage)
            windows.append(window)
            offsets.append(offset)
            offset += dims[1] * window.oh * window.ow
        }
        return (windows, offsets, dims[0])
    }

    mutating func lowerSPPForward(_ node: Node) throws {
        let (windows, offsets, images) = try pyramid(node)
        let x = data(node.inputs[0]), y = data(node.outputs[0])
        for (window, offset) in zip(windows, offsets) {
            try emitPool(node, window, input: x, output: Operand(y.buffer, offset: offset), images: images)
        }
    }

    mutating func lowerSPPBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (windows, offsets, images) = try pyramid(node)
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitFill(node, dx, count: count(node.inputs[0]), value: 0)
        for (window, offset) in zip(windows, offsets) {
            try emitPoolBackward(node, window, input: data(node.inputs[0]), topDiff: Operand(dy.buffer, offset: dy.offset + offset), dx: dx, images: images)
        }
    }

    // MARK: Im2col

    private func im2colLayout(_ node: Node) throws -> (ColumnLayout, images: Int) {
        let dims = shape(node.inputs[0])
        let g = try node.convolutionGeometry()
        guard g.channelAxis == 1 else { throw unsupported(node, "only Im2col with the channel axis 1 is lowered so far") }
        let result = g.kernel.indices.map { g.convolutionOutput(dims[2 + $0], axis: $0) }
        return (ColumnLayout(channels: dims[1], image: Array(dims[2...]), result: result, g), dims[0])
    }

    /// Im2col layer: each image's column matrix is its top.
    mutating func lowerIm2colForward(_ node: Node) throws {
        let (layout, images) = try im2colLayout(node)
        let x = data(node.inputs[0]), y = data(node.outputs[0])
        for item in 0..<images {
            try base.emitIm2col(node, layout, image: Operand(x.buffer, offset: item * layout.imageCount),
                           columns: Operand(y.buffer, offset: item * layout.columnCount))
        }
    }

    mutating func lowerIm2colBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let (layout, images) = try im2colLayout(node)
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        for item in 0..<images {
            try base.emitCol2im(node, layout, columns: Operand(dy.buffer, offset: dy.offset + item * layout.columnCount),
                           image: Operand(dx.buffer, offset: dx.offset + item * layout.imageCount))
        }
    }

    // MARK: ROIPooling

    /// Fast R-CNN's ROIPooling: ROI corners scaled and rounded half away from zero, the ROI at least
    /// 1×1, bin `p` covering `[⌊p·size/pooled⌋, ⌈(p+1)·size/pooled⌉)` shifted by the ROI start and
    /// clipped to the map; MAX over the bin, 0 for an empty bin. One task per (ROI, channel).
    /// `backward` instead adds each bin's top diff to its arg-max, only when that element lies inside
    /// the rounded ROI `[start, end]` (the Fast R-CNN kernel's test).
    private mutating func emitROIPooling(_ node: Node, backward: Bool, operands: [Operand]) throws {
        let p = node.layer.roiPoolingParam
        let dims = shape(node.inputs[0])
        let (batch, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let (ph, pw) = (Int(p.pooledH), Int(p.pooledW)), scale = p.spatialScale
        let rois = shape(node.inputs[1])[0]
        let signature = "roipool c\(c) h\(h)w\(w) p\(ph)x\(pw) s\(scale.bitPattern) r\(rois) n\(batch) backward=\(backward)"
        try base.emitKernel(node, signature, operands: operands, tasks: rois * c, work: rois * c * h * w) { b in
            let (x, roi) = (b.operand(0), b.operand(1))
            b.forEachTask { task in
                let r = task / c, channel = task % c
                func corner(_ k: Int) -> Index { b.int(b.call("roundf", roi[r * 5 + k] * scale)) }
                let image = b.max(b.index(0), b.min(b.int(roi[r * 5]), b.index(batch - 1)))
                let (startW, startH, endW, endH) = (corner(1), corner(2), corner(3), corner(4))
                let binH = b.float(b.max(endH - startH + 1, b.index(1))) / Float(ph)
                let binW = b.float(b.max(endW - startW + 1, b.index(1))) / Float(pw)
                let source = (image * c + channel) * (h * w)
                b.loop(0..<ph) { py in
                    b.loop(0..<pw) { px in
                        func clip(_ v: Index, _ extent: Int) -> Index { b.min(b.max(v, b.index(0)), b.index(extent)) }
                        let y0 = clip(b.int(b.call("llvm.floor.f32", b.float(py) * binH)) + startH, h)
                        let y1 = clip(b.int(b.call("llvm.ceil.f32", b.float(py + 1) * binH)) + startH, h)
                        let x0 = clip(b.int(b.call("llvm.floor.f32", b.float(px) * binW)) + startW, w)
                        let x1 = clip(b.int(b.call("llvm.ceil.f32", b.float(px + 1) * binW)) + startW, w)
                        let best = b.variable(b.constant(-Float.greatestFiniteMagnitude)), bestIndex = b.variable(b.constant(-1))
                        b.loop(from: y0, to: y1) { iy in
                            b.loop(from: x0, to: x1) { ix in
                                let index = iy * w + ix
                                let v = x[source + index]
                                let better = v > best.value
                                best.value = b.select(better, v, best.value)
                                bestIndex.value = b.select(better, b.float(index), bestIndex.value)
                            }
                        }
                        let at = (r * c + channel) * (ph * pw) + py * pw + px
                        if backward {
                            let (dy, dx) = (b.operand(2), b.operand(3))
                            let winner = b.int(bestIndex.value)
                            let (wy, wx) = (winner / w, winner % w)
                            let inRoi = winner >= 0 && wx >= startW && endW >= wx && wy >= startH && endH >= wy
                            b.when(inRoi) { dx[source + winner] = dx[source + winner] + dy[at] }
                        } else {
                            let y = b.operand(2)
                            y[at] = b.select(bestIndex.value < 0, b.constant(0), best.value)
                        }
                    }
                }
            }
        }
    }

    mutating func lowerROIPoolingForward(_ node: Node) throws {
        guard shape(node.inputs[0]).count == 4 else { throw unsupported(node, "ROIPooling needs an N×C×H×W feature map") }
        try emitROIPooling(node, backward: false, operands: [data(node.inputs[0]), data(node.inputs[1]), data(node.outputs[0])])
    }

    /// ROIPooling backward. Tasks of different ROIs may add into the same feature element, so the
    /// step runs its tasks in order on one thread.
    mutating func lowerROIPoolingBackward(_ node: Node) throws {
        try lowerPoolingOverROIsBackward(node) { lowering, operands in
            try lowering.emitROIPooling(node, backward: true, operands: operands)
        }
    }

    /// The backward of a pooling over ROIs (ROIPooling, PSROIPooling): the ROIs get no diff (zero,
    /// even under force_backward, as Fast R-CNN and caffe-rfcn leave it); the features' diff is
    /// zeroed and `emit` adds each bin's top diff into it, given `[features, rois, dy, dx]`. Bins of
    /// different ROIs overlap, so its steps run their tasks in order on one thread (the forks use
    /// atomic adds on the GPU).
    mutating func lowerPoolingOverROIsBackward(_ node: Node, _ emit: (inout TrainingLowering, [Operand]) throws -> Void) throws {
        if analysis.writesBottomDiff(node, 1) { try base.emitFill(node, bottomDiff(node, 1), count: count(node.inputs[1]), value: 0) }
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitFill(node, dx, count: count(node.inputs[0]), value: 0)
        let first = base.program.steps.count
        try emit(&self, [data(node.inputs[0]), data(node.inputs[1]), dy, dx])
        for index in first..<base.program.steps.count {
            if case .kernel(var step) = base.program.steps[index].action {
                step.parallel = false
                base.program.steps[index].action = .kernel(step)
            }
        }
    }
}
