import SwiftProtobuf

/// Brings a `NetParameter` of any historical Caffe format up to today's format, the way Caffe's
/// `UpgradeNetAsNeeded` does when it reads a `.prototxt` or `.caffemodel`.
///
/// The steps run in Caffe's order, each only when the net needs it:
///
/// 1. **V0 → V1** — `layers { layer { type: "conv" … } bottom top }` (2014 and earlier) becomes
///    `layers { type: CONVOLUTION convolution_param { … } }`; V0 `padding` layers fold into the
///    `pad` of the convolution or pooling layer that reads them.
/// 2. **Data transformation** — `scale`, `mean_file`, `crop_size` and `mirror` written inside a V1
///    `data_param`, `image_data_param` or `window_data_param` move into `transform_param`.
/// 3. **V1 → V2** — `layers { type: ENUM }` becomes `layer { type: "Name" }`, with `blobs_lr`,
///    `weight_decay`, `param` and `blob_share_mode` turned into `param { … }` specs.
/// 4. **Input fields** — `input` with `input_dim` or `input_shape` becomes one `Input` layer named
///    `input`, placed first.
/// 5. **BatchNorm** — a `BatchNorm` layer that still lists three `param` specs (its old way of
///    freezing the statistics) gets `lr_mult: 0` and `decay_mult: 0` in each, as current Caffe does.
///
/// Blobs (trained weights in a `.caffemodel`) are carried over untouched, legacy
/// `num`/`channels`/`height`/`width` dimensions included.
///
/// Where Caffe logs an error and carries on with a half-upgraded net, or aborts the process, this
/// throws a `Diagnostic` naming the file and layer. The net is only modified when every step
/// succeeds: after a throw it is exactly as it was passed in.
public enum NetUpgrader {
    /// Upgrades `net` in place and returns one human-readable line per upgrade applied
    /// (empty when the net was already current).
    ///
    /// - Parameter file: the file the net came from, for diagnostics.
    @discardableResult
    public static func upgrade(_ net: inout Caffe_NetParameter, file: String? = nil) throws -> [String] {
        guard needsUpgrade(net) else { return [] }
        if !net.layer.isEmpty, !net.layers.isEmpty {
            throw Diagnostic(
                "the net has both 'layer' entries (current format) and \(net.layers.count) legacy 'layers' entr\(net.layers.count == 1 ? "y" : "ies"); "
                    + "Caffe refuses to upgrade such a mix", file: file,
                hint: "write every layer in one format: the current one is layer { type: \"Convolution\" … }, "
                    + "not layers { type: CONVOLUTION … } (Caffe's upgrade_net_proto_text converts a legacy file)")
        }
        var upgraded = net
        var notes: [String] = []
        if needsV0ToV1Upgrade(upgraded) {
            notes += try upgradeV0ToV1(&upgraded, file: file)
        }
        if needsDataUpgrade(upgraded) {
            notes += upgradeDataTransformation(&upgraded)
        }
        if needsV1ToV2Upgrade(upgraded) {
            notes += try upgradeV1ToV2(&upgraded, file: file)
        }
        if needsInputUpgrade(upgraded) {
            notes += try upgradeInput(&upgraded, file: file)
        }
        if needsBatchNormUpgrade(upgraded) {
            notes += upgradeBatchNorm(&upgraded)
        }
        net = upgraded
        return notes
    }

    /// Whether any upgrade step applies to `net` (Caffe's `NetNeedsUpgrade`).
    public static func needsUpgrade(_ net: Caffe_NetParameter) -> Bool {
        needsV0ToV1Upgrade(net) || needsV1ToV2Upgrade(net) || needsDataUpgrade(net)
            || needsInputUpgrade(net) || needsBatchNormUpgrade(net)
    }

    /// A name for layer `index` of a legacy `layers` list in diagnostics: its own name when it has one.
    static func label(_ name: String, index: Int) -> String {
        name.isEmpty ? "layers[\(index)] (unnamed)" : name
    }
}

// MARK: - Data transformation fields

