import Foundation
@_exported import Codegen
@_exported import Passes
import Runtime

/// A Caffe net ready to run — the library's front door, in the spirit of pycaffe's `caffe.Net`.
///
/// A `Net` reads a prototxt (any dialect) and optionally a caffemodel (otherwise the prototxt's
/// fillers from `seed` fill the parameters), builds the graph for a phase, and compiles it through
/// the JIT the first time it runs for a given set of input shapes. `forward` is safe to call from
/// many threads at once: each concurrent call runs in its own execution context (its own arena),
/// and contexts for the same shapes are reused. Feeding new input shapes compiles again; kernels
/// whose shapes did not change come from the cache. Compiled kernels stay in this process unless
/// the compiler's cache has a disk cache, as the command line's does:
/// `Net(prototxt:…, compiler: NetCompiler(cache: KernelCache(disk: KernelDiskCache.standard())))`.
///
///     let net = try Net(prototxt: "deploy.prototxt", weights: "bvlc.caffemodel")
///     let prob = try net.forward(["data": image])["prob"]!
///     let conv1Weights = net.params["conv1"]![0]
public final class Net: @unchecked Sendable {
    public let definition: NetDefinition
    public let phase: Caffe_Phase
    /// Parameter blobs by layer name, in Caffe's order (`params["conv1"][0]` weights, `[1]` bias).
    public let params: [String: [NDArray]]
    /// The graph for the prototxt's own input shapes.
    public let graph: Graph
    public let compiler: NetCompiler
    /// Whether forward passes that return only the outputs run the inference passes (BatchNorm
    /// folding, identity removal). Blob dumps (`.all`, `.named`) always run the net as written.
    public var optimizes = true

    private struct ContextKey: Hashable {
        var shapes: [String: [Int]]
        var blobs: String
    }
    private let lock = NSLock()
    private var idle: [ContextKey: [CompiledNet]] = [:]
    private var graphs: [[String: [Int]]: Graph] = [:]

    /// Loads `prototxt` and `weights` (a .caffemodel; without one, parameters come from the fillers
    /// with `seed`, BatchNorm statistics set to mean 0 / variance 1 so outputs stay finite, and
    /// `unfilledWeights` — when given — for convolution/InnerProduct weights the prototxt gives no
    /// filler, which Caffe would set to 0). `inputShapes` overrides the prototxt's input shapes.
    public init(prototxt: String, weights: String? = nil, phase: Caffe_Phase = .test,
                inputShapes: [String: [Int]] = [:], seed: UInt64 = 1, unfilledWeights: Filler? = nil, compiler: NetCompiler? = nil) throws {
        definition = try CaffeFiles.loadNet(path: prototxt)
        self.phase = phase
        graph = try GraphBuilder(phase: phase, inputShapes: inputShapes.mapValues(TensorShape.init), insertsSplits: false).build(definition)
        if let weights {
            let graph = self.graph
            params = try TrainedLayers.copy(from: weights, into: graph) {
                try ParameterInitializer.initialize(graph, seed: seed, batchNorm: .unit, unfilledWeights: unfilledWeights)
            }
        } else {
            params = try ParameterInitializer.initialize(graph, seed: seed, batchNorm: .unit, unfilledWeights: unfilledWeights)
        }
        self.compiler = try compiler ?? NetCompiler()
        graphs[inputShapes.isEmpty ? [:] : inputShapes] = graph
    }

    /// The net's inputs (Input layers' tops) with the prototxt's shapes.
    public var inputs: [(name: String, shape: [Int])] {
        graph.nodes.filter { $0.kind == .input }.flatMap(\.outputs).map { (graph.values[$0].name, graph.values[$0].shape.dims) }
    }

    /// The blobs no layer reads (`prob`), in net order.
    public var outputs: [String] { graph.outputs.map { graph.values[$0].name } }

    /// Runs the net forward on `inputs` (every net input, by name) and returns the selected blobs.
    public func forward(_ inputs: [String: NDArray], blobs: BlobSelection = .outputs) throws -> [String: NDArray] {
        let shapes = inputs.mapValues(\.shape)
        for (name, _) in self.inputs where inputs[name] == nil {
            throw Diagnostic("input '\(name)' is missing", hint: "feed every net input: " + self.inputs.map(\.name).joined(separator: ", "))
        }
        for name in inputs.keys where !self.inputs.contains(where: { $0.name == name }) {
            throw Diagnostic("'\(name)' is not an input of this net" + Diagnostic.didYouMean(name, among: self.inputs.map(\.name)),
                             hint: "net inputs: " + self.inputs.map(\.name).joined(separator: ", "))
        }
        let key = ContextKey(shapes: shapes, blobs: String(describing: blobs))
        let context = try checkOut(key, shapes: shapes, blobs: blobs)
        defer { checkIn(context, key) }
        return try context.run(inputs: inputs, blobs: blobNames(blobs, in: context))
    }

    /// A compiled context for these shapes, ready to run (compiled now if none is idle).
    public func compiled(for shapes: [String: [Int]], blobs: BlobSelection = .outputs) throws -> CompiledNet {
        try checkOut(ContextKey(shapes: shapes, blobs: String(describing: blobs)), shapes: shapes, blobs: blobs)
    }

    private func blobNames(_ selection: BlobSelection, in context: CompiledNet) -> [String]? {
        if case .named(let names) = selection { return names }
        return nil
    }

    private func checkOut(_ key: ContextKey, shapes: [String: [Int]], blobs: BlobSelection) throws -> CompiledNet {
        lock.lock()
        if var contexts = idle[key], let context = contexts.popLast() {
            idle[key] = contexts
            lock.unlock()
            return context
        }
        let known = graphs[shapes] ?? (inputs.allSatisfy { shapes[$0.name] == $0.shape } ? graph : nil)
        lock.unlock()
        let graph = try known ?? GraphBuilder(phase: phase, inputShapes: shapes.mapValues(TensorShape.init), insertsSplits: false).build(definition)
        if case .named(let names) = blobs, let missing = names.first(where: { graph.value(named: $0) == nil }) {
            throw Diagnostic("the net has no blob '\(missing)'" + Diagnostic.didYouMean(missing, among: Array(Set(graph.values.map(\.name)))))
        }
        let context: CompiledNet
        if case .outputs = blobs, optimizes {
            // Only the outputs are wanted, so intermediate blobs may be fused away.
            let optimized = try InferencePasses.run(graph, parameters: params)
            context = try compiler.compile(graph: optimized.graph, parameters: optimized.parameters, keeping: .outputs)
        } else {
            context = try compiler.compile(graph: graph, parameters: params, keeping: blobs)
        }
        lock.lock()
        graphs[shapes] = graph
        lock.unlock()
        return context
    }

    private func checkIn(_ context: CompiledNet, _ key: ContextKey) {
        lock.lock()
        idle[key, default: []].append(context)
        lock.unlock()
    }
}
