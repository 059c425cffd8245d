import CaffeFormat
import Foundation
import Graph
import NumPy
import SwiftProtobuf

/// Translates a Caffe net and its trained weights into an ONNX model that computes the same
/// function: the work behind `swiftjit export --onnx net.onnx`.
///
/// Contract:
/// - Graph inputs and outputs carry the Caffe blob names (`data`, `prob`); the batch axis of every
///   input is the symbol `N` (`R` for a ROIPooling's `rois`), unless a Reshape folds the batch into
///   another axis, in which case the model keeps Caffe's batch and says so in `ONNXModel.notes`.
/// - Every intermediate blob keeps its Caffe name too. A blob rewritten in place (`conv1` after
///   `relu1`) is named `conv1` in its final version — what Caffe's `net.blobs["conv1"]` holds —
///   and `conv1@conv1`, `conv1@bn1`… in earlier versions (`blob@layer that wrote it`).
/// - Parameters are initializers named by their Caffe keys (`conv1/0`, `conv1/1`).
/// - Layers are lowered one by one (`ONNXLowering`); each lowering reproduces Caffe's arithmetic
///   exactly or refuses. An unsupported layer is a `Diagnostic` naming the layer and its type.
///
///     let model = try ONNXExporter(opset: 13).export(try ExportSource(netPath: p, weightsPath: w))
///     try model.write(to: "net.onnx")
public struct ONNXExporter: Sendable {
    /// Opsets this exporter emits. Softmax's single-axis meaning (Caffe's) starts at 13.
    public static let supportedOpsets = 13...21
    public var opset: Int

    public init(opset: Int = 13) throws {
        guard Self.supportedOpsets.contains(opset) else {
            throw Diagnostic("ONNX opset \(opset) is not supported; choose \(Self.supportedOpsets.lowerBound) to \(Self.supportedOpsets.upperBound)",
                             hint: "before opset 13 ONNX's Softmax flattens the trailing axes, which is not what Caffe's Softmax computes")
        }
        self.opset = opset
    }

    /// The IR version that introduced `opset` (what onnx.checker and runtimes expect for it).
    public static func irVersion(forOpset opset: Int) -> Int {
        switch opset {
        case ...14: return 7
        case 15...18: return 8
        case 19...20: return 9
        default: return 10
        }
    }

    public func export(_ source: ExportSource) throws -> ONNXModel {
        var lowering = ONNXLowering(graph: source.graph, weights: source.weights, opset: opset, file: source.netPath)
        try lowering.lowerAll()
        guard source.graph.outputs.contains(where: { !ONNXLowering.isNetInput($0, in: source.graph) }) else {
            throw Diagnostic("the net computes no outputs (every top is consumed, silenced or an input), so there is nothing to export",
                             file: source.netPath, hint: "nothing was written")
        }
        var model = Onnx_ModelProto()
        model.irVersion = Int64(Self.irVersion(forOpset: opset))
        var set = Onnx_OperatorSetIdProto()
        set.domain = ""
        set.version = Int64(opset)
        model.opsetImport = [set]
        model.producerName = "swiftjit"
        model.producerVersion = "0.1"
        model.docString = "Exported by swiftjit from " + ([source.netPath] + (source.weightsPath.map { [$0] } ?? []))
            .map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: " and ")
        model.graph = lowering.finish()
        return ONNXModel(proto: model, notes: lowering.notes, batchIsDynamic: lowering.batchIsDynamic)
    }
}

/// An exported ONNX model and what the exporter decided on the user's behalf.
public struct ONNXModel: Sendable {
    public var proto: Onnx_ModelProto
    /// Facts a user should know (e.g. the batch had to stay fixed, and why).
    public var notes: [String]
    /// Whether the inputs' batch axis is the symbol `N` (false when a layer folds the batch).
    public var batchIsDynamic: Bool

    public func serializedData() throws -> Data {
        do { return try proto.serializedData() } catch { throw Diagnostic("cannot serialize the ONNX model: \(error)") }
    }

    /// Writes the model atomically.
    public func write(to path: String) throws {
        var files = StagedFiles()
        try stage(into: &files, path: path)
        try files.commit()
    }

    /// Queues the model, to be written with other files in one commit.
    public func stage(into files: inout StagedFiles, path: String) throws {
        files.add(try serializedData(), at: path)
    }

    /// `data N×3×224×224` for each graph input (or output), for reports.
    public func describe(_ values: [Onnx_ValueInfoProto]) -> String {
        values.map { info in
            let dims = info.type.tensorType.shape.dim.map { dim -> String in
                switch dim.value {
                case .dimValue(let v): return String(v)
                case .dimParam(let p): return p
                case nil: return "?"
                }
            }
            return "\(info.name) \(dims.joined(separator: "×"))"
        }.joined(separator: ", ")
    }
}