extension NetUpgrader {
    /// Whether a V1 data layer still keeps `scale`/`mean_file`/`crop_size`/`mirror` in its own
    /// parameters rather than in `transform_param` (Caffe's `NetNeedsDataUpgrade`).
    public static func needsDataUpgrade(_ net: Caffe_NetParameter) -> Bool {
        net.layers.contains { layer in
            switch layer.type {
            case .data: return layer.dataParam.hasLegacyTransformFields
            case .imageData: return layer.imageDataParam.hasLegacyTransformFields
            case .windowData: return layer.windowDataParam.hasLegacyTransformFields
            default: return false
            }
        }
    }

    /// Moves the legacy transformation fields of V1 `DATA`, `IMAGE_DATA` and `WINDOW_DATA` layers
    /// into their `transform_param` (Caffe's `UpgradeNetDataTransformation`). Only the parameter
    /// message that matches the layer's type is looked at.
    static func upgradeDataTransformation(_ net: inout Caffe_NetParameter) -> [String] {
        var moved = 0
        for index in net.layers.indices {
            var layer = net.layers[index]
            var transform = layer.transformParam
            let changed: Bool
            switch layer.type {
            case .data: changed = layer.dataParam.moveLegacyTransformFields(into: &transform)
            case .imageData: changed = layer.imageDataParam.moveLegacyTransformFields(into: &transform)
            case .windowData: changed = layer.windowDataParam.moveLegacyTransformFields(into: &transform)
            default: changed = false
            }
            if changed {
                layer.transformParam = transform
                net.layers[index] = layer
                moved += 1
            }
        }
        guard moved > 0 else { return [] }
        return ["moved scale/mean_file/crop_size/mirror of \(moved) data layer\(moved == 1 ? "" : "s") into transform_param"]
    }
}

/// The data-layer parameter messages that once carried the transformation fields themselves.
protocol LegacyTransformFields {
    var scale: Float { get set }
    var hasScale: Bool { get }
    mutating func clearScale()
    var meanFile: String { get set }
    var hasMeanFile: Bool { get }
    mutating func clearMeanFile()
    var cropSize: UInt32 { get set }
    var hasCropSize: Bool { get }
    mutating func clearCropSize()
    var mirror: Bool { get set }
    var hasMirror: Bool { get }
    mutating func clearMirror()
}

extension Caffe_DataParameter: LegacyTransformFields {}
extension Caffe_ImageDataParameter: LegacyTransformFields {}
extension Caffe_WindowDataParameter: LegacyTransformFields {}

extension LegacyTransformFields {
    var hasLegacyTransformFields: Bool { hasScale || hasMeanFile || hasCropSize || hasMirror }

    /// Moves every set legacy field into `transform`, overriding what it held; returns whether any moved.
    /// (A parameter message that is not set reads as all-absent and leaves `transform` untouched.)
    mutating func moveLegacyTransformFields(into transform: inout Caffe_TransformationParameter) -> Bool {
        guard hasLegacyTransformFields else { return false }
        if hasScale { transform.scale = scale; clearScale() }
        if hasMeanFile { transform.meanFile = meanFile; clearMeanFile() }
        if hasCropSize { transform.cropSize = cropSize; clearCropSize() }
        if hasMirror { transform.mirror = mirror; clearMirror() }
        return true
    }
}

// MARK: - Input fields

extension NetUpgrader {
    /// Whether the net still declares its inputs with the net-level `input` field (Caffe's `NetNeedsInputUpgrade`).
    public static func needsInputUpgrade(_ net: Caffe_NetParameter) -> Bool {
        !net.input.isEmpty
    }

