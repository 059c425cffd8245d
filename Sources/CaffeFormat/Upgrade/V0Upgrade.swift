// V0 → V1: `layers { layer { name: "conv1" type: "conv" num_output: 96 … } bottom top }`, Caffe's
// format until early 2014, becomes `layers { name type: CONVOLUTION convolution_param { … } }`.

extension NetUpgrader {
    /// Whether any `layers` entry wraps a V0 `layer { … }` block (Caffe's `NetNeedsV0ToV1Upgrade`).
    public static func needsV0ToV1Upgrade(_ net: Caffe_NetParameter) -> Bool {
        net.layers.contains { $0.hasLayer }
    }

    /// The V0 type strings and the V1 layer types they became (Caffe's `UpgradeV0LayerType`).
    /// `padding` is not here: padding layers are folded away before types are mapped.
    public static let v0LayerTypes: [String: Caffe_V1LayerParameter.LayerType] = [
        "accuracy": .accuracy,
        "bnll": .bnll,
        "concat": .concat,
        "conv": .convolution,
        "data": .data,
        "dropout": .dropout,
        "euclidean_loss": .euclideanLoss,
        "flatten": .flatten,
        "hdf5_data": .hdf5Data,
        "hdf5_output": .hdf5Output,
        "im2col": .im2Col,
        "images": .imageData,
        "infogain_loss": .infogainLoss,
        "innerproduct": .innerProduct,
        "lrn": .lrn,
        "multinomial_logistic_loss": .multinomialLogisticLoss,
        "pool": .pooling,
        "relu": .relu,
        "sigmoid": .sigmoid,
        "softmax": .softmax,
        "softmax_loss": .softmaxLoss,
        "split": .split,
        "tanh": .tanh,
        "window_data": .windowData,
    ]

    /// Replaces the V0 `layers` list with V1 layers (Caffe's `UpgradeV0Net`): first folds padding
    /// layers into their consumers, then maps each layer's type and flat V0 fields onto V1's
    /// per-type parameter messages.
    ///
    /// Unlike Caffe, which rebuilds the net from only its name, inputs and `force_backward`, every
    /// other net-level field is kept as written.
    static func upgradeV0ToV1(_ net: inout Caffe_NetParameter, file: String?) throws -> [String] {
        if let index = net.layers.firstIndex(where: { !$0.hasLayer }) {
            let v0Count = net.layers.filter(\.hasLayer).count
            throw Diagnostic("this entry of 'layers' has no V0 'layer { … }' block, but \(v0Count) other\(v0Count == 1 ? " has" : "s have") one; "
                                + "a net cannot mix V0 and V1 layers", file: file, layer: label(net.layers[index].name, index: index),
                             hint: "write every layer in one format, preferably the current layer { type: \"Name\" … }")
        }
        let (kept, folded) = try foldV0PaddingLayers(net, file: file)
        var ignored: [String] = []
        net.layers = try kept.map { entry, index in
            let v0 = entry.layer
            if v0.hasNewNum || v0.hasNewChannels { ignored.append(label(v0.name, index: index)) }
            return try upgradeV0Layer(entry, index: index, file: file)
        }
        let count = net.layers.count
        var notes = ["upgraded \(count) V0 layer\(count == 1 ? "" : "s") (layers { layer {} }) to V1 layers"]
        if folded > 0 {
            notes.append("folded \(folded) V0 padding layer\(folded == 1 ? "" : "s") into the pad of the conv/pool layer\(folded == 1 ? "" : "s") reading \(folded == 1 ? "it" : "them")")
        }
        if !ignored.isEmpty {
            notes.append("ignored V0 new_num/new_channels in \(ignored.map { "'\($0)'" }.joined(separator: ", ")) (no Caffe layer ever read them)")
        }
        return notes
    }

