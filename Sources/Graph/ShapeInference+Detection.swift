import CaffeFormat
import Foundation

/// Shape rules for SSD's layers (weiliu89/caffe, branch ssd) with the checks of their
/// `LayerSetUp`/`Reshape`: Permute and PriorBox (which run), DetectionOutput (its setup shape:
/// Caffe resizes it to the kept detections at every forward), and the train/test-only
/// AnnotatedData, MultiBoxLoss and DetectionEvaluate, so SSD's train and test nets explain.
extension ShapeInference {
    /// Permute: the input's axes in `Permutation.order`.
    static func permute(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        guard input.isRankKnown else { return LayerSignature(outputs: [.unknownRank]) }
        let order = try Permutation(c.layer.permuteParam, rank: input.rank).order
        return LayerSignature(outputs: [TensorShape(order.map { input.dims[$0] })])
    }

    /// PriorBox: `1 × 2 × (H·W·priors·4)` for the `H × W` feature map of bottom 0 (boxes, then
    /// their variances); bottom 1 is the image, read for its size when the prototxt gives none.
    static func priorBox(_ c: ShapeContext) throws -> LayerSignature {
        let feature = c.inputs[0]
        guard feature.rank == 4 else { throw Diagnostic("PriorBox needs a 4-D feature map as bottom 0, got \(c.shapeText(0))") }
        let geometry = try PriorBoxGeometry(c.layer.priorBoxParam)
        if geometry.imageSize == nil, c.inputs.count < 2 || c.inputs[1].rank != 4 {
            throw Diagnostic("PriorBox takes the image size from its second bottom (a 4-D image) unless img_size or img_h/img_w is given",
                             hint: "add the data blob as the second bottom, or set img_size")
        }
        let cells = Extent.product([feature[2], feature[3]])
        let length = cells == TensorShape.unknown ? TensorShape.unknown : cells * geometry.priorsPerCell * 4
        return LayerSignature(outputs: [TensorShape([1, 2, length])])
    }

    /// DetectionOutput over `loc` (N × priors·locClasses·4), `conf` (N × priors·classes) and the
    /// priors (1 × 2 × priors·4): Caffe's setup shape `1 × 1 × 1 × 7`; each forward resizes it to
    /// one row `[image, label, score, xmin, ymin, xmax, ymax]` per kept detection (axis 2 is a
    /// data-dependent extent: `Graph.rowOwnership`, `DetectionOutputBound`).
    static func detectionOutput(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.detectionOutputParam
        guard p.hasNumClasses, p.numClasses > 0 else {
            throw DetectionDiagnostics.required("detection_output_param { num_classes }", layer: "DetectionOutput")
        }
        guard p.nmsParam.nmsThreshold >= 0 else {
            throw Diagnostic("DetectionOutput's nms_param { nms_threshold } must be non-negative, got \(p.nmsParam.nmsThreshold)",
                             hint: "SSD uses 0.45")
        }
        guard p.nmsParam.eta > 0, p.nmsParam.eta <= 1 else {
            throw Diagnostic("DetectionOutput's nms_param { eta } must be in (0, 1], got \(p.nmsParam.eta)",
                             hint: "1 (the default) keeps the NMS threshold fixed; smaller values shrink it after each kept box")
        }
        let (loc, conf, prior) = (c.inputs[0], c.inputs[1], c.inputs[2])
        if let priorCount = prior.count(from: 2), prior.rank == 3 {
            guard priorCount % 4 == 0 else { throw Diagnostic("the priors \(c.shapeText(2)) must hold 4 values per box") }
            let priors = priorCount / 4
            let locClasses = p.shareLocation ? 1 : Int(p.numClasses)
            if let perImage = loc.count(from: 1), perImage != priors * locClasses * 4 {
                throw Diagnostic("DetectionOutput's locations \(c.shapeText(0)) need \(priors * locClasses * 4) values per image (\(priors) priors × \(locClasses) location classes × 4)")
            }
            if let perImage = conf.count(from: 1), perImage != priors * Int(p.numClasses) {
                throw Diagnostic("DetectionOutput's confidences \(c.shapeText(1)) need \(priors * Int(p.numClasses)) values per image (\(priors) priors × \(p.numClasses) classes)")
            }
        } else if prior.isFullyKnown {
            throw Diagnostic("DetectionOutput's third bottom must be PriorBox's 1 × 2 × (priors·4) blob, got \(c.shapeText(2))")
        }
        return LayerSignature(outputs: [TensorShape([1, 1, 1, 7])])
    }

