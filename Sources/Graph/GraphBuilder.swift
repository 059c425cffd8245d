import CaffeFormat

/// Builds the typed, shape-inferred `Graph` of a net for one phase, as Caffe's `Net::Init` would.
///
/// Steps, in Caffe's order: keep the layers of the requested net state (`NetFilter`); insert a
/// `Split` after every blob read by several layers (Caffe's `InsertSplits`, with Caffe's blob names
/// such as `data_input_0_split_1`); then, layer by layer, resolve bottoms to the latest version of
/// each blob, infer top and parameter shapes (`ShapeInference`), give in-place tops a new version,
/// and resolve loss weights. Every failure is a `Diagnostic` naming the layer, the blob and — for
/// text files — the line:column where the layer was written.
///
///     let definition = try CaffeFiles.loadNet(path: "deploy.prototxt")
///     let graph = try GraphBuilder(phase: .test).build(definition)
public struct GraphBuilder: Sendable {
    public var phase: Caffe_Phase
    public var level: Int32?
    public var stages: [String]?
    /// Shapes that replace those of data-source tops (`--input data=1,3,224,224`), by blob name.
    public var inputShapes: [String: TensorShape]
    /// Whether to insert Caffe's automatic Split layers (needed for backward; inference can skip them).
    public var insertsSplits: Bool
    /// When a layer is left out only because the net state lacks a stage (which a solver's
    /// `test_state`/`train_state` would supply), enable that stage and say so in `Graph.notes`.
    /// Caffe itself needs the stage spelled out; someone explaining a net alone wants it built.
    public var enablesMissingStages: Bool
    /// Top shapes of "Python" layers, from the code implementing them (given the layer, its index
    /// among the net's layers without automatic splits, and its bottom shapes). Without it, Python
    /// layers are rejected as unsupported.
    public var hostLayerShapes: (@Sendable (_ layer: Caffe_LayerParameter, _ index: Int, _ bottoms: [TensorShape]) throws -> [TensorShape])?

    public init(phase: Caffe_Phase = .test, level: Int32? = nil, stages: [String]? = nil,
                inputShapes: [String: TensorShape] = [:], insertsSplits: Bool = true, enablesMissingStages: Bool = false) {
        self.phase = phase
        self.level = level
        self.stages = stages
        self.inputShapes = inputShapes
        self.insertsSplits = insertsSplits
        self.enablesMissingStages = enablesMissingStages
        hostLayerShapes = nil
    }

    /// Raised inside `buildOnce` when only a stage is missing and `enablesMissingStages` is on.
    private struct StagesNeeded: Error {
        var stages: [String]
        var layer: String
    }

    public func build(_ definition: NetDefinition) throws -> Graph {
        var builder = self
        var notes: [String] = []
        while true {
            do {
                var graph = try builder.buildOnce(definition)
                graph.notes = notes
                return graph
            } catch let needed as StagesNeeded {
                let current = builder.stages ?? definition.net.state.stage
                builder.stages = current + needed.stages.filter { !current.contains($0) }
                notes.append("built with stage\(needed.stages.count == 1 ? "" : "s") \(needed.stages.map { "'\($0)'" }.joined(separator: ", ")), which layer '\(needed.layer)' needs in phase \(phase.caffeName) (a solver's test_state/train_state sets it; choose with --stage)")
            }
        }
    }

    private func buildOnce(_ definition: NetDefinition) throws -> Graph {
        let net = definition.net
        let filter = NetFilter(net: net, phase: phase, level: level, stages: stages)
        var layers: [(Caffe_LayerParameter, SourcePosition?)] = []
        var excluded: [Caffe_LayerParameter] = []
        for (index, layer) in net.layer.enumerated() {
            let location = index < definition.layerLocations.count ? definition.layerLocations[index] : nil
            if filter.includes(layer) { layers.append((layer, location)) } else { excluded.append(layer) }
        }
        try checkInputOverrides(layers.map(\.0))
        var inserted = Set<Int>()
        if insertsSplits { (layers, inserted) = SplitInsertion.insert(into: layers) }

        var graph = Graph(name: net.name, phase: phase)
        graph.forceBackward = net.forceBackward
        var latest: [String: ValueID] = [:]
        for (index, (var layer, location)) in layers.enumerated() {
            // Caffe's LossLayer::AutoTopBlobs: a loss layer written without a top still gets one.
            if layer.top.isEmpty, OpKind(caffeType: layer.type)?.isLoss == true { layer.top = ["\(layer.name) (automatic)"] }
            do {
                try addNode(layer, location: location, isSynthetic: inserted.contains(index), to: &graph, latest: &latest,
                            excluded: excluded, filter: filter)
            } catch let diagnostic as Diagnostic {
                var located = diagnostic.inLayer(layer.name)
                if located.location == nil { located.location = location }
                if located.file == nil { located.file = definition.file }
                throw located
            }
        }
        return graph
    }

