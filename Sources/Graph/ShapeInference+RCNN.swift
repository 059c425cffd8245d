import CaffeFormat
import Foundation

/// A Proposal layer's settings, resolved from `proposal_param` (OpenCV DNN's and the C++ forks'
/// fields, with their defaults), with py-faster-rcnn's anchors.
///
/// py-faster-rcnn's `rpn.proposal_layer` Python layer reaches this type as a `Proposal` layer
/// (`PythonLayerMapping`): its `param_str` gives `feat_stride` and `scales` (and, as some forks
/// allow, `ratios` and `base_size`), and its `cfg[phase]` the rest (TEST: 6000 boxes before NMS,
/// 300 after, NMS at 0.7, minimum size 16; TRAIN: 12000 and 2000).
///
/// Example: the defaults give 9 anchors per position, the first `[-84, -40, 99, 55]`.
public struct ProposalSettings: Sendable, Equatable {
    public var featStride: Int
    public var baseSize: Int
    /// Boxes narrower or shorter than this, times `im_info[2]`, are dropped.
    public var minSize: Float
    public var ratios: [Float]
    public var scales: [Float]
    /// Boxes kept before NMS (0: all).
    public var preNMSTopN: Int
    /// Boxes kept after NMS (0: all).
    public var postNMSTopN: Int
    public var nmsThreshold: Float

    /// Reads `layer.proposalParam`, with Caffe-style checks as diagnostics.
    public init(_ layer: Caffe_LayerParameter) throws {
        let p = layer.proposalParam
        featStride = Int(p.featStride)
        baseSize = Int(p.baseSize)
        minSize = Float(p.minSize)
        ratios = p.ratio.isEmpty ? [0.5, 1, 2] : p.ratio
        scales = p.scale.isEmpty ? [8, 16, 32] : p.scale
        preNMSTopN = Int(p.preNmsTopn)
        postNMSTopN = Int(p.postNmsTopn)
        nmsThreshold = p.nmsThresh
        guard featStride > 0 else { throw Diagnostic("Proposal's feat_stride must be positive, got \(featStride)", hint: "VGG16 and ZF use 16") }
        guard baseSize > 0 else { throw Diagnostic("Proposal's base_size must be positive, got \(baseSize)") }
        if let bad = ratios.first(where: { !($0 > 0) || !$0.isFinite }) {
            throw Diagnostic("Proposal's ratio values must be positive, got \(bad)", hint: "py-faster-rcnn uses ratio: 0.5 ratio: 1 ratio: 2")
        }
        if let bad = scales.first(where: { !($0 > 0) || !$0.isFinite }) {
            throw Diagnostic("Proposal's scale values must be positive, got \(bad)", hint: "py-faster-rcnn uses scale: 8 scale: 16 scale: 32")
        }
        guard nmsThreshold.isFinite, nmsThreshold >= 0 else {
            throw Diagnostic("Proposal's nms_thresh must be a non-negative number, got \(nmsThreshold)", hint: "py-faster-rcnn uses 0.7")
        }
    }

    /// Anchors per position.
    public var anchorCount: Int { ratios.count * scales.count }

    /// py-faster-rcnn's `generate_anchors(base_size, ratios, scales)`: `[x1, y1, x2, y2]` per
    /// anchor, ratios outer and scales inner, computed in double and rounded half to even like
    /// NumPy's `np.round`, then converted to float as the layer does (`astype(float32)`).
    public var anchors: [Float] {
        func centered(_ w: Double, _ h: Double, _ x: Double, _ y: Double) -> [Double] {
            [x - 0.5 * (w - 1), y - 0.5 * (h - 1), x + 0.5 * (w - 1), y + 0.5 * (h - 1)]
        }
        let base = Double(baseSize)
        let (center, size) = (0.5 * (base - 1), base * base)
        var result: [Float] = []
        for ratio in ratios {
            let w = (size / Double(ratio)).squareRoot().rounded(.toNearestOrEven)
            let h = (w * Double(ratio)).rounded(.toNearestOrEven)
            // The ratio anchor's own width, height and center (`_whctrs`) for the scale enumeration.
            let box = centered(w, h, center, center)
            let (bw, bh) = (box[2] - box[0] + 1, box[3] - box[1] + 1)
            let (cx, cy) = (box[0] + 0.5 * (bw - 1), box[1] + 0.5 * (bh - 1))
            for scale in scales {
                result += centered(bw * Double(scale), bh * Double(scale), cx, cy).map { Float($0) }
            }
        }
        return result
    }

    /// The most boxes the layer can output for `positions` feature-map positions: its setup
    /// (largest) row count, which each Forward may lower.
    public func maximumRows(positions: Int) -> Int {
        var rows = positions * anchorCount
        if preNMSTopN > 0 { rows = min(rows, preNMSTopN) }
        if postNMSTopN > 0 { rows = min(rows, postNMSTopN) }
        return rows
    }
}