    /// AnnotatedData: images of the transformer's resize (or crop) size, and Caffe's label blob of
    /// one 8-value row per ground-truth box (`[image, label, instance, xmin, ymin, xmax, ymax,
    /// difficult]`), whose count is known only once data is read.
    static func annotatedData(_ c: ShapeContext) throws -> LayerSignature {
        let transform = c.layer.transformParam
        let unknown = TensorShape.unknown
        var height = transform.resizeParam.height > 0 ? Int(transform.resizeParam.height) : unknown
        var width = transform.resizeParam.width > 0 ? Int(transform.resizeParam.width) : unknown
        if transform.cropSize > 0 { (height, width) = (Int(transform.cropSize), Int(transform.cropSize)) }
        if transform.cropH > 0, transform.cropW > 0 { (height, width) = (Int(transform.cropH), Int(transform.cropW)) }
        let batch = Int(c.layer.dataParam.batchSize)
        var outputs = [TensorShape([batch, transform.forceGray ? 1 : 3, height, width]), TensorShape([1, 1, unknown, 8])]
        outputs = Array(outputs.prefix(c.layer.top.count))
        for (i, top) in c.layer.top.enumerated() where i < outputs.count {
            if let override = c.overrides[top] { outputs[i] = override }
        }
        return LayerSignature(outputs: outputs)
    }

    /// MultiBoxLoss: a scalar loss from `loc`, `conf`, the priors and the ground truth.
    static func multiBoxLoss(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.multiboxLossParam
        guard p.hasNumClasses, p.numClasses > 0 else {
            throw DetectionDiagnostics.required("multibox_loss_param { num_classes }", layer: "MultiBoxLoss")
        }
        return LayerSignature(outputs: [TensorShape.scalar])
    }

    /// DetectionEvaluate: `1 × 1 × rows × 5` true/false-positive records, rows known at run time.
    static func detectionEvaluate(_ c: ShapeContext) throws -> LayerSignature {
        LayerSignature(outputs: [TensorShape([1, 1, TensorShape.unknown, 5])])
    }
}

extension ShapeInference {
    /// Upsample (SegNet's `UpsampleLayer::Reshape`): values and mask both N×C×H×W with the same
    /// shape; the output is N×C×`UpsampleGeometry.size`.
    static func upsample(_ c: ShapeContext) throws -> LayerSignature {
        let (values, mask) = (c.inputs[0], c.inputs[1])
        guard values.rank == 4, mask.rank == 4 else {
            throw Diagnostic("Upsample needs 4-D values and a 4-D pooling mask, got \(c.shapeText(0)) and \(c.shapeText(1))")
        }
        guard values.isCompatible(with: mask) else {
            throw Diagnostic("Upsample's values \(c.shapeText(0)) and mask \(c.shapeText(1)) must have the same shape",
                             hint: "the mask is the second top of the MAX Pooling layer that made the values")
        }
        let geometry = try UpsampleGeometry(c.layer.upsampleParam)
        let (height, width) = geometry.size(height: values[2], width: values[3])
        return LayerSignature(outputs: [TensorShape([values[0], values[1], height, width])])
    }
}

extension ShapeInference {
    /// Reorg (YOLOv2): N×C×H×W → N×C·s²×H/s×W/s, or with `reverse` N×C/s²×H·s×W·s; the stride is
    /// required and must divide H and W (or C by s²), as the forks' `Reshape` checks.
    static func reorg(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.reorgParam, input = c.inputs[0]
        guard p.hasStride, p.stride > 0 else { throw Diagnostic("Reorg needs reorg_param { stride } (YOLOv2 uses 2)") }
        guard input.rank == 4 else { throw Diagnostic("Reorg needs an N×C×H×W input, got \(c.shapeText(0))") }
        guard input.isFullyKnown else { return LayerSignature(outputs: [TensorShape([input[0], TensorShape.unknown, TensorShape.unknown, TensorShape.unknown])]) }
        let s = Int(p.stride)
        if p.reverse {
            guard input[1] % (s * s) == 0 else { throw Diagnostic("Reorg with reverse needs channels divisible by stride² (\(s * s)), got \(c.shapeText(0))") }
            return LayerSignature(outputs: [TensorShape([input[0], input[1] / (s * s), input[2] * s, input[3] * s])])
        }
        guard input[2] % s == 0, input[3] % s == 0 else {
            throw Diagnostic("Reorg's stride \(s) must divide the height and width of \(c.shapeText(0))")
        }
        return LayerSignature(outputs: [TensorShape([input[0], input[1] * s * s, input[2] / s, input[3] / s])])
    }
}