    /// Replaces `input` + `input_dim`/`input_shape` with one `Input` layer named `input`, inserted
    /// before every other layer (Caffe's `UpgradeNetInput`).
    ///
    /// When both `input_shape` and `input_dim` are given, `input_shape` wins, as in Caffe. Input
    /// names without any shape (old `.caffemodel`s record them that way) are simply dropped.
    static func upgradeInput(_ net: inout Caffe_NetParameter, file: String?) throws -> [String] {
        let names = net.input
        let quoted = names.map { "'\($0)'" }.joined(separator: ", ")
        let inputs = "\(names.count) input\(names.count == 1 ? "" : "s") (\(quoted))"
        var shapes: [Caffe_BlobShape] = []
        var notes: [String] = []
        if !net.inputShape.isEmpty {
            guard net.inputShape.count == names.count else {
                throw Diagnostic(
                    "the net declares \(inputs) but \(net.inputShape.count) input_shape entr\(net.inputShape.count == 1 ? "y" : "ies"); "
                        + "expected exactly one input_shape per input", file: file,
                    hint: "give each 'input:' its own 'input_shape { dim: … }', in the same order — or, better, "
                        + "replace them with a layer { type: \"Input\" input_param { shape { … } } }")
            }
            shapes = net.inputShape
            notes.append("converted input/input_shape to an Input layer 'input'"
                         + (net.inputDim.isEmpty ? "" : " (input_dim ignored: input_shape takes precedence, as in Caffe)"))
        } else if !net.inputDim.isEmpty {
            guard net.inputDim.count == 4 * names.count else {
                throw Diagnostic(
                    "the net declares \(inputs) but \(net.inputDim.count) input_dim value\(net.inputDim.count == 1 ? "" : "s"); "
                        + "expected \(4 * names.count): four (num, channels, height, width) per input", file: file,
                    hint: "write four input_dim lines after each 'input:' — e.g. input_dim: 10 input_dim: 3 input_dim: 227 "
                        + "input_dim: 227 — or use input_shape { dim: … } for other ranks")
            }
            shapes = names.indices.map { index in
                var shape = Caffe_BlobShape()
                shape.dim = net.inputDim[(4 * index)..<(4 * index + 4)].map { Int64($0) }
                return shape
            }
            notes.append("converted input/input_dim to an Input layer 'input'")
        } else {
            notes.append("dropped the shapeless net-level input field\(names.count == 1 ? "" : "s") \(quoted) (legacy .caffemodel)")
        }
        if !shapes.isEmpty {
            var layer = Caffe_LayerParameter()
            layer.name = "input"
            layer.type = "Input"
            layer.top = names
            layer.inputParam.shape = shapes
            net.layer.insert(layer, at: 0)
        }
        net.input = []
        net.inputShape = []
        net.inputDim = []
        return notes
    }
}

// MARK: - BatchNorm

extension NetUpgrader {
    /// Whether some `BatchNorm` layer lists exactly three `param` specs, the old way to keep its
    /// mean/variance/factor blobs out of the solver (Caffe's `NetNeedsBatchNormUpgrade`).
    public static func needsBatchNormUpgrade(_ net: Caffe_NetParameter) -> Bool {
        net.layer.contains { $0.type == "BatchNorm" && $0.param.count == 3 }
    }

    /// Sets `lr_mult` and `decay_mult` to 0 in every param spec of such layers, keeping their names
    /// (Caffe's `UpgradeNetBatchNorm`). The note counts only layers where something changed, so a
    /// file that already says `lr_mult: 0 decay_mult: 0` loads silently.
    static func upgradeBatchNorm(_ net: inout Caffe_NetParameter) -> [String] {
        var changed = 0
        for index in net.layer.indices where net.layer[index].type == "BatchNorm" && net.layer[index].param.count == 3 {
            var specs = net.layer[index].param
            let alreadyFrozen = specs.allSatisfy { $0.hasLrMult && $0.lrMult == 0 && $0.hasDecayMult && $0.decayMult == 0 }
            for spec in specs.indices {
                specs[spec].lrMult = 0
                specs[spec].decayMult = 0
            }
            net.layer[index].param = specs
            if !alreadyFrozen { changed += 1 }
        }
        guard changed > 0 else { return [] }
        return ["set lr_mult/decay_mult to 0 in the 3 param specs of \(changed) BatchNorm layer\(changed == 1 ? "" : "s") (old-style statistics freezing)"]
    }
}
