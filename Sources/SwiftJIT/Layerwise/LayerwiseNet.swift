import Foundation
import Runtime

/// A net driven the way pycaffe drives `caffe.Net`: every blob keeps its own data and diff memory
/// (no arena reuse), readable and writable in place between calls; forward and backward run over
/// any range of layers; parameters are read, written, saved, loaded and shared in place; input
/// shapes can change (the net recompiles, keeping its parameters, and keeps every older layout
/// alive so pointers handed out earlier never dangle). Data-producing layers are part of the net:
/// values written into Input tops and constant DummyData tops stay, non-constant DummyData tops
/// are refilled every forward (as Caffe), and Data layers read their next LMDB batch each forward
/// (a solver's nets read the solver's own readers, so manual forwards advance the same cursor).
/// Layers are Caffe's, in net order, without the automatic Split layers (which run with the layer
/// whose top they split). One thread at a time.
///
///     let net = try LayerwiseNet(path: "train_val.prototxt", phase: .train)
///     net.blob("data")!.data!.update(repeating: 0, count: 10)
///     let loss = try net.forward(from: 1, to: 2)
///     try net.backward(from: 1, to: 2)
public final class LayerwiseNet: TrainableNet {
    /// One of Caffe's layers (not an automatic Split) and the graph nodes that implement it.
    public struct Layer: Sendable {
        public var name: String
        public var type: String
        public var bottoms: [String]
        public var tops: [String]
        public var parameterCount: Int
        /// The layer's own node, and the last node run with it (its tops' Split layers).
        public var node: Int, lastNode: Int
        /// `python_param` of a "Python" layer: module, class and param_str.
        public var python: (module: String, layer: String, parameter: String)?
    }

    /// Rebuilds the graph for new input shapes (what `reshape` compiles).
    public typealias GraphBuild = (_ inputShapes: [String: TensorShape]) throws -> Graph

    public private(set) var graph: Graph
    /// The compiled net of the current shapes.
    public private(set) var compiled: TrainingNet
    public let layers: [Layer]
    /// Blob names in Caffe's creation order (without automatic Split tops).
    public private(set) var blobNames: [String]
    /// Input layers' tops (pycaffe's `net.inputs`) and the net's outputs.
    public let inputs: [String], outputs: [String]
    /// Loss weight of each loss-weighted top.
    public let lossWeights: [String: Float]
    /// Where the layers came from, for errors.
    public let file: String?

    private let compiler: Compiler
    private let build: GraphBuild
    private let seed: UInt64
    private var inputShapes: [String: TensorShape]
    private var generator: SeededGenerator
    /// Earlier layouts, kept so that pointers into them stay valid until the net is freed.
    private var retired: [TrainingNet] = []
    /// Zeroed diff memory for blobs the compiled net gives no diff (tops nothing propagates to).
    private var spareDiffs: [String: AlignedBuffer] = [:]
    private var dataLayerNames: [String] = []
    /// Batches for the Data layers: the net's own, or (for a solver's nets) the solver's feeds.
    var dataFeeds: TrainingFeeds?
    private let hostLayers: HostLayers?

    /// Builds and compiles the net of `definition` for `phase`. Parameters come from the fillers
    /// (seeded by `seed`), then from `weights` (.caffemodel files, by layer name) when given.
    public convenience init(definition: NetDefinition, phase: Caffe_Phase = .test, level: Int32? = nil, stages: [String]? = nil,
                            inputShapes: [String: [Int]] = [:], weights: [String] = [], seed: UInt64 = 1,
                            compiler: Compiler, hostLayers: HostLayers? = nil) throws {
        let build: GraphBuild = { shapes in
            var builder = GraphBuilder(phase: phase, level: level, stages: stages, inputShapes: shapes, insertsSplits: true)
            hostLayers?.install(in: &builder)
            return try builder.build(definition)
        }
        var shapes = inputShapes.mapValues(TensorShape.init)
        var graph = try build(shapes)
        let hasData = graph.nodes.contains { $0.kind == .data }
        if hasData {
            // Caffe's DataLayerSetUp reads the first record for the tops' shapes (relative LMDB
            // paths from the current directory, as Caffe).
            let read = try TrainingFeeds.dataShapes(definition, phase: phase, level: level ?? definition.net.state.level,
                                                    stages: stages ?? definition.net.state.stage, baseDirectory: nil)
            shapes.merge(read) { given, _ in given }
            graph = try build(shapes)
        }
        var values = try ParameterInitializer.initialize(graph, seed: seed)
        for path in weights { values = try TrainedLayers.copy(from: path, into: graph) { values } }
        try self.init(graph: graph, parameters: values, inputShapes: shapes, seed: seed, compiler: compiler, file: definition.file,
                      hostLayers: hostLayers, build: build)
        if hasData { dataFeeds = try TrainingFeeds(graph: graph, seed: seed, baseDirectory: nil, dataInPlace: true) }
    }

