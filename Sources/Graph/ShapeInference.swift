import CaffeFormat

/// What shape inference learns about one layer: its output shapes, its parameter blobs and its cost.
public struct LayerSignature: Sendable {
    public var outputs: [TensorShape]
    public var parameters: [(shape: TensorShape, role: String)]
    public var flops: Int
    /// The node's typed attributes, decided with its shapes (see `NodeAttributes`).
    public var attributes: NodeAttributes?

    public init(outputs: [TensorShape], parameters: [(shape: TensorShape, role: String)] = [], flops: Int = 0,
                attributes: NodeAttributes? = nil) {
        self.outputs = outputs
        self.parameters = parameters
        self.flops = flops
        self.attributes = attributes
    }
}

/// The inputs to one layer's shape rule.
public struct ShapeContext {
    public var layer: Caffe_LayerParameter
    public var kind: OpKind
    public var inputs: [TensorShape]
    /// Blob names of `inputs`, for messages.
    public var inputNames: [String]
    public var phase: Caffe_Phase
    /// Shapes given on the command line (`--input data=1,3,224,224`), by top name.
    public var overrides: [String: TensorShape]

    func name(_ i: Int) -> String { i < inputNames.count ? "'\(inputNames[i])'" : "input \(i)" }
    func shapeText(_ i: Int) -> String { "\(name(i)) (\(inputs[i]))" }
}

/// Caffe's shape rules, one function per layer family, written from each layer's `Reshape` and
/// `LayerSetUp` in BVLC Caffe: the same output sizes (pooling rounds up and clips its last window,
/// deconvolution inverts convolution, crop offsets, reshape's 0/-1/axis/num_axes, N-D convolution,
/// InnerProduct's `axis`) and the same consistency checks — but failures are `Diagnostic`s that show
/// both shapes and the blob names instead of a CHECK abort.
///
/// Unknown extents (`?`) flow through: a rule computes what it can and leaves the rest unknown.
public enum ShapeInference {
    public static func infer(_ c: ShapeContext) throws -> LayerSignature {
        let expected = expectedBottomCount(c.kind, layer: c.layer)
        if !expected.contains(c.inputs.count) {
            let range = expected.lowerBound == expected.upperBound ? "\(expected.lowerBound)" :
                (expected.upperBound == Int.max ? "at least \(expected.lowerBound)" : "\(expected.lowerBound) to \(expected.upperBound)")
            throw Diagnostic("\(c.kind.rawValue) takes \(range) bottom blob\(expected.lowerBound == 1 && expected.upperBound == 1 ? "" : "s"), got \(c.inputs.count)",
                             hint: "check the layer's bottom: lines")
        }
        // Rules that need concrete ranks bail out to "unknown" when an input's rank is unknown.
        if c.inputs.contains(where: { !$0.isRankKnown }), !c.kind.isDataSource, c.kind != .silence {
            return try unknownRankSignature(c)
        }
        switch c.kind {
        case .input, .data, .imageData, .hdf5Data, .windowData, .memoryData, .dummyData:
            return try dataSource(c)
        case .hdf5Output, .silence:
            return LayerSignature(outputs: [])
        case .convolution, .deconvolution, .im2col:
            return try convolution(c)
        case .pooling: return try pooling(c)
        case .innerProduct: return try innerProduct(c)
        case .lrn: return try lrn(c)
        case .spp: return try spp(c)
        case .roiPooling: return try roiPooling(c)
        case .crop: return try crop(c)
        case .batchNorm: return try batchNorm(c)
        case .scale, .bias: return try scaleOrBias(c)
        case .mvn, .l2Norm:
            return sameShape(c, flopsPerElement: 4)
        case .normalize:
            let channels = c.inputs[0].rank > 1 ? c.inputs[0][1] : 1
            let shared = c.layer.normParam.channelShared
            return LayerSignature(outputs: [c.inputs[0]], parameters: [(shared ? TensorShape.scalar : TensorShape([channels]), "scale")],
                                  flops: 4 &* (c.inputs[0].count ?? 0))
        case .relu, .elu, .sigmoid, .tanh, .absVal, .bnll, .power, .exp, .log, .clip, .swish, .threshold, .dropout:
            return sameShape(c, flopsPerElement: 1)
        case .prelu:
            let channels = c.inputs[0].rank > 1 ? c.inputs[0][1] : 1
            let shared = c.layer.preluParam.channelShared
            var signature = sameShape(c, flopsPerElement: 2)
            signature.parameters = [(shared ? TensorShape.scalar : TensorShape([channels]), "slopes")]
            return signature
        case .softmax: return try softmax(c)
        case .concat: return try concat(c)
        case .eltwise: return try eltwise(c)
        case .reshape: return try reshape(c)
        case .flatten: return try flatten(c)
        case .split:
            return LayerSignature(outputs: Array(repeating: c.inputs[0], count: c.layer.top.count))
        case .slice: return try slice(c)
        case .tile: return try tile(c)
        case .reduction: return try reduction(c)
        case .argMax: return try argMax(c)
        case .embed: return try embed(c)
        case .parameter:
            let shape = TensorShape(c.layer.parameterParam.shape.dim.map(Int.init))
            return LayerSignature(outputs: [shape], parameters: [(shape, "values")])
        case .filter: return try filter(c)
        case .batchReindex:
            var shape = c.inputs[0]
            guard c.inputs[1].rank == 1 else {
                throw Diagnostic("BatchReindex's permutation \(c.shapeText(1)) must be 1-D")
            }
            if shape.rank > 0 { shape[0] = c.inputs[1][0] }
            return LayerSignature(outputs: [shape])
        case .lstm, .rnn: return try recurrent(c)
        case .lstmUnit: return try lstmUnit(c)
        case .permute: return try permute(c)
        case .priorBox: return try priorBox(c)
        case .detectionOutput: return try detectionOutput(c)
        case .annotatedData: return try annotatedData(c)
        case .multiBoxLoss: return try multiBoxLoss(c)
        case .detectionEvaluate: return try detectionEvaluate(c)
        case .upsample: return try upsample(c)
        case .reorg: return try reorg(c)
        case .proposal: return try proposal(c)
        case .region: return try region(c)
        case .psroiPooling: return try psroiPooling(c)
        case .bn: return try bn(c)
        case .denseImageData: return try denseImageData(c)
        case .spatialDropout:
            _ = try SpatialDropoutSettings(c.layer, phase: c.phase)
            return sameShape(c, flopsPerElement: 1)
        case .transpose: return try transpose(c)
        case .reverse: return try reverse(c)
        case .ctpnLSTM: return try ctpnLSTM(c)
        case .python:
            throw Diagnostic("a Python layer's top shapes come from the code implementing it",
                             hint: "build the net through the C API or LayerwiseNet with a layer function")
        case .softmaxWithLoss, .sigmoidCrossEntropyLoss, .euclideanLoss, .hingeLoss, .infogainLoss,
             .multinomialLogisticLoss, .contrastiveLoss, .smoothL1Loss, .accuracy:
            return try loss(c)
        }
    }