/// Upsample's output size: `upsample_h × upsample_w` (each > 1), else the deprecated
/// `scale` (or `scale_h`/`scale_w`, each > 1) times the input, minus 1 where `pad_out_h`/`pad_out_w`
/// is set (scale 2 only), with SegNet's `LayerSetUp` checks.
public struct UpsampleGeometry: Sendable {
    public var exact: (height: Int, width: Int)?
    public var scale: (height: Int, width: Int)
    public var padOut: (height: Bool, width: Bool)

    public init(_ p: Caffe_UpsampleParameter) throws {
        let exactGiven = p.hasUpsampleH && p.hasUpsampleW
        guard exactGiven || (!p.hasScale && p.hasScaleH && p.hasScaleW) || (!p.hasScaleH && !p.hasScaleW) else {
            throw Diagnostic("Upsample needs upsample_h and upsample_w, or (deprecated) scale, or scale_h and scale_w")
        }
        scale = p.hasScaleH ? (Int(p.scaleH), Int(p.scaleW)) : (Int(p.scale), Int(p.scale))
        padOut = (p.padOutH, p.padOutW)
        if exactGiven {
            guard p.upsampleH > 1, p.upsampleW > 1 else { throw Diagnostic("Upsample upsample_h and upsample_w must be greater than 1") }
            exact = (Int(p.upsampleH), Int(p.upsampleW))
            return
        }
        guard scale.height > 1, scale.width > 1 else { throw Diagnostic("Upsample scales must be greater than 1, got \(scale)") }
        guard !padOut.height || scale.height == 2, !padOut.width || scale.width == 2 else {
            throw Diagnostic("Upsample pad_out_h/pad_out_w need a scale of 2 on that axis", hint: "give upsample_h and upsample_w instead")
        }
    }

    public func size(height: Int, width: Int) -> (height: Int, width: Int) {
        if let exact { return exact }
        let unknown = TensorShape.unknown
        return (height == unknown ? unknown : height * scale.height - (padOut.height ? 1 : 0),
                width == unknown ? unknown : width * scale.width - (padOut.width ? 1 : 0))
    }
}

/// A required field's diagnostic, worded once for the detection layers.
enum DetectionDiagnostics {
    static func required(_ field: String, layer: String) -> Diagnostic {
        Diagnostic("\(layer) needs \(field)", hint: "SSD's prototxts set it to the number of classes including the background")
    }
}

/// Permute's full axis order (`PermuteLayer::LayerSetUp`): the axes `order` names, each at most
/// once and within the rank, then the axes it leaves out in increasing order.
public struct Permutation: Sendable, Equatable {
    public var order: [Int]

    public init(_ p: Caffe_PermuteParameter, rank: Int) throws {
        var order: [Int] = []
        for axis in p.order.map(Int.init) {
            guard axis < rank else { throw Diagnostic("Permute order names axis \(axis), but the input has \(rank) axes") }
            guard !order.contains(axis) else { throw Diagnostic("Permute order names axis \(axis) twice", hint: "name each axis at most once") }
            order.append(axis)
        }
        self.order = order + (0..<rank).filter { !order.contains($0) }
    }
}

/// PriorBox's default boxes as SSD's `PriorBoxLayer` makes them: per feature-map cell, for each
/// `min_size` a square box, then (with `max_size`) a square of side `sqrt(min·max)`, then one box
/// per aspect ratio other than 1 (ratios deduplicated within 1e-6, each followed by its inverse
/// with `flip`); coordinates normalized by the image size, optionally clipped to [0, 1]; then
/// the variances. The fork truncates `min_size` and `max_size` to integers, and so does this.
public struct PriorBoxGeometry: Sendable {
    public var minSizes: [Float]
    public var maxSizes: [Float]
    public var aspectRatios: [Float]
    public var clip: Bool
    public var variance: [Float]
    /// The image size (height, width) the prototxt fixes, else nil: the second bottom's.
    public var imageSize: (height: Int, width: Int)?
    /// The cell step (height, width) the prototxt fixes, else nil: image size / feature size.
    public var step: (height: Float, width: Float)?
    public var offset: Float

    public var priorsPerCell: Int { aspectRatios.count * minSizes.count + maxSizes.count }

