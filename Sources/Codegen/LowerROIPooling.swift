import CLLVM
import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// ROIPooling with Fast R-CNN's exact forward (rbgirshick/caffe-fast-rcnn
    /// `ROIPoolingLayer::Forward_cpu`). Inputs: features N×C×H×W and rois R×5, one
    /// `[batch_index, x1, y1, x2, y2]` row per ROI in image coordinates; output R×C×PH×PW.
    ///
    /// For each ROI: the batch index is truncated to an integer; the corners are multiplied by
    /// `spatial_scale` in float and rounded with C `round()` (half away from zero); a malformed ROI
    /// (end before start) is forced to 1×1 (`max(end − start + 1, 1)`); bin (ph, pw) covers rows
    /// `floor(ph·bin_h) ..< ceil((ph+1)·bin_h)` (`bin_h = roi_h / PH` in float) shifted by the ROI's
    /// start and clipped to `[0, H]`, and likewise for columns. A bin that is empty after clipping
    /// outputs 0; otherwise the maximum over the bin, scanning row-major from −FLT_MAX with a strict
    /// `>` (the first maximum wins).
    ///
    /// The ROIs are data, so the geometry is computed in the kernel: one task per (ROI, channel)
    /// plane. Caffe CHECK-fails on a batch index outside `0..<N`; when the rois blob is a net input,
    /// `CompiledNet.run` checks every row first and throws an error naming the layer and the row.
    /// ROIs computed inside the net cannot be checked before the run; the kernel clamps their batch
    /// index into `0..<N` so that it never reads outside the features.
    mutating func lowerROIPooling(_ node: Node) throws {
        let p = node.layer.roiPoolingParam
        guard node.inputs.count == 2 else {
            throw unsupported(node, "ROIPooling takes two bottoms (features N×C×H×W, rois R×5), got \(node.inputs.count)")
        }
        let features = node.inputs[0], rois = node.inputs[1]
        let dims = shape(features), roiDims = shape(rois)
        guard dims.count == 4 else { throw unsupported(node, "the features must be N×C×H×W, got \(dims)") }
        guard roiDims.count >= 2, roiDims[1...].reduce(1, *) == 5 else {
            throw unsupported(node, "the rois must hold one [batch_index, x1, y1, x2, y2] row per ROI (R×5), got \(roiDims)")
        }
        let (ph, pw) = (Int(p.pooledH), Int(p.pooledW))
        guard ph > 0, pw > 0 else { throw unsupported(node, "pooled_h and pooled_w must be positive, got \(ph)×\(pw)") }
        let scale = p.spatialScale
        let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let r = roiDims[0]
        let roiBuffer = buffer(rois)
        if let input = program.inputs.first(where: { $0.buffer == roiBuffer }) {
            // The rois are a net input (or a view of one): check them before each run.
            inputChecks.append(InputCheck(input: input.name, layer: node.name, kind: .roiBatchIndex(batch: n)))
        }
        let operands = [Operand(buffer(features)), Operand(roiBuffer), Operand(buffer(node.outputs[0]))]
        let signature = "roipool.max n\(n) c\(c) h\(h)w\(w) p\(ph)x\(pw) scale\(scale.bitPattern)"
        try emitKernel(node, signature, operands: operands, tasks: r * c, work: r * c * h * w) { b in
            let (x, roi, y) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                let row = plane / c, channel = plane % c
                let record = row * 5
                let batchIndex = b.max(b.index(0), b.min(b.int(roi[record]), b.index(n - 1)))
                func corner(_ i: Int) -> Index { b.int(b.call("llvm.round.f32", roi[record + i] * scale)) }
                let (startW, startH, endW, endH) = (corner(1), corner(2), corner(3), corner(4))
                let roiH = b.max(endH - startH + 1, b.index(1)), roiW = b.max(endW - startW + 1, b.index(1))
                let binH = b.float(roiH) / Float(ph), binW = b.float(roiW) / Float(pw)
                let source = (batchIndex * c + channel) * (h * w), target = plane * (ph * pw)
                func clip(_ i: Index, _ limit: Int) -> Index { b.min(b.max(i, b.index(0)), b.index(limit)) }
                b.loop(0..<ph) { oy in
                    let fy = b.float(oy)
                    let y0 = clip(b.int(b.call("llvm.floor.f32", fy * binH)) + startH, h)
                    let y1 = clip(b.int(b.call("llvm.ceil.f32", (fy + 1) * binH)) + startH, h)
                    b.loop(0..<pw) { ox in
                        let fx = b.float(ox)
                        let x0 = clip(b.int(b.call("llvm.floor.f32", fx * binW)) + startW, w)
                        let x1 = clip(b.int(b.call("llvm.ceil.f32", (fx + 1) * binW)) + startW, w)
                        let best = b.variable(b.constant(-Float.greatestFiniteMagnitude))
                        b.loop(from: y0, to: y1) { iy in
                            b.loop(from: x0, to: x1) { ix in
                                let v = x[source + iy * w + ix]
                                best.value = b.select(v > best.value, v, best.value)
                            }
                        }
                        let empty = y0 >= y1 || x0 >= x1
                        y[target + oy * pw + ox] = b.select(empty, b.constant(0), best.value)
                    }
                }
            }
        }
    }
}

/// A check `CompiledNet.run` makes on an input blob before running, for conditions Caffe
/// CHECK-fails on at run time and a kernel cannot report (it has no way to throw).
struct InputCheck: Sendable {
    enum Kind: Sendable {
        /// Column 0 of each 5-value row is an image index that must lie in `0..<batch`.
        case roiBatchIndex(batch: Int)
        /// Every value is an index that must lie in `0..<limit` once truncated (Embed's indices,
        /// BatchReindex's permutation); `what` names them in the error.
        case indices(limit: Int, what: String)
    }

    /// The input blob's name.
    var input: String
    /// The layer whose semantics require the check (named in the error).
    var layer: String
    var kind: Kind

    /// Throws a `RuntimeError` naming the layer and the first offending row.
    func validate(_ values: UnsafeBufferPointer<Float>) throws {
        switch kind {
        case .roiBatchIndex(let batch):
            for row in 0..<(values.count / 5) {
                let value = values[row * 5]
                // Caffe truncates the float to int, then CHECKs 0 <= index < batch.
                guard value.isFinite, value > -1, value < Float(batch) else {
                    throw RuntimeError("layer '\(layer)': ROI \(row) of '\(input)' has batch index \(value), but the features hold \(batch) image\(batch == 1 ? "" : "s") (valid: 0..<\(batch))",
                                       hint: "each rois row is [batch_index, x1, y1, x2, y2]; Caffe aborts on this ROI (roi_batch_ind < batch_size)")
                }
            }
        case .indices(let limit, let what):
            for (position, value) in values.enumerated() {
                guard value.isFinite, value > -1, value < Float(limit) else {
                    throw RuntimeError("layer '\(layer)': element \(position) of '\(input)' is \(value), but \(what) must lie in 0..<\(limit)",
                                       hint: "Caffe CHECK-fails (or reads out of bounds) on this index")
                }
            }
        }
    }
}