    /// How many bottoms each layer type takes.
    static func expectedBottomCount(_ kind: OpKind, layer: Caffe_LayerParameter) -> ClosedRange<Int> {
        switch kind {
        case .input, .data, .imageData, .hdf5Data, .windowData, .memoryData, .dummyData, .parameter, .annotatedData: return 0...0
        case .priorBox: return 1...2
        case .upsample: return 2...2  // values, pooling mask
        case .denseImageData: return 0...0
        case .ctpnLSTM: return 1...2  // x, [clip]
        case .detectionOutput: return 3...3  // loc, conf, priors
        case .proposal: return 3...3  // scores, box deltas, im_info
        case .psroiPooling: return 2...2  // features, rois
        case .multiBoxLoss, .detectionEvaluate: return kind == .multiBoxLoss ? 4...4 : 2...2
        case .convolution, .deconvolution, .split, .silence, .hdf5Output, .l2Norm: return 1...Int.max
        case .concat, .eltwise: return 1...Int.max
        case .scale, .bias: return 1...2
        case .crop, .roiPooling, .batchReindex, .euclideanLoss, .hingeLoss, .multinomialLogisticLoss, .embed:
            return kind == .embed ? 1...1 : 2...2
        case .filter: return 2...Int.max
        case .python: return 0...Int.max
        case .lstm, .rnn: return 2...5  // x, cont, [static], [h0, [c0]]
        case .lstmUnit, .contrastiveLoss: return 3...3
        case .softmaxWithLoss, .sigmoidCrossEntropyLoss, .accuracy: return 2...2
        case .infogainLoss: return 2...3
        case .smoothL1Loss: return 2...4
        default: return 1...1
        }
    }