    private func checkInputOverrides(_ layers: [Caffe_LayerParameter]) throws {
        let sources = Set(layers.filter { OpKind(caffeType: $0.type)?.isDataSource ?? false }.flatMap(\.top))
        for name in inputShapes.keys.sorted() where !sources.contains(name) {
            throw Diagnostic("--input names '\(name)', which is not a net input" + Diagnostic.didYouMean(name, among: Array(sources)),
                             hint: sources.isEmpty ? "this net has no Input or data layers" : "net inputs: " + sources.sorted().joined(separator: ", "))
        }
    }

    private func addNode(_ layer: Caffe_LayerParameter, location: SourcePosition?, isSynthetic: Bool, to graph: inout Graph,
                         latest: inout [String: ValueID], excluded: [Caffe_LayerParameter], filter: NetFilter) throws {
        // Python layers SwiftJIT implements natively (py-faster-rcnn's proposals, ENet's spatial
        // dropout) run without Python.
        var layer = layer
        if let native = try PythonLayerMapping.native(for: layer, phase: phase, pythonHost: hostLayerShapes != nil) { layer = native }
        guard let kind = OpKind(caffeType: layer.type), kind != .python || hostLayerShapes != nil else { throw unsupported(layer) }
        // Bottoms: the latest version of each named blob.
        var inputs: [ValueID] = []
        for bottom in layer.bottom {
            guard let id = latest[bottom] else { throw missingBottom(bottom, layer: layer, available: Array(latest.keys), excluded: excluded, filter: filter) }
            inputs.append(id)
        }
        let context = ShapeContext(layer: layer, kind: kind, inputs: inputs.map { graph.values[$0].shape },
                                   inputNames: layer.bottom, phase: phase, overrides: inputShapes)
        let signature: LayerSignature
        if kind == .python, let hostLayerShapes {
            let index = graph.nodes.filter { !$0.isSynthetic }.count
            signature = LayerSignature(outputs: try hostLayerShapes(layer, index, context.inputs))
        } else {
            signature = try ShapeInference.infer(context)
        }
        guard signature.outputs.count == layer.top.count || (kind == .accuracy && layer.top.count <= 2) else {
            throw Diagnostic("\(kind.rawValue) produces \(signature.outputs.count) top blob\(signature.outputs.count == 1 ? "" : "s"), but the layer lists \(layer.top.count)",
                             hint: "check the layer's top: lines")
        }
        for (index, shape) in signature.outputs.enumerated() where shape.isRankKnown {
            let top = index < layer.top.count ? layer.top[index] : "#\(index)"
            if let bad = shape.dims.first(where: { $0 < 0 && $0 != TensorShape.unknown || $0 > Int(Int32.max) }) {
                throw Diagnostic("top '\(top)' would have extent \(bad); extents must lie in 0...\(Int32.max)", hint: "check the shape values given for this layer")
            }
            if shape.overflows || (shape.count ?? 0) > Int(Int32.max) {
                throw Diagnostic("top '\(top)' \(shape) would hold more than \(Int32.max) values (Caffe's limit for one blob)",
                                 hint: "use a smaller batch or input size")
            }
        }
        let nodeID = graph.nodes.count
        var outputs: [ValueID] = []
        for (index, top) in layer.top.enumerated() {
            let inPlace = index < layer.bottom.count && layer.bottom[index] == top
            if !inPlace, let earlier = latest[top], graph.values[earlier].producer == nodeID {
                throw Diagnostic("the layer lists top '\(top)' twice", hint: "give each top: line its own blob name")
            }
            if !inPlace, latest[top] != nil {
                let producer = graph.values[latest[top]!].producer.map { graph.nodes[$0].name } ?? "the net input"
                throw Diagnostic("top blob '\(top)' is already produced by \(producer == "the net input" ? producer : "layer '\(producer)'")",
                                 hint: "give the top a new name; writing a blob in place is only allowed when top N equals bottom N")
            }
            let shape = index < signature.outputs.count ? signature.outputs[index] : .unknownRank
            let id = graph.addValue(name: top, shape: shape, producer: nodeID, inPlace: inPlace)
            latest[top] = id
            outputs.append(id)
        }
        for id in inputs { graph.values[id].consumers.append(nodeID) }

        var node = Node(id: nodeID, name: layer.name, kind: kind, layer: layer, inputs: inputs, outputs: outputs)
        node.location = location
        node.flops = signature.flops
        node.attributes = signature.attributes
        node.isSynthetic = isSynthetic
        node.parameters = try parameterInfos(signature, layer: layer, kind: kind)
        node.lossWeights = try lossWeights(layer, kind: kind)
        graph.nodes.append(node)
    }

