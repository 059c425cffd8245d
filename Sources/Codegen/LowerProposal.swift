import Foundation
import Graph
import Runtime

/// Faster R-CNN's region proposals for one image, computed as py-faster-rcnn's
/// `ProposalLayer.forward` computes them in float (`lib/rpn/proposal_layer.py`, with
/// `bbox_transform_inv`, `clip_boxes`, `_filter_boxes` and `nms`).
///
/// For each position (h, w) and anchor a, in that order: the anchor shifted by
/// `(w, h) · feat_stride`, moved by the deltas at channels `4a…4a+3` (center by `dx·width`, size by
/// `exp(dw)·width`, widths counted inclusively as `x2 − x1 + 1`), clipped to
/// `[0, im_width − 1] × [0, im_height − 1]`; boxes narrower or shorter than
/// `min_size · im_info[2]` dropped; the rest sorted by their foreground score (channel A + a),
/// highest first (equal scores: later box first, as NumPy's reversed argsort), cut to
/// `pre_nms_topn`; greedy NMS keeping a box while its overlap `inter / (area_i + area_j − inter)`
/// with every kept box is at most `nms_thresh`; cut to `post_nms_topn`.
///
/// Sorting and NMS are sequential and data-dependent, so this runs as one host step; it is exact
/// (the same float operations in the same order as NumPy's float32 arrays, `expf` for `np.exp`).
struct ProposalComputation: Sendable {
    var settings: ProposalSettings
    var anchors: [Float]
    var height: Int
    var width: Int
    /// Largest number of boxes the layer outputs (its setup row count).
    var capacity: Int

    init(settings: ProposalSettings, height: Int, width: Int) {
        self.settings = settings
        anchors = settings.anchors
        self.height = height
        self.width = width
        capacity = settings.maximumRows(positions: height * width)
    }

    /// Writes `[count, rois (capacity × 5), scores (capacity)]` into `output` and returns the count.
    func run(scores: UnsafePointer<Float>, deltas: UnsafePointer<Float>, imInfo: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) -> Int {
        let a = settings.anchorCount, plane = height * width
        let (imageHeight, imageWidth, imageScale) = (imInfo[0], imInfo[1], imInfo[2])
        let minSize = settings.minSize * imageScale
        var boxes: [(x1: Float, y1: Float, x2: Float, y2: Float, score: Float, index: Int)] = []
        boxes.reserveCapacity(plane * a)
        func clip(_ v: Float, _ limit: Float) -> Float {
            // np.maximum(np.minimum(v, limit), 0), NaN propagating as NumPy does.
            let low = v.isNaN || limit.isNaN ? Float.nan : (v < limit ? v : limit)
            return low.isNaN ? low : (low > 0 ? low : 0)
        }
        for h in 0..<height {
            for w in 0..<width {
                let position = h * width + w
                let shiftX = Float(w * settings.featStride), shiftY = Float(h * settings.featStride)
                for k in 0..<a {
                    let x1 = anchors[4 * k] + shiftX, y1 = anchors[4 * k + 1] + shiftY
                    let x2 = anchors[4 * k + 2] + shiftX, y2 = anchors[4 * k + 3] + shiftY
                    let boxWidth = x2 - x1 + 1, boxHeight = y2 - y1 + 1
                    let centerX = x1 + 0.5 * boxWidth, centerY = y1 + 0.5 * boxHeight
                    let d = deltas + 4 * k * plane + position
                    let (dx, dy, dw, dh) = (d[0], d[plane], d[2 * plane], d[3 * plane])
                    let predictedX = dx * boxWidth + centerX, predictedY = dy * boxHeight + centerY
                    let predictedW = expf(dw) * boxWidth, predictedH = expf(dh) * boxHeight
                    let box = (x1: clip(predictedX - 0.5 * predictedW, imageWidth - 1), y1: clip(predictedY - 0.5 * predictedH, imageHeight - 1),
                               x2: clip(predictedX + 0.5 * predictedW, imageWidth - 1), y2: clip(predictedY + 0.5 * predictedH, imageHeight - 1))
                    guard box.x2 - box.x1 + 1 >= minSize, box.y2 - box.y1 + 1 >= minSize else { continue }
                    boxes.append((box.x1, box.y1, box.x2, box.y2, scores[(a + k) * plane + position], position * a + k))
                }
            }
        }
        // NumPy's argsort()[::-1]: NaN scores sort last ascending, so first here.
        boxes.sort { p, q in
            if p.score.isNaN || q.score.isNaN { return p.score.isNaN && (!q.score.isNaN || p.index > q.index) }
            return p.score > q.score || (p.score == q.score && p.index > q.index)
        }
        if settings.preNMSTopN > 0, boxes.count > settings.preNMSTopN { boxes.removeLast(boxes.count - settings.preNMSTopN) }
        let limit = settings.postNMSTopN > 0 ? min(settings.postNMSTopN, capacity) : capacity
        let areas = boxes.map { ($0.x2 - $0.x1 + 1) * ($0.y2 - $0.y1 + 1) }
        var suppressed = [Bool](repeating: false, count: boxes.count)
        var kept = 0
        let rois = output + 1, keptScores = output + 1 + 5 * capacity
        for i in boxes.indices where !suppressed[i] && kept < limit {
            let box = boxes[i]
            rois[5 * kept] = 0
            rois[5 * kept + 1] = box.x1
            rois[5 * kept + 2] = box.y1
            rois[5 * kept + 3] = box.x2
            rois[5 * kept + 4] = box.y2
            keptScores[kept] = box.score
            kept += 1
            for j in (i + 1)..<boxes.count where !suppressed[j] {
                let other = boxes[j]
                let w = max(0, min(box.x2, other.x2) - max(box.x1, other.x1) + 1)
                let h = max(0, min(box.y2, other.y2) - max(box.y1, other.y1) + 1)
                let intersection = w * h
                let overlap = intersection / (areas[i] + areas[j] - intersection)
                if !(overlap <= settings.nmsThreshold) { suppressed[j] = true }
            }
        }
        output[0] = Float(kept)
        return kept
    }
}