extension ShapeInference {
    /// Proposal: bottoms RPN class probabilities 1×2A×H×W (A background maps, then A foreground),
    /// box deltas 1×4A×H×W and `im_info` (height, width, scale; row 0 is read); tops rois R×5
    /// (`[0, x1, y1, x2, y2]`) and, optionally, their scores R×1. R is data-dependent (the boxes
    /// that survive NMS): the rule gives its largest value, `min(H·W·A, pre_nms_topn,
    /// post_nms_topn)`, and a compiled net follows each Forward's count as for Filter.
    /// py-faster-rcnn asserts a batch of one; OpenCV DNN too.
    static func proposal(_ c: ShapeContext) throws -> LayerSignature {
        let settings = try ProposalSettings(c.layer)
        guard (1...2).contains(c.layer.top.count) else {
            throw Diagnostic("Proposal produces rois and, optionally, their scores: 1 or 2 tops, got \(c.layer.top.count)")
        }
        let (scores, deltas, info) = (c.inputs[0], c.inputs[1], c.inputs[2])
        guard scores.rank == 4 else { throw Diagnostic("Proposal's scores must be 1×2A×H×W, got \(c.shapeText(0))") }
        guard deltas.rank == 4 else { throw Diagnostic("Proposal's box deltas must be 1×4A×H×W, got \(c.shapeText(1))") }
        let a = settings.anchorCount
        guard scores.isFullyKnown, deltas.isFullyKnown else {
            return LayerSignature(outputs: [TensorShape([TensorShape.unknown, 5]), TensorShape([TensorShape.unknown, 1])].prefix(c.layer.top.count).map { $0 })
        }
        guard scores[0] == 1 else {
            throw Diagnostic("Proposal handles one image at a time, but \(c.shapeText(0)) holds \(scores[0])",
                             hint: "py-faster-rcnn asserts 'Only single item batches are supported'; run images one by one")
        }
        guard scores[1] == 2 * a else {
            throw Diagnostic("Proposal's scores \(c.shapeText(0)) need 2 × \(a) channels (background then foreground for \(settings.ratios.count) ratio\(settings.ratios.count == 1 ? "" : "s") × \(settings.scales.count) scale\(settings.scales.count == 1 ? "" : "s")), got \(scores[1])",
                             hint: "the anchors come from ratio and scale (py-faster-rcnn: 3 × 3)")
        }
        guard deltas[0] == 1, deltas[1] == 4 * a, deltas[2] == scores[2], deltas[3] == scores[3] else {
            throw Diagnostic("Proposal's box deltas \(c.shapeText(1)) must be 1×\(4 * a)×\(scores[2])×\(scores[3]) to match the scores \(c.shapeText(0))")
        }
        if info.isFullyKnown, let count = info.count, count < 3 {
            throw Diagnostic("Proposal's im_info \(c.shapeText(2)) must hold height, width and scale (3 values)")
        }
        let positions = scores[2] * scores[3]
        let rows = settings.maximumRows(positions: positions)
        let outputs = [TensorShape([rows, 5]), TensorShape([rows, 1])]
        return LayerSignature(outputs: Array(outputs.prefix(c.layer.top.count)), flops: 30 &* positions &* a)
    }
}

/// A Region layer's settings (YOLOv2's `[region]` as OpenCV DNN runs it), checked.
public struct RegionSettings: Sendable {
    public var classes: Int
    public var coords: Int
    /// Boxes per cell (darknet's `num`).
    public var boxes: Int
    public var softmax: Bool
    /// Width and height of each box's anchor, in cells.
    public var anchors: [Float]
    public var threshold: Float
    public var nmsThreshold: Float

    /// Values per box: coordinates, objectness, class scores.
    public var cellSize: Int { coords + 1 + classes }

    public init(_ layer: Caffe_LayerParameter) throws {
        let p = layer.regionParam
        classes = Int(p.classes)
        coords = Int(p.coords)
        boxes = Int(p.boxesOfEachGrid)
        softmax = p.softmax
        anchors = p.anchors
        threshold = p.thresh
        nmsThreshold = p.nmsThreshold
        guard coords == 4 else { throw Diagnostic("Region decodes 4 box coordinates (coords: 4), got coords: \(coords)", hint: "OpenCV DNN and darknet's YOLOv2 use 4") }
        guard classes >= 1 else { throw Diagnostic("Region needs at least one class, got classes: \(classes)") }
        guard boxes >= 1 else { throw Diagnostic("Region needs at least one box per cell, got boxes_of_each_grid: \(boxes)") }
        guard anchors.count == 2 * boxes else {
            throw Diagnostic("Region needs a width and a height per box: \(2 * boxes) anchors values for boxes_of_each_grid: \(boxes), got \(anchors.count)",
                             hint: "YOLOv2 VOC: anchors: 1.3221 anchors: 1.73145 anchors: 3.19275 anchors: 4.00944 … (darknet's yolo-voc.cfg)")
        }
        guard threshold.isFinite, nmsThreshold.isFinite, nmsThreshold >= 0 else {
            throw Diagnostic("Region's thresh and nms_threshold must be finite, nms_threshold ≥ 0; got \(threshold) and \(nmsThreshold)")
        }
    }
}