    private func parameterInfos(_ signature: LayerSignature, layer: Caffe_LayerParameter, kind: OpKind) throws -> [ParameterInfo] {
        // Caffe: CHECK_LE(param_size, num_param_blobs) << "Too many params specified for layer".
        if layer.param.count > signature.parameters.count {
            throw Diagnostic("the layer has \(layer.param.count) param { } entries but only \(signature.parameters.count) parameter blob\(signature.parameters.count == 1 ? "" : "s")",
                             hint: "remove the extra param { } entries")
        }
        return signature.parameters.enumerated().map { index, parameter in
            var info = ParameterInfo(shape: parameter.shape, role: parameter.role)
            if kind == .batchNorm { info.lrMult = 0; info.decayMult = 0 }
            if index < layer.param.count {
                let spec = layer.param[index]
                if spec.hasLrMult { info.lrMult = spec.lrMult }
                if spec.hasDecayMult { info.decayMult = spec.decayMult }
                if spec.hasName, !spec.name.isEmpty { info.shareName = spec.name }
            }
            return info
        }
    }

    /// Caffe's `SetLossWeights`: loss layers default to weight 1 on their first top.
    private func lossWeights(_ layer: Caffe_LayerParameter, kind: OpKind) throws -> [Float] {
        let tops = layer.top.count
        if !layer.lossWeight.isEmpty {
            guard layer.lossWeight.count == tops else {
                throw Diagnostic("loss_weight is given \(layer.lossWeight.count) time\(layer.lossWeight.count == 1 ? "" : "s") for \(tops) top blobs; give it once per top, or not at all",
                                 hint: tops == 2 ? "e.g. loss_weight: 1 loss_weight: 0 to weight only the first top" : nil)
            }
            return layer.lossWeight
        }
        guard kind.isLoss else { return Array(repeating: 0, count: tops) }
        guard tops == 1 else {
            throw Diagnostic("a \(kind.rawValue) layer with \(tops) tops needs one loss_weight per top (Caffe gives only the first top a default weight)",
                             hint: "add loss_weight: 1 loss_weight: 0")
        }
        return [1]
    }

    private func unsupported(_ layer: Caffe_LayerParameter) -> Diagnostic {
        let supported = OpKind.allCases.filter { $0 != .python }.map(\.rawValue)
        if layer.type.isEmpty {
            return Diagnostic("the layer has no type", hint: "add type: \"Convolution\" (or another layer type)")
        }
        if let reason = OpKind.knownUnsupported[layer.type] {
            return Diagnostic("layer type '\(layer.type)' is not supported: \(reason)",
                              hint: "replace the layer by supported ones, or feed its tops as net inputs (Input layer) and run it outside SwiftJIT")
        }
        let close = Diagnostic.closest(to: layer.type, among: supported, limit: 3)
        let suggestion = close.isEmpty ? "" : " — did you mean " + close.map { "'\($0)'" }.joined(separator: " or ") + "?"
        return Diagnostic("unknown layer type '\(layer.type)'" + suggestion,
                          hint: "supported types: " + supported.sorted().joined(separator: ", "))
    }

    private func missingBottom(_ bottom: String, layer: Caffe_LayerParameter, available: [String],
                               excluded: [Caffe_LayerParameter], filter: NetFilter) -> Error {
        var hint = "a bottom must be the top of an earlier layer or a net input"
        let producers = excluded.filter { $0.top.contains(bottom) }
        if let (producer, stages) = producers.lazy.compactMap({ p in filter.stagesEnabling(p).map { (p, $0) } }).first {
            if enablesMissingStages { return StagesNeeded(stages: stages, layer: producer.name) }
            let list = stages.joined(separator: " --stage ")
            hint = "'\(bottom)' is made by layer '\(producer.name)' only when stage\(stages.count == 1 ? "" : "s") \(stages.map { "'\($0)'" }.joined(separator: ", ")) \(stages.count == 1 ? "is" : "are") set: pass --stage \(list) (a solver's test_state/train_state sets stages)"
        } else if let producer = producers.first, let reason = filter.exclusionReason(producer) {
            hint = "'\(bottom)' exists, but the \(reason); this net is being built for phase \(phase.caffeName)"
        } else if !available.isEmpty {
            let close = Diagnostic.closest(to: bottom, among: available, limit: 2)
            if !close.isEmpty { hint = "did you mean " + close.map { "'\($0)'" }.joined(separator: " or ") + "?" }
        }
        return Diagnostic("bottom '\(bottom)' is not produced by any earlier layer", hint: hint)
    }
}