    /// When an input's rank is unknown (an HDF5Data top), outputs are unknown too, but parameter
    /// shapes often are not: run the rule on an all-unknown input of the rank the layer expects.
    static func unknownRankSignature(_ c: ShapeContext) throws -> LayerSignature {
        let unknownOutputs = LayerSignature(outputs: Array(repeating: .unknownRank, count: c.layer.top.count))
        let assumedRank: Int
        switch c.kind {
        case .innerProduct: assumedRank = max(2, Int(c.layer.innerProductParam.axis) + 1)
        case .embed: assumedRank = 1
        case .convolution, .deconvolution, .batchNorm, .prelu: assumedRank = 4
        default: return unknownOutputs
        }
        var assumed = c
        assumed.inputs = c.inputs.map { $0.isRankKnown ? $0 : TensorShape(Array(repeating: TensorShape.unknown, count: assumedRank)) }
        guard let signature = try? infer(assumed) else { return unknownOutputs }
        return LayerSignature(outputs: unknownOutputs.outputs, parameters: signature.parameters)
    }

    static func sameShape(_ c: ShapeContext, flopsPerElement: Int) -> LayerSignature {
        LayerSignature(outputs: [c.inputs[0]], flops: flopsPerElement &* (c.inputs[0].count ?? 0))
    }

    // MARK: - Data sources

    static func dataSource(_ c: ShapeContext) throws -> LayerSignature {
        var outputs: [TensorShape]
        let tops = c.layer.top
        let unknown = TensorShape.unknown
        let crop = c.layer.transformParam.cropSize > 0 ? Int(c.layer.transformParam.cropSize) : unknown
        switch c.kind {
        case .input:
            let shapes = c.layer.inputParam.shape
            guard shapes.count == 1 || shapes.count == tops.count else {
                throw Diagnostic("Input has \(tops.count) tops but \(shapes.count) shapes; give one shape, or one per top",
                                 hint: "add input_param { shape { dim: N dim: C dim: H dim: W } }")
            }
            outputs = tops.indices.map { TensorShape((shapes.count == 1 ? shapes[0] : shapes[$0]).dim.map(Int.init)) }
            if shapes.isEmpty { outputs = Array(repeating: .unknownRank, count: tops.count) }
            if let shape = shapes.first(where: { $0.dim.contains { $0 < 0 } }) {
                throw Diagnostic("Input shape \(shape.dim) has a negative dim", hint: "every dim must be a size (≥ 0); pass --input NAME=d0,d1,... to set it")
            }
        case .dummyData:
            let p = c.layer.dummyDataParam
            if !p.shape.isEmpty {
                guard p.shape.count == 1 || p.shape.count == tops.count else {
                    throw Diagnostic("DummyData has \(tops.count) tops but \(p.shape.count) shapes; give one shape or one per top")
                }
                outputs = tops.indices.map { TensorShape((p.shape.count == 1 ? p.shape[0] : p.shape[$0]).dim.map(Int.init)) }
            } else {
                let legacy = [p.num, p.channels, p.height, p.width]
                guard legacy.allSatisfy({ $0.count == 1 || $0.count == tops.count }) else {
                    throw Diagnostic("DummyData needs a shape per top (shape { dim: ... }), or num/channels/height/width once or once per top")
                }
                outputs = tops.indices.map { i in TensorShape(legacy.map { Int($0.count == 1 ? $0[0] : $0[i]) }) }
            }
            guard p.dataFiller.count <= 1 || p.dataFiller.count == tops.count else {
                throw Diagnostic("DummyData has \(tops.count) tops but \(p.dataFiller.count) data_fillers; give one filler, or one per top")
            }
        case .data:
            let batch = Int(c.layer.dataParam.batchSize)
            outputs = [TensorShape([batch, unknown, crop, crop]), TensorShape([batch])]
        case .imageData:
            let p = c.layer.imageDataParam
            let height = crop != unknown ? crop : (p.newHeight > 0 ? Int(p.newHeight) : unknown)
            let width = crop != unknown ? crop : (p.newWidth > 0 ? Int(p.newWidth) : unknown)
            outputs = [TensorShape([Int(p.batchSize), p.isColor ? 3 : 1, height, width]), TensorShape([Int(p.batchSize)])]
        case .windowData:
            let p = c.layer.windowDataParam
            let size = p.cropSize > 0 ? Int(p.cropSize) : crop
            outputs = [TensorShape([Int(p.batchSize), 3, size, size]), TensorShape([Int(p.batchSize)])]
        case .memoryData:
            let p = c.layer.memoryDataParam
            outputs = [TensorShape([Int(p.batchSize), Int(p.channels), Int(p.height), Int(p.width)]), TensorShape([Int(p.batchSize)])]
        default:  // HDF5Data: shapes come from the files.
            outputs = Array(repeating: .unknownRank, count: tops.count)
        }
        if outputs.count > tops.count { outputs = Array(outputs.prefix(tops.count)) }
        while outputs.count < tops.count { outputs.append(.unknownRank) }
        for (i, top) in tops.enumerated() {
            if let override = c.overrides[top] { outputs[i] = override }
        }
        return LayerSignature(outputs: outputs)
    }