/// The state of one export: the ONNX graph so far and the ONNX name of every Caffe value.
struct ONNXLowering {
    let graph: Graph
    let weights: TrainedWeights
    let opset: Int
    let file: String
    var writer: ONNXGraphWriter
    /// ONNX tensor name per Caffe value id.
    var names: [ValueID: String] = [:]
    /// Nodes lowered together with an earlier one (a Scale folded into its BatchNorm).
    var folded: Set<NodeID> = []
    var batchIsDynamic = true
    var notes: [String] = []

    init(graph: Graph, weights: TrainedWeights, opset: Int, file: String) {
        self.graph = graph
        self.weights = weights
        self.opset = opset
        self.file = file
        writer = ONNXGraphWriter(name: graph.name.isEmpty ? "net" : graph.name)
        names = Self.valueNames(graph)
        for name in names.values { _ = writer.unique(name) }
    }

    /// Caffe blob names for ONNX tensors: the final version of a blob (or a net input) gets the
    /// plain name, earlier in-place versions `blob@layer`.
    static func valueNames(_ graph: Graph) -> [ValueID: String] {
        var versions: [String: [ValueID]] = [:]
        for value in graph.values { versions[value.name, default: []].append(value.id) }
        var names: [ValueID: String] = [:]
        for (blob, ids) in versions {
            let keepsFirst = ids.count > 1 && isNetInput(ids[0], in: graph)
            let plain = keepsFirst ? ids[0] : ids[ids.count - 1]
            for id in ids {
                let producer = graph.values[id].producer.map { graph.nodes[$0].name } ?? "input"
                names[id] = id == plain ? blob : "\(blob)@\(producer)"
            }
        }
        return names
    }

    static func isNetInput(_ id: ValueID, in graph: Graph) -> Bool {
        guard let producer = graph.values[id].producer else { return true }
        return graph.nodes[producer].kind.isDataSource
    }

    mutating func lowerAll() throws {
        for node in graph.nodes where !folded.contains(node.id) {
            do {
                try lower(node)
            } catch var diagnostic as Diagnostic {
                if diagnostic.layer == nil { diagnostic.layer = node.name }
                if diagnostic.location == nil, diagnostic.file == nil {
                    diagnostic.location = node.location
                    diagnostic.file = node.location?.file ?? file
                }
                throw diagnostic
            }
        }
    }

    /// The finished graph: inputs with their symbolic batch, outputs under their Caffe names.
    mutating func finish() -> Onnx_GraphProto {
        var inputs = graph.externalInputs
        for node in graph.nodes where node.kind.isDataSource { inputs += node.outputs }
        let symbols = batchSymbols(inputs: inputs)
        for id in inputs {
            writer.graph.input.append(ONNXGraphWriter.valueInfo(names[id]!, dims: declaredDims(id, symbols), symbols: [0: symbols[id] ?? "N"]))
        }
        for id in graph.outputs where !Self.isNetInput(id, in: graph) {
            writer.graph.output.append(ONNXGraphWriter.valueInfo(names[id]!, dims: declaredDims(id, symbols), symbols: symbols[id].map { [0: $0] } ?? [:]))
        }
        return writer.graph
    }

    /// Static dims, with axis 0 left to a symbol when the batch is dynamic.
    private func declaredDims(_ id: ValueID, _ symbols: [ValueID: String]) -> [Int?] {
        var dims: [Int?] = graph.values[id].shape.dims
        if batchIsDynamic, !dims.isEmpty { dims[0] = nil }
        return dims
    }

    /// Which input symbol each value's axis 0 follows: `N` for images, `R` for a ROIPooling's rois
    /// and everything pooled from them; a value whose axis 0 changed size follows nothing.
    private func batchSymbols(inputs: [ValueID]) -> [ValueID: String] {
        let roiInputs = Set(graph.nodes.filter { $0.kind == .roiPooling && $0.inputs.count > 1 }.map { $0.inputs[1] })
        var symbols: [ValueID: String] = [:]
        for id in inputs { symbols[id] = roiInputs.contains(id) ? "R" : "N" }
        for node in graph.nodes where !node.kind.isDataSource {
            let leader = node.kind == .roiPooling && node.inputs.count > 1 ? node.inputs[1] : node.inputs.first
            guard let leader, let symbol = symbols[leader] else { continue }
            for output in node.outputs where graph.values[output].shape.dims.first == graph.values[leader].shape.dims.first {
                symbols[output] = symbol
            }
        }
        return symbols
    }

    // MARK: Helpers for the lowerings

    func input(_ node: Node, _ index: Int = 0) -> String { names[node.inputs[index]]! }
    func output(_ node: Node, _ index: Int = 0) -> String { names[node.outputs[index]]! }
    func inputShape(_ node: Node, _ index: Int = 0) -> [Int] { graph.values[node.inputs[index]].shape.dims }
    func outputShape(_ node: Node, _ index: Int = 0) -> [Int] { graph.values[node.outputs[index]].shape.dims }

