import Foundation
import Graph
import Runtime

/// YOLOv2's Region layer as OpenCV DNN's `RegionLayerImpl` computes it (darknet's `[region]`
/// followed by OpenCV's thresholding and per-class NMS), for a Caffe N×C×H×W input.
///
/// Row `((n·H + y)·W + x)·boxes + a` of the output holds, for box a of cell (y, x) — whose values
/// sit in channels `a·cell … a·cell + cell − 1`: `x = (x + σ(t_x)) / W`, `y = (y + σ(t_y)) / H`,
/// `w = e^{t_w} · anchor_w / W`, `h = e^{t_h} · anchor_h / H`, objectness `σ(t_o)`, then each
/// class's probability (softmax over the classes, or σ of each when `softmax` is false) times the
/// objectness, set to 0 unless above `thresh`. (OpenCV divides w by H and h by W; darknet by W
/// and H: they agree on YOLOv2's square grids, and this follows darknet.) With `nms_threshold`
/// > 0, for each class independently, boxes are visited by decreasing score (those above
/// `thresh`, ties in index order) and a box's score is zeroed when its IoU with a kept box
/// exceeds the threshold, as OpenCV's `do_nms_sort` with `NMSFast_`.
///
/// It runs as one host step: NMS is sequential and data-dependent, and the whole layer touches a
/// few ten thousand values (13×13×5×25 for YOLOv2 VOC).
struct RegionComputation: Sendable {
    var settings: RegionSettings
    var batch: Int, height: Int, width: Int

    func run(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let cell = settings.cellSize, boxes = settings.boxes, classes = settings.classes
        let plane = height * width
        func logistic(_ v: Float) -> Float { 1 / (1 + expf(-v)) }
        for n in 0..<batch {
            let image = output + n * plane * boxes * cell
            for y in 0..<height {
                for x in 0..<width {
                    for a in 0..<boxes {
                        let row = image + ((y * width + x) * boxes + a) * cell
                        let source = input + ((n * boxes + a) * cell) * plane + y * width + x
                        func value(_ k: Int) -> Float { source[k * plane] }
                        let objectness = logistic(value(4))
                        row[0] = (Float(x) + logistic(value(0))) / Float(width)
                        row[1] = (Float(y) + logistic(value(1))) / Float(height)
                        row[2] = expf(value(2)) * settings.anchors[2 * a] / Float(width)
                        row[3] = expf(value(3)) * settings.anchors[2 * a + 1] / Float(height)
                        row[4] = objectness
                        if settings.softmax {
                            var largest = -Float.greatestFiniteMagnitude
                            for j in 0..<classes where value(5 + j) > largest { largest = value(5 + j) }
                            var sum: Float = 0
                            for j in 0..<classes {
                                let e = expf(value(5 + j) - largest)
                                sum += e
                                row[5 + j] = e
                            }
                            for j in 0..<classes { row[5 + j] /= sum }
                        } else {
                            for j in 0..<classes { row[5 + j] = logistic(value(5 + j)) }
                        }
                        for j in 0..<classes {
                            let probability = objectness * row[5 + j]
                            row[5 + j] = probability > settings.threshold ? probability : 0
                        }
                    }
                }
            }
            if settings.nmsThreshold > 0 { suppress(image, count: plane * boxes) }
        }
    }

    /// OpenCV's `do_nms_sort` over one image's `count` rows.
    private func suppress(_ rows: UnsafeMutablePointer<Float>, count: Int) {
        let cell = settings.cellSize
        // Boxes as OpenCV's Rect2f: corner, width, height.
        let boxes = (0..<count).map { i -> (x: Float, y: Float, w: Float, h: Float) in
            let r = rows + i * cell
            return (r[0] - r[2] / 2, r[1] - r[3] / 2, r[2], r[3])
        }
        func overlap(_ p: Int, _ q: Int) -> Float {
            let (a, b) = (boxes[p], boxes[q])
            let (areaA, areaB) = (a.w * a.h, b.w * b.h)
            if areaA + areaB <= Float.ulpOfOne { return 1 }
            let x0 = max(a.x, b.x), y0 = max(a.y, b.y)
            let w = min(a.x + a.w, b.x + b.w) - x0, h = min(a.y + a.h, b.y + b.h) - y0
            let intersection = w <= 0 || h <= 0 ? 0 : Double(w * h)
            // 1 − jaccardDistance, with OpenCV's double division and float rounding.
            return 1 - Float(1 - intersection / (Double(areaA) + Double(areaB) - intersection))
        }
        for k in 0..<settings.classes {
            var candidates: [(score: Float, index: Int)] = []
            for i in 0..<count {
                let score = rows[i * cell + 5 + k]
                rows[i * cell + 5 + k] = 0
                if score > settings.threshold { candidates.append((score, i)) }
            }
            // std::stable_sort by decreasing score.
            let order = candidates.enumerated().sorted { p, q in
                p.element.score > q.element.score || (p.element.score == q.element.score && p.offset < q.offset)
            }.map(\.element)
            var kept: [Int] = []
            for candidate in order where kept.allSatisfy({ overlap(candidate.index, $0) <= settings.nmsThreshold }) {
                kept.append(candidate.index)
                rows[candidate.index * cell + 5 + k] = candidate.score
            }
        }
    }
}

extension Lowering {
    /// Region (YOLOv2; `RegionComputation` has the semantics): one host step over the input.
    mutating func lowerRegion(_ node: Node) throws {
        let settings = try RegionSettings(node.layer)
        let dims = shape(node.inputs[0])
        guard dims.count == 4 else { throw unsupported(node, "Region needs an N×C×H×W input, got \(dims)") }
        let computation = RegionComputation(settings: settings, batch: dims[0], height: dims[2], width: dims[3])
        let operands = [Operand(buffer(node.inputs[0])), Operand(buffer(node.outputs[0]))]
        program.steps.append(Step(label: node.name, .host(HostStep(operands: operands) { pointers in
            computation.run(input: pointers[0], output: pointers[1])
            return true
        })))
    }
}