    // MARK: - Vision

    static func convolution(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        let g = try ConvolutionGeometry(c.layer.convolutionParam, rank: input.rank, needsOutputs: c.kind != .im2col)
        for i in 1..<c.inputs.count where c.inputs[i] != input {
            throw Diagnostic("all bottoms of a \(c.kind.rawValue) must have the same shape: \(c.shapeText(0)) vs \(c.shapeText(i))")
        }
        let channels = input[g.channelAxis]
        var output = TensorShape(Array(input.dims[0...g.channelAxis]))
        let spatialIn = Array(input.dims[(g.channelAxis + 1)...])
        for (i, extent) in spatialIn.enumerated() {
            let out = c.kind == .deconvolution ? g.deconvolutionOutput(extent, axis: i) : g.convolutionOutput(extent, axis: i)
            if extent != TensorShape.unknown, out < 1 {
                throw Diagnostic("the \(g.summary) window does not fit the input \(c.shapeText(0)) along spatial axis \(i) (output would be \(out))",
                                 hint: "use a smaller kernel or more padding, or feed a larger input")
            }
            output.dims.append(out)
        }
        if c.kind == .im2col {
            output[g.channelAxis] = Extent.product([channels] + g.kernel)
            return LayerSignature(outputs: Array(repeating: output, count: c.layer.top.count), flops: output.count ?? 0,
                                  attributes: .convolution(g))
        }
        if channels != TensorShape.unknown, channels % g.group != 0 {
            throw Diagnostic("the input has \(channels) channels, which group \(g.group) does not divide", hint: "channels must be a multiple of group")
        }
        guard g.numOutput % g.group == 0 else {
            throw Diagnostic("num_output \(g.numOutput) is not a multiple of group \(g.group)")
        }
        output[g.channelAxis] = g.numOutput
        let weight: TensorShape
        if c.kind == .deconvolution {
            weight = TensorShape([channels, g.numOutput / g.group] + g.kernel)
        } else {
            weight = TensorShape([g.numOutput, Extent.map(channels) { $0[0] / g.group }] + g.kernel)
        }
        var parameters: [(TensorShape, String)] = [(weight, "weights")]
        if g.biasTerm { parameters.append((TensorShape([g.numOutput]), "bias")) }
        // 2·MACs: every output (conv) or input (deconv) point sees (C/group)·kernel inputs.
        let perPoint = Extent.map(channels) { $0[0] / g.group } &* g.kernel.reduce(1, &*)
        let points = c.kind == .deconvolution ? (input.count ?? 0) / max(channels, 1) &* g.numOutput : (output.count ?? 0)
        let flops = channels == TensorShape.unknown ? 0 : 2 &* perPoint &* points &* c.inputs.count
        return LayerSignature(outputs: Array(repeating: output, count: c.inputs.count), parameters: parameters, flops: flops,
                              attributes: .convolution(g))
    }

    static func pooling(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        let g = try PoolingGeometry(c.layer.poolingParam, input: input)
        var output = TensorShape(Array(input.dims[0..<2]))
        for i in 0..<(input.rank - 2) {
            let out = g.output(input[i + 2], axis: i)
            if input[i + 2] != TensorShape.unknown, out < 1 {
                throw Diagnostic("the pooling window (kernel \(g.kernel[i])) is larger than the input \(c.shapeText(0)) along spatial axis \(i)",
                                 hint: "use global_pooling: true, a smaller kernel, or a larger input")
            }
            output.dims.append(out)
        }
        let tops = c.layer.top.count
        if tops == 2, c.layer.poolingParam.pool != .max {
            throw Diagnostic("only MAX pooling has a second (argmax mask) top")
        }
        guard tops == 1 || tops == 2 else { throw Diagnostic("Pooling has 1 top (or 2 for MAX with a mask), got \(tops)") }
        return LayerSignature(outputs: Array(repeating: output, count: tops), flops: (output.count ?? 0) &* g.kernel.reduce(1, &*),
                              attributes: .pooling(PoolingAttributes(geometry: g, method: c.layer.poolingParam.pool)))
    }

