import Graph
import Runtime

extension Lowering {
    /// PSROIPooling (R-FCN's position-sensitive ROI pooling, daijifeng001/caffe-rfcn's
    /// `PSROIPoolingForward`): features N×(D·G²)×H×W and rois R×5 in, R×D×G×G out.
    ///
    /// For ROI r: its corners rounded half away from zero, the end made exclusive (`+ 1`), both
    /// times `spatial_scale`; width and height at least 0.1; bin (ph, pw) of output channel d covers
    /// rows `⌊ph·bin_h + start_h⌋ ..< ⌈(ph+1)·bin_h + start_h⌉` (clipped to `[0, H]`), likewise
    /// columns, of input channel `(d·G + ph)·G + pw`, and outputs their average (0 when empty).
    /// One task per (ROI, output channel); the batch index is clamped into `0..<N`.
    /// As for ROIPooling, rois fed as a net input are checked before each run (caffe-rfcn reads
    /// out of bounds on a bad batch index); computed ones are clamped in the kernel.
    mutating func lowerPSROIPooling(_ node: Node) throws {
        let roiBuffer = buffer(node.inputs[1])
        if let input = program.inputs.first(where: { $0.buffer == roiBuffer }), let batch = shape(node.inputs[0]).first {
            inputChecks.append(InputCheck(input: input.name, layer: node.name, kind: .roiBatchIndex(batch: batch)))
        }
        try emitPSROIPooling(node, backward: false, operands: [Operand(buffer(node.inputs[0])), Operand(roiBuffer),
                                                              Operand(buffer(node.outputs[0]))])
    }

    /// The forward kernel over operands (features, rois, top), or, with `backward`, the backward
    /// one over (features, rois, top diff, features diff): each bin's top diff divided by the bin's
    /// area added to every element of the bin (caffe-rfcn's `PSROIPoolingBackwardAtomic`). The
    /// caller zeroes the features diff first and runs the backward tasks in order.
    mutating func emitPSROIPooling(_ node: Node, backward: Bool, operands: [Operand]) throws {
        let settings = try PSROIPoolingSettings(node.layer)
        let dims = shape(node.inputs[0]), rois = shape(node.inputs[1]).first ?? 0
        guard dims.count == 4 else { throw unsupported(node, "PSROIPooling needs N×C×H×W features, got \(dims)") }
        let (batch, channels, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let (outputs, g, scale) = (settings.outputDim, settings.groupSize, settings.spatialScale)
        let signature = "psroipool n\(batch) c\(channels) h\(h)w\(w) d\(outputs) g\(g) s\(scale.bitPattern) r\(rois) backward=\(backward)"
        try emitKernel(node, signature, operands: operands, tasks: rois * outputs, work: rois * channels * h * w / max(1, g * g)) { b in
            let (x, roi) = (b.operand(0), b.operand(1))
            b.forEachTask { task in
                let r = task / outputs, d = task % outputs
                let image = b.max(b.index(0), b.min(b.int(roi[r * 5]), b.index(batch - 1)))
                func rounded(_ k: Int) -> Scalar { b.call("roundf", roi[r * 5 + k]) }
                let startW = rounded(1) * scale, startH = rounded(2) * scale
                let endW = (rounded(3) + 1) * scale, endH = (rounded(4) + 1) * scale
                let binW = b.max(endW - startW, b.constant(0.1)) / Float(g)
                let binH = b.max(endH - startH, b.constant(0.1)) / Float(g)
                func clip(_ v: Index, _ extent: Int) -> Index { b.min(b.max(v, b.index(0)), b.index(extent)) }
                b.loop(0..<g) { py in
                    let y0 = clip(b.int(b.call("llvm.floor.f32", b.float(py) * binH + startH)), h)
                    let y1 = clip(b.int(b.call("llvm.ceil.f32", b.float(py + 1) * binH + startH)), h)
                    b.loop(0..<g) { px in
                        let x0 = clip(b.int(b.call("llvm.floor.f32", b.float(px) * binW + startW)), w)
                        let x1 = clip(b.int(b.call("llvm.ceil.f32", b.float(px + 1) * binW + startW)), w)
                        let channel = (d * g + py) * g + px
                        let source = (image * channels + channel) * (h * w)
                        let at = task * (g * g) + py * g + px
                        let empty = y0 >= y1 || x0 >= x1
                        let area = b.float((y1 - y0) * (x1 - x0))
                        if backward {
                            let (dy, dx) = (b.operand(2), b.operand(3))
                            b.when(b.not(empty)) {
                                let share = dy[at] / area
                                b.loop(from: y0, to: y1) { iy in
                                    b.loop(from: x0, to: x1) { ix in dx[source + iy * w + ix] = dx[source + iy * w + ix] + share }
                                }
                            }
                        } else {
                            let y = b.operand(2)
                            let sum = b.variable(b.constant(0))
                            b.loop(from: y0, to: y1) { iy in
                                b.loop(from: x0, to: x1) { ix in sum.value = sum.value + x[source + iy * w + ix] }
                            }
                            y[at] = b.select(empty, b.constant(0), sum.value / area)
                        }
                    }
                }
            }
        }
    }
}