/// PSROIPooling's settings (R-FCN, daijifeng001/caffe-rfcn's `PSROIPoolingLayer::LayerSetUp`).
public struct PSROIPoolingSettings: Sendable {
    public var spatialScale: Float
    public var outputDim: Int
    public var groupSize: Int

    public init(_ layer: Caffe_LayerParameter) throws {
        let p = layer.psroiPoolingParam
        guard p.hasSpatialScale, p.hasOutputDim, p.hasGroupSize else {
            throw Diagnostic("PSROIPooling needs psroi_pooling_param { spatial_scale output_dim group_size } (all three are required in caffe-rfcn)",
                             hint: "R-FCN ResNet-50: spatial_scale: 0.0625 output_dim: 21 group_size: 7")
        }
        spatialScale = p.spatialScale
        outputDim = Int(p.outputDim)
        groupSize = Int(p.groupSize)
        guard outputDim > 0 else { throw Diagnostic("PSROIPooling's output_dim must be > 0, got \(outputDim)") }
        guard groupSize > 0 else { throw Diagnostic("PSROIPooling's group_size must be > 0, got \(groupSize)") }
        guard spatialScale.isFinite else { throw Diagnostic("PSROIPooling's spatial_scale must be finite, got \(spatialScale)") }
    }
}

extension ShapeInference {
    /// Region: N×(boxes·(coords+1+classes))×H×W in, one row per (image, y, x, box) out, each
    /// `[x, y, w, h, objectness, class scores…]` (OpenCV DNN's layout: rows N·H·W·boxes).
    static func region(_ c: ShapeContext) throws -> LayerSignature {
        let settings = try RegionSettings(c.layer)
        let input = c.inputs[0]
        guard input.rank == 4 else { throw Diagnostic("Region needs an N×C×H×W input, got \(c.shapeText(0))") }
        guard input.isFullyKnown else { return LayerSignature(outputs: [TensorShape([TensorShape.unknown, settings.cellSize])]) }
        guard input[1] == settings.boxes * settings.cellSize else {
            throw Diagnostic("Region's input \(c.shapeText(0)) needs \(settings.boxes) × \(settings.cellSize) = \(settings.boxes * settings.cellSize) channels (boxes_of_each_grid × (coords + 1 + classes)), got \(input[1])")
        }
        let rows = input[0] * input[2] * input[3] * settings.boxes
        return LayerSignature(outputs: [TensorShape([rows, settings.cellSize])], flops: 20 &* (input.count ?? 0))
    }

    /// PSROIPooling: features N×(output_dim·group_size²)×H×W and rois R×5 in; R×output_dim×
    /// group_size×group_size out (caffe-rfcn's `Reshape`, with its channel check).
    static func psroiPooling(_ c: ShapeContext) throws -> LayerSignature {
        let settings = try PSROIPoolingSettings(c.layer)
        let (features, rois) = (c.inputs[0], c.inputs[1])
        guard features.rank == 4 else { throw Diagnostic("PSROIPooling's features must be N×C×H×W, got \(c.shapeText(0))") }
        guard rois.rank >= 2 else { throw Diagnostic("PSROIPooling's rois must be R×5, got \(c.shapeText(1))") }
        let g = settings.groupSize
        if features[1] != TensorShape.unknown, features[1] != settings.outputDim * g * g {
            throw Diagnostic("PSROIPooling's features \(c.shapeText(0)) need output_dim × group_size² = \(settings.outputDim) × \(g * g) = \(settings.outputDim * g * g) channels, got \(features[1])",
                             hint: "caffe-rfcn: \"input channel number does not match layer parameters\"")
        }
        if rois.isFullyKnown, rois.dims.dropFirst().reduce(1, *) != 5 {
            throw Diagnostic("PSROIPooling's rois must hold one [batch_index, x1, y1, x2, y2] row per ROI (R×5), got \(c.shapeText(1))")
        }
        let r = rois[0]
        let flops = r == TensorShape.unknown || features[2] == TensorShape.unknown ? 0 : r &* settings.outputDim &* features[2] &* features[3]
        return LayerSignature(outputs: [TensorShape([r, settings.outputDim, g, g])], flops: flops)
    }
}
