import Foundation
import CaffeFormat
import Graph
import Runtime

/// SSD's DetectionOutput (weiliu89/caffe `DetectionOutputLayer::Forward_cpu` with `bbox_util.cpp`'s
/// `DecodeBBox`, `ApplyNMSFast` and `JaccardOverlap`), as plain host code: decode every prior's
/// box, per-class NMS over the scores above `confidence_threshold`, then the best `keep_top_k`
/// of the image across classes.
///
/// The rows come out in Caffe's order: image by image, within an image by ascending label, within
/// a label by descending score (NMS order). Each row is `[image, label, score, xmin, ymin, xmax,
/// ymax]` with the decoded, unclipped corners. With no detection in the whole batch Caffe writes
/// one row per image, `[i, -1, -1, -1, -1, -1, -1]`; so does `run`. Discrete work (sorting,
/// suppression) is not worth a kernel: it runs once per forward after the heads.
///
///     let detector = DetectionOutputAlgorithm(param, images: 1, priors: 8732)
///     let rows = detector.detect(loc: loc, conf: conf, priors: priorBox)   // 7 floats per row
struct DetectionOutputAlgorithm: Sendable {
    let classes: Int
    let shareLocation: Bool
    let background: Int
    let codeType: Caffe_PriorBoxParameter.CodeType
    let varianceInTarget: Bool
    let keepTopK: Int
    let threshold: Float
    let nmsThreshold: Float
    let eta: Float
    let topK: Int
    let images: Int
    let priors: Int

    init(_ p: Caffe_DetectionOutputParameter, images: Int, priors: Int) {
        classes = Int(p.numClasses)
        shareLocation = p.shareLocation
        background = Int(p.backgroundLabelID)
        codeType = p.codeType
        varianceInTarget = p.varianceEncodedInTarget
        keepTopK = Int(p.keepTopK)
        threshold = p.hasConfidenceThreshold ? p.confidenceThreshold : -Float.greatestFiniteMagnitude
        nmsThreshold = p.nmsParam.nmsThreshold
        eta = p.nmsParam.eta
        topK = p.nmsParam.hasTopK ? Int(p.nmsParam.topK) : -1
        self.images = images
        self.priors = priors
    }

    /// A decoded box and its area (`BBoxSize`, computed once as Caffe's `set_size` does).
    struct Box {
        var xmin: Float, ymin: Float, xmax: Float, ymax: Float
        var size: Float

        init(_ xmin: Float, _ ymin: Float, _ xmax: Float, _ ymax: Float) {
            (self.xmin, self.ymin, self.xmax, self.ymax) = (xmin, ymin, xmax, ymax)
            size = xmax < xmin || ymax < ymin ? 0 : (xmax - xmin) * (ymax - ymin)
        }

        /// `JaccardOverlap` of normalized boxes.
        func overlap(_ other: Box) -> Float {
            guard !(other.xmin > xmax || other.xmax < xmin || other.ymin > ymax || other.ymax < ymin) else { return 0 }
            let width = Swift.min(xmax, other.xmax) - Swift.max(xmin, other.xmin)
            let height = Swift.min(ymax, other.ymax) - Swift.max(ymin, other.ymin)
            guard width > 0, height > 0 else { return 0 }
            let intersection = width * height
            return intersection / (size + other.size - intersection)
        }
    }

    /// The detections of the batch as rows of 7 floats, in Caffe's order (see the type's comment).
    func detect(loc: UnsafePointer<Float>, conf: UnsafePointer<Float>, priors prior: UnsafePointer<Float>) -> [Float] {
        let locClasses = shareLocation ? 1 : classes
        var rows: [Float] = []
        for image in 0..<images {
            let locBase = loc + image * priors * locClasses * 4, confBase = conf + image * priors * classes
            var decoded: [Int: [Box]] = [:]
            for c in 0..<locClasses {
                let label = shareLocation ? -1 : c
                // Caffe skips the background's boxes when locations are per class (and, by the same
                // test, all of them when shared locations meet background_label_id -1, where it then
                // aborts; here the shared boxes are decoded regardless).
                if label == background, !shareLocation { continue }
                decoded[label] = (0..<priors).map { p in decode(prior: prior, p, locBase + (p * locClasses + c) * 4) }
            }
            var kept: [(label: Int, indices: [Int])] = []
            for c in 0..<classes where c != background {
                guard let boxes = decoded[shareLocation ? -1 : c] else { continue }
                let scores = (0..<priors).map { confBase[$0 * classes + c] }
                kept.append((c, suppress(boxes, scores)))
            }
            let detections = kept.reduce(0) { $0 + $1.indices.count }
            if keepTopK > -1, detections > keepTopK {
                var pairs: [(score: Float, label: Int, index: Int, order: Int)] = []
                for (label, indices) in kept {
                    for index in indices { pairs.append((confBase[index * classes + label], label, index, pairs.count)) }
                }
                // std::sort on scores; ties (none with real-valued scores) keep label order here.
                pairs.sort { $0.score != $1.score ? $0.score > $1.score : $0.order < $1.order }
                let best = pairs.prefix(keepTopK)
                kept = kept.map { entry in (entry.label, best.filter { $0.label == entry.label }.map(\.index)) }
            }
            for (label, indices) in kept {
                let boxes = decoded[shareLocation ? -1 : label] ?? []
                for index in indices {
                    let box = boxes[index]
                    rows += [Float(image), Float(label), confBase[index * classes + label], box.xmin, box.ymin, box.xmax, box.ymax]
                }
            }
        }
        if rows.isEmpty {
            for image in 0..<images { rows += [Float(image)] + [Float](repeating: -1, count: 6) }
        }
        return rows
    }