extension Lowering {
    /// Proposal (Faster R-CNN's RPN proposals; `ProposalComputation` has the semantics): a host
    /// step computes the surviving boxes into a scratch buffer (`[count, rois…, scores…]`), then a
    /// `RowGuard` lets the driver re-specialize the rest of the net when the count differs from the
    /// rows it was compiled for (the graph's first axis of the tops: the setup maximum at first),
    /// as for Filter; then one copy kernel per top moves the rows into place.
    mutating func lowerProposal(_ node: Node) throws {
        let settings = try ProposalSettings(node.layer)
        let (scores, deltas, info) = (node.inputs[0], node.inputs[1], node.inputs[2])
        let dims = shape(scores)
        guard dims.count == 4, dims[0] == 1, count(info) >= 3 else {
            throw unsupported(node, "Proposal needs scores 1×2A×H×W and a 3-value im_info, got \(dims) and \(shape(info))")
        }
        let computation = ProposalComputation(settings: settings, height: dims[2], width: dims[3])
        let capacity = computation.capacity
        let selected = scratch(node, "proposals", count: 1 + 6 * capacity)
        let operands = [Operand(buffer(scores)), Operand(buffer(deltas)), Operand(buffer(info)), Operand(selected)]
        program.steps.append(Step(label: node.name, .host(HostStep(operands: operands) { pointers in
            _ = computation.run(scores: pointers[0], deltas: pointers[1], imInfo: pointers[2], output: pointers[3])
            return true
        })))
        let rows = shape(node.outputs[0]).first ?? 0
        rowGuards.append(RowGuard(layer: node.name, node: node.id, axis: 0, step: program.steps.count, count: Operand(selected),
                                  rows: rows, prefixBuffers: program.buffers.count))
        for (k, output) in node.outputs.enumerated() {
            let width = k == 0 ? 5 : 1, start = k == 0 ? 1 : 1 + 5 * capacity
            let copy = [Operand(selected, offset: start), Operand(buffer(output))]
            try emitKernel(node, "proposal.copy rows\(rows) w\(width)", operands: copy, tasks: rows, work: rows * width) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { row in
                    b.loop(0..<width) { i in y[row * width + i] = x[row * width + i] }
                }
            }
        }
    }
}