    /// Removes V0 `padding` layers, moving each one's `pad` into the `conv` or `pool` layer that reads
    /// its output and rewiring that layer to read the padding layer's input (Caffe's
    /// `UpgradeV0PaddingLayers`). Returns the kept entries with their original positions, and how many
    /// padding layers were removed.
    ///
    /// Like Caffe, it insists that every bottom is a net input or an earlier layer's top, and that a
    /// padding layer has one bottom and one top and feeds a single-bottom conv or pool layer.
    static func foldV0PaddingLayers(_ net: Caffe_NetParameter, file: String?) throws
        -> (kept: [(entry: Caffe_V1LayerParameter, index: Int)], folded: Int) {
        /// The index of the layer that last wrote each blob; net inputs map to nil.
        var lastWriter: [String: Int?] = [:]
        for input in net.input { lastWriter[input] = .some(nil) }
        var kept: [(entry: Caffe_V1LayerParameter, index: Int)] = []
        var folded = 0
        for (index, entry) in net.layers.enumerated() {
            let v0 = entry.layer
            let name = label(v0.name, index: index)
            if v0.type == "padding" {
                folded += 1
            } else {
                kept.append((entry, index))
            }
            for (slot, blob) in entry.bottom.enumerated() {
                guard let writer = lastWriter[blob] else {
                    throw Diagnostic("bottom '\(blob)' is neither a net input nor the top of an earlier layer", file: file, layer: name,
                                     hint: "check the spelling, or declare it with 'input: \"\(blob)\"' and its input_dim")
                }
                guard let writer, net.layers[writer].layer.type == "padding" else { continue }
                let padding = net.layers[writer]
                let paddingName = label(padding.layer.name, index: writer)
                guard v0.type == "conv" || v0.type == "pool" else {
                    throw Diagnostic("reads the output of V0 padding layer '\(paddingName)', but only 'conv' and 'pool' layers can "
                                        + "(found type '\(v0.type)')", file: file, layer: name,
                                     hint: "a V0 padding layer must feed a conv or pool layer, whose pad it becomes")
                }
                guard entry.bottom.count == 1 else {
                    throw Diagnostic("reads V0 padding layer '\(paddingName)' but has \(entry.bottom.count) bottoms; expected 1",
                                     file: file, layer: name)
                }
                guard padding.bottom.count == 1, padding.top.count == 1 else {
                    throw Diagnostic("V0 padding layer has \(padding.bottom.count) bottoms and \(padding.top.count) tops; expected 1 of each",
                                     file: file, layer: paddingName)
                }
                kept[kept.count - 1].entry.layer.pad = padding.layer.pad
                kept[kept.count - 1].entry.bottom[slot] = padding.bottom[0]
            }
            for blob in entry.top { lastWriter[blob] = .some(index) }
        }
        return (kept, folded)
    }