    /// `DecodeBBox` of prior `p` (corners at `prior[4p…]`, variances at `prior[4(priors+p)…]`)
    /// with the 4 predicted values at `offsets`, unclipped. Halving goes through double, as the
    /// C++ `/ 2.` does.
    func decode(prior: UnsafePointer<Float>, _ p: Int, _ offsets: UnsafePointer<Float>) -> Box {
        let (pxmin, pymin, pxmax, pymax) = (prior[4 * p], prior[4 * p + 1], prior[4 * p + 2], prior[4 * p + 3])
        let v = prior + 4 * (priors + p)
        let variance = varianceInTarget ? (Float(1), Float(1), Float(1), Float(1)) : (v[0], v[1], v[2], v[3])
        let (x0, y0, x1, y1) = (offsets[0], offsets[1], offsets[2], offsets[3])
        let width = pxmax - pxmin, height = pymax - pymin
        switch codeType {
        case .corner:
            if varianceInTarget { return Box(pxmin + x0, pymin + y0, pxmax + x1, pymax + y1) }
            return Box(pxmin + variance.0 * x0, pymin + variance.1 * y0, pxmax + variance.2 * x1, pymax + variance.3 * y1)
        case .centerSize:
            let centerX = Float((Double(pxmin) + Double(pxmax)) / 2), centerY = Float((Double(pymin) + Double(pymax)) / 2)
            let boxCenterX: Float, boxCenterY: Float, boxWidth: Float, boxHeight: Float
            if varianceInTarget {
                boxCenterX = x0 * width + centerX
                boxCenterY = y0 * height + centerY
                boxWidth = expf(x1) * width
                boxHeight = expf(y1) * height
            } else {
                boxCenterX = variance.0 * x0 * width + centerX
                boxCenterY = variance.1 * y0 * height + centerY
                boxWidth = expf(variance.2 * x1) * width
                boxHeight = expf(variance.3 * y1) * height
            }
            let halfWidth = Double(boxWidth) / 2, halfHeight = Double(boxHeight) / 2
            return Box(Float(Double(boxCenterX) - halfWidth), Float(Double(boxCenterY) - halfHeight),
                       Float(Double(boxCenterX) + halfWidth), Float(Double(boxCenterY) + halfHeight))
        case .cornerSize:
            if varianceInTarget {
                return Box(pxmin + x0 * width, pymin + y0 * height, pxmax + x1 * width, pymax + y1 * height)
            }
            return Box(pxmin + variance.0 * x0 * width, pymin + variance.1 * y0 * height,
                       pxmax + variance.2 * x1 * width, pymax + variance.3 * y1 * height)
        }
    }

    /// `ApplyNMSFast`: the indices of the scores above the threshold, best first (a stable sort,
    /// at most `top_k`), each kept unless it overlaps an already kept box by more than the
    /// threshold; with `eta < 1` the threshold shrinks by `eta` after each kept box while above 0.5.
    func suppress(_ boxes: [Box], _ scores: [Float]) -> [Int] {
        // A stable sort: ties stay in index order.
        var candidates = scores.indices.filter { scores[$0] > threshold }
        candidates.sort { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        if topK > -1, topK < candidates.count { candidates.removeLast(candidates.count - topK) }
        var adaptive = nmsThreshold
        var kept: [Int] = []
        for candidate in candidates {
            let keep = kept.allSatisfy { boxes[candidate].overlap(boxes[$0]) <= adaptive }
            if keep {
                kept.append(candidate)
                if eta < 1, adaptive > 0.5 { adaptive *= eta }
            }
        }
        return kept
    }
}

extension Lowering {
    /// DetectionOutput: a host step runs `DetectionOutputAlgorithm` into a scratch buffer
    /// (`[count, row₀…]`, at most `DetectionOutputBound.rows` rows), then a `RowGuard` on axis 2
    /// lets the driver re-specialize the rest of the schedule for this run's row count (the
    /// graph's setup shape is Caffe's `1×1×1×7`), then one kernel copies the rows into the top.
    mutating func lowerDetectionOutput(_ node: Node) throws {
        let p = node.layer.detectionOutputParam
        let inputs = node.inputs.map { graph.values[$0].shape }
        guard let bound = DetectionOutputBound(p, inputs: inputs) else {
            throw unsupported(node, "its bottoms' shapes are not fully known")
        }
        let algorithm = DetectionOutputAlgorithm(p, images: bound.images, priors: bound.priors)
        let capacity = bound.rows
        let detections = scratch(node, "detections", count: 1 + capacity * 7)
        let operands = node.inputs.map { Operand(buffer($0)) } + [Operand(detections)]
        program.steps.append(Step(label: node.name, .host(HostStep(operands: operands) { pointers in
            let rows = algorithm.detect(loc: pointers[0], conf: pointers[1], priors: pointers[2])
            let count = Swift.min(rows.count / 7, capacity)
            pointers[3][0] = Float(count)
            rows.withUnsafeBufferPointer { values in
                if let base = values.baseAddress, count > 0 { (pointers[3] + 1).update(from: base, count: count * 7) }
            }
            return true
        })))
        let output = node.outputs[0], rows = shape(output)[2]
        rowGuards.append(RowGuard(layer: node.name, node: node.id, axis: 2, step: program.steps.count, count: Operand(detections),
                                  rows: rows, prefixBuffers: program.buffers.count))
        try emitCopyRows(node, from: Operand(detections, offset: 1), to: Operand(buffer(output)), rows: rows, width: 7)
    }
}
