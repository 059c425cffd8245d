import Foundation
import SwiftProtobuf

// V1 → V2: `layers { type: ENUM … }` (2014–2015) becomes `layer { type: "Name" … }`.

extension NetUpgrader {
    /// Whether the net still uses the legacy `layers` list (Caffe's `NetNeedsV1ToV2Upgrade`).
    public static func needsV1ToV2Upgrade(_ net: Caffe_NetParameter) -> Bool {
        !net.layers.isEmpty
    }

    /// Replaces the `layers` list with the equivalent `layer` list, keeping every other net field
    /// (Caffe's `UpgradeV1Net`).
    static func upgradeV1ToV2(_ net: inout Caffe_NetParameter, file: String?) throws -> [String] {
        if !net.layer.isEmpty {
            throw Diagnostic("the net has both 'layer' and 'layers' entries; Caffe refuses to upgrade such a mix", file: file,
                             hint: "write every layer in the current layer { type: \"Name\" … } format")
        }
        let upgraded = try net.layers.enumerated().map { index, old in
            try upgradeV1Layer(old, index: index, file: file)
        }
        net.layers = []
        net.layer = upgraded
        let count = upgraded.count
        return ["upgraded \(count) V1 layer\(count == 1 ? "" : "s") (layers {}) to the current layer {} format"]
    }

    /// Converts one V1 layer (Caffe's `UpgradeV1LayerParameter`).
    ///
    /// `param` names, `blob_share_mode`, `blobs_lr` and `weight_decay` are zipped position by
    /// position into `param { name share_mode lr_mult decay_mult }` specs; a spec only sets the
    /// fields the V1 layer gave. Blobs and every `*_param` message are copied as they are.
    ///
    /// - Parameter index: the layer's position in `layers`, to name unnamed layers in diagnostics.
    public static func upgradeV1Layer(_ old: Caffe_V1LayerParameter, index: Int = 0,
                                      file: String? = nil) throws -> Caffe_LayerParameter {
        let name = label(old.name, index: index)
        if old.hasLayer {
            throw Diagnostic("this V1 layer still holds a V0 'layer { … }' block, so the V0 upgrade did not convert it",
                             file: file, layer: name,
                             hint: "a V0 layer is written layers { layer { name type … } bottom top }; do not mix it with V1 fields")
        }
        var layer = Caffe_LayerParameter()
        layer.bottom = old.bottom
        layer.top = old.top
        if old.hasName { layer.name = old.name }
        layer.include = old.include
        layer.exclude = old.exclude
        if old.hasType {
            layer.type = v2TypeName(of: old.type)
        } else if let raw = lastVarint(ofField: 5, in: old.unknownFields) {
            throw Diagnostic("V1 layer type \(raw) is not one of Caffe's V1 LayerType values", file: file, layer: name,
                             hint: "this file may come from a Caffe fork with its own layer types; "
                                 + "convert it to the layer { type: \"…\" } format with that fork's upgrade_net_proto tool")
        }
        layer.blobs = old.blobs

        var specs: [Caffe_ParamSpec] = []
        func growSpecs(to count: Int) {
            while specs.count < count { specs.append(Caffe_ParamSpec()) }
        }
        for (position, paramName) in old.param.enumerated() {
            growSpecs(to: position + 1)
            specs[position].name = paramName
        }
        for (position, mode) in old.blobShareMode.enumerated() {
            growSpecs(to: position + 1)
            switch mode {
            case .strict: specs[position].shareMode = .strict
            case .permissive: specs[position].shareMode = .permissive
            }
        }
        for (position, rate) in old.blobsLr.enumerated() {
            growSpecs(to: position + 1)
            specs[position].lrMult = rate
        }
        for (position, decay) in old.weightDecay.enumerated() {
            growSpecs(to: position + 1)
            specs[position].decayMult = decay
        }
        layer.param = specs
        layer.lossWeight = old.lossWeight

        // Every layer-specific parameter message V1 knew, copied only when set so that
        // absent messages stay absent.
        if old.hasAccuracyParam { layer.accuracyParam = old.accuracyParam }
        if old.hasArgmaxParam { layer.argmaxParam = old.argmaxParam }
        if old.hasConcatParam { layer.concatParam = old.concatParam }
        if old.hasContrastiveLossParam { layer.contrastiveLossParam = old.contrastiveLossParam }
        if old.hasConvolutionParam { layer.convolutionParam = old.convolutionParam }
        if old.hasDataParam { layer.dataParam = old.dataParam }
        if old.hasDropoutParam { layer.dropoutParam = old.dropoutParam }
        if old.hasDummyDataParam { layer.dummyDataParam = old.dummyDataParam }
        if old.hasEltwiseParam { layer.eltwiseParam = old.eltwiseParam }
        if old.hasExpParam { layer.expParam = old.expParam }
        if old.hasHdf5DataParam { layer.hdf5DataParam = old.hdf5DataParam }
        if old.hasHdf5OutputParam { layer.hdf5OutputParam = old.hdf5OutputParam }
        if old.hasHingeLossParam { layer.hingeLossParam = old.hingeLossParam }
        if old.hasImageDataParam { layer.imageDataParam = old.imageDataParam }
        if old.hasInfogainLossParam { layer.infogainLossParam = old.infogainLossParam }
        if old.hasInnerProductParam { layer.innerProductParam = old.innerProductParam }
        if old.hasLrnParam { layer.lrnParam = old.lrnParam }
        if old.hasMemoryDataParam { layer.memoryDataParam = old.memoryDataParam }
        if old.hasMvnParam { layer.mvnParam = old.mvnParam }
        if old.hasPoolingParam { layer.poolingParam = old.poolingParam }
        if old.hasPowerParam { layer.powerParam = old.powerParam }
        if old.hasReluParam { layer.reluParam = old.reluParam }
        if old.hasSigmoidParam { layer.sigmoidParam = old.sigmoidParam }
        if old.hasSoftmaxParam { layer.softmaxParam = old.softmaxParam }
        if old.hasSliceParam { layer.sliceParam = old.sliceParam }
        if old.hasTanhParam { layer.tanhParam = old.tanhParam }
        if old.hasThresholdParam { layer.thresholdParam = old.thresholdParam }
        if old.hasWindowDataParam { layer.windowDataParam = old.windowDataParam }
        if old.hasTransformParam { layer.transformParam = old.transformParam }
        if old.hasLossParam { layer.lossParam = old.lossParam }
        return layer
    }