    static func innerProduct(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.innerProductParam
        let input = c.inputs[0]
        guard let axis = input.canonicalAxis(Int(p.axis)) else {
            throw Diagnostic("InnerProduct axis \(p.axis) is out of range for \(c.shapeText(0))")
        }
        guard p.numOutput > 0 else { throw Diagnostic("num_output must be set and positive", hint: "add num_output: N to inner_product_param") }
        let n = Int(p.numOutput)
        let k = input.count(from: axis) ?? TensorShape.unknown
        let m = input.count(from: 0, to: axis) ?? TensorShape.unknown
        let output = TensorShape(Array(input.dims[0..<axis]) + [n])
        var parameters: [(TensorShape, String)] = [(TensorShape(p.transpose ? [k, n] : [n, k]), "weights")]
        if p.biasTerm { parameters.append((TensorShape([n]), "bias")) }
        let flops = (k == TensorShape.unknown || m == TensorShape.unknown) ? 0 : 2 &* m &* n &* k
        return LayerSignature(outputs: [output], parameters: parameters, flops: flops,
                              attributes: .innerProduct(InnerProductAttributes(axis: axis, numOutput: n, transpose: p.transpose, biasTerm: p.biasTerm)))
    }

    static func lrn(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.lrnParam
        let size = Int(p.localSize)
        guard size % 2 == 1 else { throw Diagnostic("LRN local_size must be odd, got \(size)") }
        guard c.inputs[0].rank == 4 else {
            throw Diagnostic("LRN needs a 4-D N×C×H×W input, got \(c.shapeText(0))")
        }
        return LayerSignature(outputs: [c.inputs[0]], flops: (c.inputs[0].count ?? 0) &* (size + 3),
                              attributes: .lrn(LRNAttributes(localSize: size, region: p.normRegion, alpha: p.alpha, beta: p.beta, k: p.k)))
    }

    static func spp(_ c: ShapeContext) throws -> LayerSignature {
        let input = c.inputs[0]
        guard input.rank == 4 else { throw Diagnostic("SPP needs a 4-D input, got \(c.shapeText(0))") }
        let levels = Int(c.layer.sppParam.pyramidHeight)
        guard (1...16).contains(levels) else { throw Diagnostic("SPP pyramid_height must be between 1 and 16, got \(levels)") }
        let bins = (0..<levels).reduce(0) { $0 + (1 << (2 * $1)) }
        return LayerSignature(outputs: [TensorShape([input[0], Extent.map(input[1]) { $0[0] &* bins }])], flops: (input.count ?? 0) &* levels)
    }

    static func roiPooling(_ c: ShapeContext) throws -> LayerSignature {
        let p = c.layer.roiPoolingParam
        guard p.pooledH > 0, p.pooledW > 0 else {
            throw Diagnostic("ROIPooling needs pooled_h and pooled_w > 0", hint: "add roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 }")
        }
        let features = c.inputs[0], rois = c.inputs[1]
        guard features.rank == 4 else { throw Diagnostic("ROIPooling's first bottom must be N×C×H×W, got \(c.shapeText(0))") }
        guard rois.count(from: 1).map({ $0 == 5 }) ?? true, rois.rank >= 2 else {
            throw Diagnostic("ROIPooling's second bottom holds one [batch_index, x1, y1, x2, y2] row per ROI (R×5), got \(c.shapeText(1))")
        }
        let output = TensorShape([rois[0], features[1], Int(p.pooledH), Int(p.pooledW)])
        return LayerSignature(outputs: [output], flops: output.count ?? 0)
    }