    /// Registers Caffe's parameter blob `index` of `node` as an initializer named `layer/index`.
    mutating func parameter(_ node: Node, _ index: Int, reshapedTo shape: [Int]? = nil) throws -> String {
        var array = try weights.blob(of: node, index: index)
        if let shape { array = NDArray(shape: shape, data: array.data) }
        return writer.initializer("\(node.name)/\(index)", array)
    }

    /// The refusal every unsupported layer or setting gets: names the layer (added by `lowerAll`) and type.
    func unsupported(_ node: Node, _ reason: String? = nil, hint: String? = nil) -> Diagnostic {
        let type = node.layer.type
        var message = "ONNX export does not support layer type '\(type)'"
        if let reason { message = "cannot export this \(type) layer to ONNX: \(reason)" }
        let defaultHint = node.kind.isLoss || node.kind == .accuracy
            ? "export a deploy prototxt (without losses and accuracy); nothing was written"
            : "swiftjit has no ONNX lowering that reproduces Caffe's \(type); nothing was written"
        return Diagnostic(message, layer: node.name, hint: hint ?? defaultHint)
    }

    /// Marks the batch as fixed, once, with the reason.
    mutating func fixBatch(_ node: Node, because reason: String) {
        if batchIsDynamic {
            notes.append("the batch axis stays \(graph.values[graph.externalInputs.first ?? node.inputs[0]].shape.dims.first.map(String.init) ?? "fixed"): layer '\(node.name)' (\(node.layer.type)) \(reason)")
        }
        batchIsDynamic = false
    }

    /// A Reshape to `target` (the Caffe-inferred shape of `node`'s output `index`), keeping the batch
    /// symbolic when the reshape works item by item (axis 0 kept, per-item counts equal).
    mutating func reshape(_ node: Node, _ source: String, from input: [Int], to target: [Int], output: String? = nil) -> String {
        var shape = target
        if let first = input.first, target.first == first, input.count >= 1, target.count >= 1,
           input.dropFirst().reduce(1, *) == target.dropFirst().reduce(1, *) {
            shape[0] = 0   // ONNX Reshape: 0 copies the input's extent (the dynamic batch).
        } else {
            fixBatch(node, because: "reshapes across the batch axis (\(input) → \(target))")
        }
        let constant = writer.int64s("\(node.name)/shape", shape)
        return writer.node("Reshape", name: output ?? "\(node.name)/reshape", inputs: [source, constant], outputs: output.map { [$0] })
    }

    mutating func lower(_ node: Node) throws {
        switch node.kind {
        case .input, .silence: return
        case .convolution, .deconvolution: try lowerConvolution(node)
        case .pooling: try lowerPooling(node)
        case .innerProduct: try lowerInnerProduct(node)
        case .lrn: try lowerLRN(node)
        case .roiPooling: try lowerROIPooling(node)
        case .batchNorm: try lowerBatchNorm(node)
        case .scale, .bias: try lowerScaleOrBias(node)
        case .relu, .sigmoid, .tanh, .elu, .absVal, .bnll, .prelu, .power, .exp, .log, .clip, .swish, .dropout:
            try lowerActivation(node)
        case .eltwise: try lowerEltwise(node)
        case .softmax, .concat, .reshape, .flatten, .split, .slice:
            try lowerStructure(node)
        case .mvn: try lowerMVN(node)
        case .reduction: try lowerReduction(node)
        case .threshold: try lowerThreshold(node)
        case .tile: try lowerTile(node)
        case .crop: try lowerCrop(node)
        case .proposal:
            throw unsupported(node, "ONNX has no operator for Faster R-CNN's proposals (anchors, box decoding, NMS, a data-dependent box count)",
                              hint: "export the net up to the RPN outputs and run the proposals outside ONNX; nothing was written")
        case .region:
            throw unsupported(node, "ONNX has no operator for YOLOv2's region decoding with its per-class NMS",
                              hint: "export the net up to the Region's bottom and decode the boxes outside ONNX; nothing was written")
        case .psroiPooling:
            throw unsupported(node, "ONNX has no position-sensitive ROI pooling (MaxRoiPool/RoiAlign pool every channel alike)",
                              hint: "export the net up to the PSROIPooling's bottoms; nothing was written")
        case .permute, .normalize, .priorBox, .detectionOutput, .multiBoxLoss, .reorg: try lowerDetection(node)
        case .bn: try lowerBN(node)
        case .spatialDropout: try lowerSpatialDropout(node)
        case .transpose: try lowerTranspose(node)
        case .reverse: try lowerReverse(node)
        case .upsample: try lowerUpsample(node)
        case .ctpnLSTM: try lowerCTPNLSTM(node)
        case .lstm, .rnn:
            throw unsupported(node, "its cont bottom is data that can restart the sequence at any step and stream; ONNX \(node.kind == .lstm ? "LSTM" : "RNN") runs each sequence from one initial state with no per-step reset",
                              hint: "CTPN's Lstm (no cont bottom) exports as ONNX LSTM; for this layer, export the net up to its bottoms; nothing was written")
        default:
            throw unsupported(node)
        }
    }
}