    public init(_ p: Caffe_PriorBoxParameter) throws {
        guard !p.minSize.isEmpty else { throw Diagnostic("PriorBox needs at least one min_size") }
        guard p.minSize.allSatisfy({ $0 > 0 }) else { throw Diagnostic("PriorBox min_size must be positive, got \(p.minSize)") }
        minSizes = p.minSize
        var ratios: [Float] = [1]
        for ratio in p.aspectRatio where !ratios.contains(where: { abs(ratio - $0) < 1e-6 }) {
            ratios.append(ratio)
            if p.flip { ratios.append(Float(1 / Double(ratio))) }
        }
        aspectRatios = ratios
        if !p.maxSize.isEmpty {
            guard p.maxSize.count == p.minSize.count else {
                throw Diagnostic("PriorBox has \(p.minSize.count) min_size but \(p.maxSize.count) max_size values; give one max_size per min_size")
            }
            for (low, high) in zip(p.minSize, p.maxSize) where !(high > low) {
                throw Diagnostic("PriorBox max_size (\(high)) must be greater than min_size (\(low))")
            }
        }
        maxSizes = p.maxSize
        clip = p.clip
        switch p.variance.count {
        case 0: variance = [0.1]
        case 1, 4: variance = p.variance
        default: throw Diagnostic("PriorBox takes one variance or four, got \(p.variance.count)")
        }
        guard variance.allSatisfy({ $0 > 0 }) else { throw Diagnostic("PriorBox variances must be positive, got \(variance)") }
        if p.hasImgH || p.hasImgW {
            guard !p.hasImgSize else { throw Diagnostic("PriorBox takes img_size or img_h/img_w, not both") }
            guard p.imgH > 0, p.imgW > 0 else { throw Diagnostic("PriorBox img_h and img_w must both be positive") }
            imageSize = (Int(p.imgH), Int(p.imgW))
        } else if p.hasImgSize {
            guard p.imgSize > 0 else { throw Diagnostic("PriorBox img_size must be positive") }
            imageSize = (Int(p.imgSize), Int(p.imgSize))
        }
        if p.hasStepH || p.hasStepW {
            guard !p.hasStep else { throw Diagnostic("PriorBox takes step or step_h/step_w, not both") }
            guard p.stepH > 0, p.stepW > 0 else { throw Diagnostic("PriorBox step_h and step_w must both be positive") }
            step = (p.stepH, p.stepW)
        } else if p.hasStep {
            guard p.step > 0 else { throw Diagnostic("PriorBox step must be positive") }
            step = (p.step, p.step)
        }
        offset = p.offset
    }

    /// The layer's output for its bottoms' shapes: the feature map N×C×H×W, and the image blob
    /// when there is a second bottom (its H×W; a missing or non-4-D one means none, as Caffe's
    /// PriorBox reads only the image blob's height and width).
    public func output(feature: [Int], image: [Int]?) -> [Float] {
        let size = image.flatMap { $0.count == 4 ? (height: $0[2], width: $0[3]) : nil } ?? (height: 0, width: 0)
        return output(featureHeight: feature[2], featureWidth: feature[3], image: size)
    }

    /// The layer's output for a `featureHeight × featureWidth` map and an image of `image` size
    /// (used when the prototxt gives none): `2 × (cells·priors·4)` values, boxes then variances.
    public func output(featureHeight: Int, featureWidth: Int, image: (height: Int, width: Int)) -> [Float] {
        let (imageHeight, imageWidth) = imageSize ?? image
        let stepHeight = step?.height ?? Float(imageHeight) / Float(featureHeight)
        let stepWidth = step?.width ?? Float(imageWidth) / Float(featureWidth)
        var boxes: [Float] = []
        boxes.reserveCapacity(featureHeight * featureWidth * priorsPerCell * 4)
        func add(_ centerX: Float, _ centerY: Float, _ width: Float, _ height: Float) {
            boxes.append(Float((Double(centerX) - Double(width) / 2) / Double(imageWidth)))
            boxes.append(Float((Double(centerY) - Double(height) / 2) / Double(imageHeight)))
            boxes.append(Float((Double(centerX) + Double(width) / 2) / Double(imageWidth)))
            boxes.append(Float((Double(centerY) + Double(height) / 2) / Double(imageHeight)))
        }
        for h in 0..<featureHeight {
            for w in 0..<featureWidth {
                let centerX = (Float(w) + offset) * stepWidth, centerY = (Float(h) + offset) * stepHeight
                for (s, minSize) in minSizes.enumerated() {
                    let low = Int(minSize)
                    add(centerX, centerY, Float(low), Float(low))
                    if !maxSizes.isEmpty {
                        let side = Float(Double(low * Int(maxSizes[s])).squareRoot())
                        add(centerX, centerY, side, side)
                    }
                    for ratio in aspectRatios where abs(ratio - 1) >= 1e-6 {
                        let root = ratio.squareRoot()
                        add(centerX, centerY, Float(low) * root, Float(low) / root)
                    }
                }
            }
        }
        if clip { boxes = boxes.map { min(max($0, 0), 1) } }
        let variances = variance.count == 1 ? Array(repeating: variance[0], count: boxes.count)
            : (0..<(boxes.count / 4)).flatMap { _ in variance }
        return boxes + variances
    }
}