    /// Converts one V0 layer to V1 (Caffe's `UpgradeV0LayerParameter`).
    ///
    /// Each flat V0 field goes to the parameter message of the layer types that used it (`num_output`
    /// to `convolution_param` or `inner_product_param`, `kernelsize` to `convolution_param.kernel_size`
    /// or `pooling_param.kernel_size`, …). `scale`, `meanfile`, `cropsize` and `mirror` go to
    /// `transform_param` whatever the type. A field set on a layer type that never used it is an
    /// error here (Caffe logs it and drops the field). Only the V0 block, `bottom` and `top` are read.
    ///
    /// - Parameter index: the layer's position in `layers`, to name unnamed layers in diagnostics.
    public static func upgradeV0Layer(_ entry: Caffe_V1LayerParameter, index: Int = 0,
                                      file: String? = nil) throws -> Caffe_V1LayerParameter {
        var layer = Caffe_V1LayerParameter()
        layer.bottom = entry.bottom
        layer.top = entry.top
        guard entry.hasLayer else { return layer }
        let v0 = entry.layer
        let name = label(v0.name, index: index)
        let type = v0.type
        if v0.hasName { layer.name = v0.name }
        if v0.hasType {
            guard let v1Type = v0LayerTypes[type] else {
                throw Diagnostic("unknown V0 layer type '\(type)'" + Diagnostic.didYouMean(type, among: Array(v0LayerTypes.keys)),
                                 file: file, layer: name,
                                 hint: "V0 layer types are: " + v0LayerTypes.keys.sorted().joined(separator: ", "))
            }
            layer.type = v1Type
        }
        layer.blobs = v0.blobs
        layer.blobsLr = v0.blobsLr
        layer.weightDecay = v0.weightDecay

        /// The error for a V0 field on a layer type that has no such parameter.
        func misplaced(_ field: String, _ owners: [String]) -> Diagnostic {
            let what = type.isEmpty ? "a layer without a type" : "a '\(type)' layer"
            let list = owners.map { "'\($0)'" }
            let ownerText = list.count == 1 ? list[0] : list.dropLast().joined(separator: ", ") + " or " + list.last!
            return Diagnostic("V0 field '\(field)' does not apply to \(what)", file: file, layer: name,
                              hint: "'\(field)' is read only by \(ownerText) layers; remove it or fix the layer's type")
        }

        if v0.hasNumOutput {
            switch type {
            case "conv": layer.convolutionParam.numOutput = v0.numOutput
            case "innerproduct": layer.innerProductParam.numOutput = v0.numOutput
            default: throw misplaced("num_output", ["conv", "innerproduct"])
            }
        }
        if v0.hasBiasterm {
            switch type {
            case "conv": layer.convolutionParam.biasTerm = v0.biasterm
            case "innerproduct": layer.innerProductParam.biasTerm = v0.biasterm
            default: throw misplaced("biasterm", ["conv", "innerproduct"])
            }
        }
        if v0.hasWeightFiller {
            switch type {
            case "conv": layer.convolutionParam.weightFiller = v0.weightFiller
            case "innerproduct": layer.innerProductParam.weightFiller = v0.weightFiller
            default: throw misplaced("weight_filler", ["conv", "innerproduct"])
            }
        }
        if v0.hasBiasFiller {
            switch type {
            case "conv": layer.convolutionParam.biasFiller = v0.biasFiller
            case "innerproduct": layer.innerProductParam.biasFiller = v0.biasFiller
            default: throw misplaced("bias_filler", ["conv", "innerproduct"])
            }
        }
        if v0.hasPad {
            switch type {
            case "conv": layer.convolutionParam.pad.append(v0.pad)
            case "pool": layer.poolingParam.pad = v0.pad
            default: throw misplaced("pad", ["conv", "pool"])
            }
        }
        if v0.hasKernelsize {
            switch type {
            case "conv": layer.convolutionParam.kernelSize.append(v0.kernelsize)
            case "pool": layer.poolingParam.kernelSize = v0.kernelsize
            default: throw misplaced("kernelsize", ["conv", "pool"])
            }
        }
        if v0.hasGroup {
            guard type == "conv" else { throw misplaced("group", ["conv"]) }
            layer.convolutionParam.group = v0.group
        }
        if v0.hasStride {
            switch type {
            case "conv": layer.convolutionParam.stride.append(v0.stride)
            case "pool": layer.poolingParam.stride = v0.stride
            default: throw misplaced("stride", ["conv", "pool"])
            }
        }
        if v0.hasPool {
            guard type == "pool" else { throw misplaced("pool", ["pool"]) }
            switch v0.pool {
            case .max: layer.poolingParam.pool = .max
            case .ave: layer.poolingParam.pool = .ave
            case .stochastic: layer.poolingParam.pool = .stochastic
            }
        }
        if v0.hasDropoutRatio {
            guard type == "dropout" else { throw misplaced("dropout_ratio", ["dropout"]) }
            layer.dropoutParam.dropoutRatio = v0.dropoutRatio
        }
        if v0.hasLocalSize {
            guard type == "lrn" else { throw misplaced("local_size", ["lrn"]) }
            layer.lrnParam.localSize = v0.localSize
        }
        if v0.hasAlpha {
            guard type == "lrn" else { throw misplaced("alpha", ["lrn"]) }
            layer.lrnParam.alpha = v0.alpha
        }
        if v0.hasBeta {
            guard type == "lrn" else { throw misplaced("beta", ["lrn"]) }
            layer.lrnParam.beta = v0.beta
        }
        if v0.hasK {
            guard type == "lrn" else { throw misplaced("k", ["lrn"]) }
            layer.lrnParam.k = v0.k
        }
        if v0.hasSource {
            switch type {
            case "data": layer.dataParam.source = v0.source
            case "hdf5_data": layer.hdf5DataParam.source = v0.source
            case "images": layer.imageDataParam.source = v0.source
            case "window_data": layer.windowDataParam.source = v0.source
            case "infogain_loss": layer.infogainLossParam.source = v0.source
            default: throw misplaced("source", ["data", "hdf5_data", "images", "window_data", "infogain_loss"])
            }
        }
        if v0.hasScale { layer.transformParam.scale = v0.scale }
        if v0.hasMeanfile { layer.transformParam.meanFile = v0.meanfile }
        if v0.hasBatchsize {
            switch type {
            case "data": layer.dataParam.batchSize = v0.batchsize
            case "hdf5_data": layer.hdf5DataParam.batchSize = v0.batchsize
            case "images": layer.imageDataParam.batchSize = v0.batchsize
            case "window_data": layer.windowDataParam.batchSize = v0.batchsize
            default: throw misplaced("batchsize", ["data", "hdf5_data", "images", "window_data"])
            }
        }
        if v0.hasCropsize { layer.transformParam.cropSize = v0.cropsize }
        if v0.hasMirror { layer.transformParam.mirror = v0.mirror }
        if v0.hasRandSkip {
            switch type {
            case "data": layer.dataParam.randSkip = v0.randSkip
            case "images": layer.imageDataParam.randSkip = v0.randSkip
            default: throw misplaced("rand_skip", ["data", "images"])
            }
        }
        if v0.hasShuffleImages {
            guard type == "images" else { throw misplaced("shuffle_images", ["images"]) }
            layer.imageDataParam.shuffle = v0.shuffleImages
        }
        if v0.hasNewHeight {
            guard type == "images" else { throw misplaced("new_height", ["images"]) }
            layer.imageDataParam.newHeight = try nonNegative(v0.newHeight, "new_height", file: file, layer: name)
        }
        if v0.hasNewWidth {
            guard type == "images" else { throw misplaced("new_width", ["images"]) }
            layer.imageDataParam.newWidth = try nonNegative(v0.newWidth, "new_width", file: file, layer: name)
        }
        if v0.hasConcatDim {
            guard type == "concat" else { throw misplaced("concat_dim", ["concat"]) }
            layer.concatParam.concatDim = v0.concatDim
        }
        if v0.hasDetFgThreshold {
            guard type == "window_data" else { throw misplaced("det_fg_threshold", ["window_data"]) }
            layer.windowDataParam.fgThreshold = v0.detFgThreshold
        }
        if v0.hasDetBgThreshold {
            guard type == "window_data" else { throw misplaced("det_bg_threshold", ["window_data"]) }
            layer.windowDataParam.bgThreshold = v0.detBgThreshold
        }
        if v0.hasDetFgFraction {
            guard type == "window_data" else { throw misplaced("det_fg_fraction", ["window_data"]) }
            layer.windowDataParam.fgFraction = v0.detFgFraction
        }
        if v0.hasDetContextPad {
            guard type == "window_data" else { throw misplaced("det_context_pad", ["window_data"]) }
            layer.windowDataParam.contextPad = v0.detContextPad
        }
        if v0.hasDetCropMode {
            guard type == "window_data" else { throw misplaced("det_crop_mode", ["window_data"]) }
            layer.windowDataParam.cropMode = v0.detCropMode
        }
        if v0.hasHdf5OutputParam {
            guard type == "hdf5_output" else { throw misplaced("hdf5_output_param", ["hdf5_output"]) }
            layer.hdf5OutputParam = v0.hdf5OutputParam
        }
        return layer
    }

    /// `value` as the unsigned field it becomes, or a diagnostic when it is negative.
    private static func nonNegative(_ value: Int32, _ field: String, file: String?, layer: String) throws -> UInt32 {
        guard let converted = UInt32(exactly: value) else {
            throw Diagnostic("V0 field '\(field)' is \(value); expected 0 (keep the image size) or a positive size",
                             file: file, layer: layer)
        }
        return converted
    }
}