    static func crop(_ c: ShapeContext) throws -> LayerSignature {
        let source = c.inputs[0], reference = c.inputs[1]
        guard source.rank == reference.rank else {
            throw Diagnostic("Crop needs bottoms of equal rank: \(c.shapeText(0)) vs reference \(c.shapeText(1))")
        }
        let p = c.layer.cropParam
        guard let axis = source.canonicalAxis(Int(p.axis)) else { throw Diagnostic("Crop axis \(p.axis) is out of range for \(c.shapeText(0))") }
        let cropped = source.rank - axis
        guard p.offset.count <= 1 || p.offset.count == cropped else {
            throw Diagnostic("Crop has \(p.offset.count) offsets; give one, or one per cropped axis (\(cropped), axes \(axis)...)")
        }
        var output = source
        for i in axis..<source.rank {
            let offset = p.offset.isEmpty ? 0 : Int(p.offset.count == 1 ? p.offset[0] : p.offset[i - axis])
            output[i] = reference[i]
            if source[i] != TensorShape.unknown, reference[i] != TensorShape.unknown, source[i] - offset < reference[i] {
                throw Diagnostic("cannot crop \(c.shapeText(0)) to \(c.shapeText(1)) along axis \(i): \(source[i]) - offset \(offset) < \(reference[i])",
                                 hint: "reduce the offset or crop a larger blob")
            }
        }
        return LayerSignature(outputs: [output])
    }

    // MARK: - Normalization

    static func batchNorm(_ c: ShapeContext) throws -> LayerSignature {
        for (i, spec) in c.layer.param.enumerated() where spec.hasLrMult && spec.lrMult != 0 {
            throw Diagnostic("BatchNorm's statistics are not learned, but param \(i) has lr_mult \(spec.lrMult)",
                             hint: "remove the param { lr_mult } lines (or set lr_mult: 0); learn scale and shift with a Scale layer")
        }
        let input = c.inputs[0]
        let channels = input.rank > 1 ? input[1] : 1
        return LayerSignature(outputs: [input],
                              parameters: [(TensorShape([channels]), "mean"), (TensorShape([channels]), "variance"), (TensorShape([1]), "scale factor")],
                              flops: 2 &* (input.count ?? 0))
    }

    static func scaleOrBias(_ c: ShapeContext) throws -> LayerSignature {
        let isScale = c.kind == .scale
        let axisValue = isScale ? Int(c.layer.scaleParam.axis) : Int(c.layer.biasParam.axis)
        let numAxes = isScale ? Int(c.layer.scaleParam.numAxes) : Int(c.layer.biasParam.numAxes)
        let input = c.inputs[0]
        var operand: TensorShape
        var axis: Int
        if c.inputs.count == 2 {
            operand = c.inputs[1]
            guard let resolved = input.canonicalAxis(axisValue) ?? (operand.rank == 0 && axisValue == 0 ? 0 : nil) else {
                throw Diagnostic("\(c.kind.rawValue) axis \(axisValue) is out of range for \(c.shapeText(0))")
            }
            axis = resolved
        } else {
            guard let resolved = input.canonicalAxis(axisValue) ?? (input.rank == 0 ? 0 : nil) else {
                throw Diagnostic("\(c.kind.rawValue) axis \(axisValue) is out of range for \(c.shapeText(0))")
            }
            axis = resolved
            guard numAxes >= -1 else { throw Diagnostic("num_axes must be -1 (to the end) or non-negative, got \(numAxes)") }
            let end = numAxes == -1 ? input.rank : axis + numAxes
            guard end <= input.rank else {
                throw Diagnostic("axis \(axis) + num_axes \(numAxes) runs past the \(input.rank) axes of \(c.shapeText(0))")
            }
            operand = TensorShape(Array(input.dims[axis..<end]))
        }
        guard axis + operand.rank <= input.rank else {
            throw Diagnostic("\(c.kind.rawValue) operand \(c.inputs.count == 2 ? c.shapeText(1) : operand.description) does not fit \(c.shapeText(0)) at axis \(axis)")
        }
        for i in 0..<operand.rank where !TensorShape([operand[i]]).isCompatible(with: TensorShape([input[axis + i]])) {
            throw Diagnostic("\(c.kind.rawValue) operand \(c.inputs.count == 2 ? c.shapeText(1) : operand.description) must match \(c.shapeText(0)) from axis \(axis)",
                             hint: "the operand's shape must equal the input's dims \(axis)..<\(axis + operand.rank)")
        }
        var parameters: [(TensorShape, String)] = []
        if c.inputs.count == 1 { parameters.append((operand, isScale ? "scale" : "bias")) }
        if isScale, c.layer.scaleParam.biasTerm { parameters.append((operand, "bias")) }
        return LayerSignature(outputs: [input], parameters: parameters, flops: (input.count ?? 0) &* (parameters.count > 1 ? 2 : 1))
    }
}