    /// Compiles an already built graph (with Split layers) and its parameter values; `sharing`
    /// makes matching parameters the same memory as another net's (Caffe's ShareTrainedLayersWith).
    public init(graph: Graph, parameters: [String: [NDArray]], inputShapes: [String: TensorShape] = [:], seed: UInt64,
                compiler: Compiler, sharing other: LayerwiseNet? = nil, file: String? = nil, hostLayers: HostLayers? = nil,
                build: @escaping GraphBuild) throws {
        self.hostLayers = hostLayers
        self.graph = graph
        self.compiler = compiler
        self.build = build
        self.seed = seed
        self.file = file
        self.inputShapes = inputShapes
        generator = SeededGenerator(seed: seed, stream: "dummy-data")
        compiled = try compiler.compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: true, seed: seed,
                                        sharingParametersWith: other?.compiled, hostLayer: hostLayers?.hostFunction)
        layers = LayerwiseNet.layers(of: graph)
        blobNames = LayerwiseNet.blobNames(of: graph)
        inputs = graph.nodes.filter { $0.kind == .input }.flatMap { $0.outputs.map { graph.values[$0].name } }
        outputs = graph.outputs.map { graph.values[$0].name }
        var weights: [String: Float] = [:]
        for node in graph.nodes {
            for (k, output) in node.outputs.enumerated() where k < node.lossWeights.count && node.lossWeights[k] != 0 {
                weights[graph.values[output].name] = node.lossWeights[k]
            }
        }
        lossWeights = weights
        dataLayerNames = graph.nodes.filter { $0.kind == .data }.map(\.name)
        startLayout(keeping: nil)
    }

    /// Zeroes the new layout's blobs and diffs (Caffe's fresh blobs), copies the values of
    /// `previous`'s blobs whose size did not change, and writes constant DummyData values.
    private func startLayout(keeping previous: TrainingNet?) {
        for name in blobNames {
            guard let memory = compiled.blobMemory(name) else { continue }
            let count = memory.shape.reduce(1, *)
            memory.data?.update(repeating: 0, count: count)
            memory.diff?.update(repeating: 0, count: count)
            if let old = previous?.blobMemory(name), old.shape.reduce(1, *) == count, let from = old.data, let to = memory.data {
                to.update(from: from, count: count)
            }
        }
        for feed in compiled.feedTops {
            guard let constant = feed.constantValues, let data = compiled.blobMemory(feed.name)?.data else { continue }
            data.update(from: constant, count: min(constant.count, feed.shape.reduce(1, *)))
        }
        compiled.resetOutputDiffs()
        retiredSpares += spareDiffs.values
        spareDiffs = [:]
    }

    private static func layers(of graph: Graph) -> [Layer] {
        var result: [Layer] = []
        for node in graph.nodes {
            if node.isSynthetic, !result.isEmpty {
                result[result.count - 1].lastNode = node.id
                continue
            }
            let python = node.layer.type == "Python"
                ? (node.layer.pythonParam.module, node.layer.pythonParam.layer, node.layer.pythonParam.paramStr) : nil
            result.append(Layer(name: node.name, type: node.layer.type, bottoms: node.layer.bottom, tops: node.layer.top,
                                parameterCount: node.parameters.count, node: node.id, lastNode: node.id, python: python))
        }
        return result
    }

    private static func blobNames(of graph: Graph) -> [String] {
        var seen = Set<String>(), names: [String] = []
        for node in graph.nodes where !node.isSynthetic {
            for output in node.outputs where seen.insert(graph.values[output].name).inserted { names.append(graph.values[output].name) }
        }
        return names
    }

    // MARK: Blobs and parameters

    /// A blob's shape and its data and diff in place; nil for a name the net lacks. Valid until
    /// the net is freed (after a reshape, they are the old layout's: ask again).
    public func blob(_ name: String) -> TrainingNet.BlobMemory? {
        guard var memory = compiled.blobMemory(name) else { return nil }
        if memory.diff == nil {
            if spareDiffs[name] == nil { spareDiffs[name] = try? AlignedBuffer(count: max(1, memory.shape.reduce(1, *))) }
            memory.diff = spareDiffs[name]?.pointer
        }
        return memory
    }
    private var retiredSpares: [AlignedBuffer] = []

    /// Layer `layer`'s parameter blob `index` (0: weights, 1: bias, ...) in place.
    public func parameter(layer: Int, index: Int) -> TrainingNet.BlobMemory? {
        guard layers.indices.contains(layer) else { return nil }
        return compiled.parameterMemory(node: layers[layer].node, index: index)
    }

    /// The index of the layer named `name`.
    public func layerIndex(_ name: String) -> Int? { layers.firstIndex { $0.name == name } }

    /// Zeroes every parameter diff (Caffe's ClearParamDiffs).
    public func zeroParameterDiffs() { compiled.zeroParameterDiffs() }

    public var learnableParameters: [LearnableParameter] { compiled.learnableParameters }
    public func parameterArrays() -> [String: [NDArray]] { compiled.parameterArrays() }
    public func setParameters(_ values: [String: [NDArray]]) throws { try compiled.setParameters(values) }
    public func firstNonFinite() -> (layer: String, blob: String)? { compiled.firstNonFinite() }

    /// Writes the parameters as a .caffemodel Caffe reads (`Net::ToProto` + `WriteProtoToBinaryFile`).
    public func save(to path: String) throws {
        try CaffeFiles.write(Snapshot.netParameter(graph: graph, parameters: parameterArrays()), to: path)
    }

    /// Copies parameters from a .caffemodel by layer name (Caffe's CopyTrainedLayersFrom).
    public func copyParameters(from path: String) throws {
        try setParameters(try TrainedLayers.copy(from: path, into: graph) { [:] })
    }

    /// Makes this net's parameters the same memory as `other`'s for every layer with the same name
    /// and parameter shapes (Caffe's ShareTrainedLayersWith: data, not diffs). Recompiles.
    public func share(with other: LayerwiseNet) throws {
        try recompile(graph: graph, sharing: other.compiled)
    }

    // MARK: Shapes

    /// Sets an input blob's shape for the next `reshape` (pycaffe's `blob.reshape` on an input).
    public func setInputShape(_ name: String, _ shape: [Int]) throws {
        guard compiled.feedTops.contains(where: { $0.name == name }) else {
            throw Diagnostic("'\(name)' is not an input blob of this net", file: file,
                             hint: "its input blobs are " + compiled.feedTops.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        inputShapes[name] = TensorShape(shape)
    }

    /// Propagates the input shapes through the net and recompiles for them, keeping parameters
    /// (the same memory) and the values of blobs whose size did not change.
    public func reshape() throws {
        let wanted = try build(inputShapes)
        let current = Dictionary(compiled.feedTops.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        let next = Dictionary(wanted.nodes.filter(\.kind.isDataSource).flatMap { node in
            node.outputs.map { (wanted.values[$0].name, wanted.values[$0].shape.dims) }
        }, uniquingKeysWith: { a, _ in a })
        guard current != next else { return }
        try recompile(graph: wanted, sharing: compiled)
    }

    private func recompile(graph newGraph: Graph, sharing: TrainingNet) throws {
        let previous = compiled
        let next = try compiler.compileTraining(graph: newGraph, parameters: previous.parameterArrays(), keepingAllBlobs: true, seed: seed,
                                        sharingParametersWith: sharing, hostLayer: hostLayers?.hostFunction)
        retired.append(previous)
        graph = newGraph
        compiled = next
        blobNames = LayerwiseNet.blobNames(of: newGraph)
        startLayout(keeping: previous)
    }

    // MARK: Running

    /// Forward over layers `start...end` (nil: first / last). Non-constant DummyData tops in the
    /// range are refilled; a full forward also sets loss tops' diffs to their loss weight.
    /// Returns Σ loss weight × loss over the loss tops the range computes.
    @discardableResult
    public func forward(from start: Int? = nil, to end: Int? = nil) throws -> Float {
        let range = try layerRange(start, end)
        if let data = layers[range].first(where: { dataLayerNames.contains($0.name) }) {
            guard let dataFeeds else {
                throw Diagnostic("Data layer '\(data.name)' has no reader", file: file, layer: data.name,
                                 hint: "write its tops from Python (net.blobs[...].data) and run forward from the next layer")
            }
            for (name, array) in try dataFeeds.next() {
                guard let memory = compiled.blobMemory(name), let pointer = memory.data, memory.shape.reduce(1, *) == array.count else {
                    throw Diagnostic("the LMDB batch for '\(name)' has shape \(array.shape), but the net holds \(compiled.blobMemory(name)?.shape ?? [])",
                                     file: file, layer: data.name, hint: "reshape the net back to the Data layer's batch shape")
                }
                pointer.update(from: array.data, count: array.count)
            }
        }
        try reshapeHostLayers(in: range)
        try refillDummyData(in: range)
        return try runForward(range)
    }

    /// Caffe reshapes every layer before its forward: when a Python layer now gives other top
    /// shapes than the net was compiled for, recompile (parameters and blob values kept).
    private func reshapeHostLayers(in range: ClosedRange<Int>) throws {
        guard let hostLayers else { return }
        for (index, layer) in zip(range, layers[range]) where graph.nodes[layer.node].kind == .python {
            let node = graph.nodes[layer.node]
            let shapes = try hostLayers.topShapes(node.layer, index: index, bottoms: node.inputs.map { graph.values[$0].shape })
            if shapes != node.outputs.map({ graph.values[$0].shape }) {
                try recompile(graph: try build(inputShapes), sharing: compiled)
                return
            }
        }
    }

    private func runForward(_ range: ClosedRange<Int>) throws -> Float {
        compiled.prepareForward()
        guard try compiled.executeForward(nodes: layers[range.lowerBound].node...layers[range.upperBound].lastNode) else {
            throw hostLayers?.takeFailure() ?? Diagnostic("the pass was stopped", file: file)
        }
        if range.count == layers.count { compiled.resetOutputDiffs() }
        var loss: Float = 0
        for layer in layers[range] {
            for top in layer.tops {
                guard let weight = lossWeights[top], let memory = compiled.blobMemory(top), let data = memory.data else { continue }
                for i in 0..<memory.shape.reduce(1, *) { loss += weight * data[i] }
            }
        }
        return loss
    }

    /// Backward over layers `end` down to `start` (nil: last / first), from the diffs the tops hold.
    public func backward(from start: Int? = nil, to end: Int? = nil) throws {
        let range = try layerRange(start, end)
        let last = range.upperBound == layers.count - 1 ? layers[range.upperBound].lastNode : layers[range.upperBound].node
        guard try compiled.executeBackward(nodes: layers[range.lowerBound].node...last) else {
            throw hostLayers?.takeFailure() ?? Diagnostic("the pass was stopped", file: file)
        }
    }

    private func layerRange(_ start: Int?, _ end: Int?) throws -> ClosedRange<Int> {
        guard !layers.isEmpty else { throw Diagnostic("the net has no layers", file: file) }
        let first = start ?? 0, last = end ?? layers.count - 1
        guard layers.indices.contains(first), layers.indices.contains(last), first <= last else {
            throw Diagnostic("layer range \(first)...\(last) is not within the net's \(layers.count) layers (0...\(layers.count - 1)) in order",
                             file: file, hint: "give start <= end, both layer indices (-1 for first / last)")
        }
        return first...last
    }

    private func refillDummyData(in range: ClosedRange<Int>) throws {
        for layer in layers[range] where graph.nodes[layer.node].kind == .dummyData {
            let fillers = graph.nodes[layer.node].layer.dummyDataParam.dataFiller
            for (index, top) in layer.tops.enumerated() {
                let parameter = fillers.isEmpty ? Filler.constant(0).parameter : fillers[fillers.count == 1 ? 0 : min(index, fillers.count - 1)]
                guard parameter.type != "constant", let memory = compiled.blobMemory(top), let data = memory.data else { continue }
                let values = try Filler(parameter).fill(shape: memory.shape, generator: &generator)
                data.update(from: values, count: values.count)
            }
        }
    }

    /// One solver pass (TrainableNet): writes `feeds` into their tops (tops not given keep what
    /// they hold; DummyData refills as in `forward`), runs a full forward and, when `backward`, a full backward.
    public func run(_ feeds: [String: NDArray], backward: Bool) throws -> (loss: Float, outputs: [String: NDArray]) {
        for (name, array) in feeds {
            guard let memory = compiled.blobMemory(name), let data = memory.data, memory.shape.reduce(1, *) == array.count else {
                throw Diagnostic("'\(name)' was fed \(array.shape), which is not one of the net's data tops with that size", file: file)
            }
            data.update(from: array.data, count: array.count)
        }
        try refillDummyData(in: 0...layers.count - 1)
        let loss = try runForward(0...layers.count - 1)
        if backward { try self.backward() }
        var result: [String: NDArray] = [:]
        for name in outputs {
            guard let memory = compiled.blobMemory(name), let data = memory.data else { continue }
            result[name] = NDArray(shape: memory.shape, data: Array(UnsafeBufferPointer(start: data, count: memory.shape.reduce(1, *))))
        }
        return (loss, result)
    }
}