    /// The current type string for a V1 layer type (Caffe's `UpgradeV1LayerType`); `NONE` gives "".
    public static func v2TypeName(of type: Caffe_V1LayerParameter.LayerType) -> String {
        switch type {
        case .none: return ""
        case .absval: return "AbsVal"
        case .accuracy: return "Accuracy"
        case .argmax: return "ArgMax"
        case .bnll: return "BNLL"
        case .concat: return "Concat"
        case .contrastiveLoss: return "ContrastiveLoss"
        case .convolution: return "Convolution"
        case .deconvolution: return "Deconvolution"
        case .data: return "Data"
        case .dropout: return "Dropout"
        case .dummyData: return "DummyData"
        case .euclideanLoss: return "EuclideanLoss"
        case .eltwise: return "Eltwise"
        case .exp: return "Exp"
        case .flatten: return "Flatten"
        case .hdf5Data: return "HDF5Data"
        case .hdf5Output: return "HDF5Output"
        case .hingeLoss: return "HingeLoss"
        case .im2Col: return "Im2col"
        case .imageData: return "ImageData"
        case .infogainLoss: return "InfogainLoss"
        case .innerProduct: return "InnerProduct"
        case .lrn: return "LRN"
        case .memoryData: return "MemoryData"
        case .multinomialLogisticLoss: return "MultinomialLogisticLoss"
        case .mvn: return "MVN"
        case .pooling: return "Pooling"
        case .power: return "Power"
        case .relu: return "ReLU"
        case .sigmoid: return "Sigmoid"
        case .sigmoidCrossEntropyLoss: return "SigmoidCrossEntropyLoss"
        case .silence: return "Silence"
        case .softmax: return "Softmax"
        case .softmaxLoss: return "SoftmaxWithLoss"
        case .split: return "Split"
        case .slice: return "Slice"
        case .tanh: return "TanH"
        case .windowData: return "WindowData"
        case .threshold: return "Threshold"
        }
    }

    /// The value of the last varint-encoded occurrence of field `number` among a message's unknown
    /// fields. A binary file's enum value that the schema does not know (say, a fork's V1 layer type)
    /// lands there instead of in the enum field.
    static func lastVarint(ofField number: UInt64, in unknown: UnknownStorage) -> UInt64? {
        let bytes = [UInt8](unknown.data)
        var position = 0
        func readVarint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while position < bytes.count, shift < 64 {
                let byte = bytes[position]
                position += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        var found: UInt64?
        while position < bytes.count {
            guard let key = readVarint() else { break }
            switch key & 7 {
            case 0:
                guard let value = readVarint() else { return found }
                if key >> 3 == number { found = value }
            case 1: position += 8
            case 2:
                guard let length = readVarint(), length <= UInt64(bytes.count - position) else { return found }
                position += Int(length)
            case 5: position += 4
            default: return found  // groups never occur in Caffe files
            }
        }
        return found
    }
}
