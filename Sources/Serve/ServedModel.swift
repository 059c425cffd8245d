import Foundation
import SwiftJIT

/// Where one model's files are: the deploy prototxt, the weights, the optional `config.pbtxt`.
public struct ModelSource: Sendable, Equatable {
    public var name: String
    public var version: String
    public var prototxt: String
    public var weights: String?
    public var configuration: String?

    public init(name: String, version: String = "1", prototxt: String, weights: String?, configuration: String? = nil) {
        self.name = name
        self.version = version
        self.prototxt = prototxt
        self.weights = weights
        self.configuration = configuration
    }
}

/// A loaded model version: the `Model` (weights and compiled constants held once), its
/// configuration, what it takes and gives, and its batcher.
///
/// Each of the batcher's instances (threads) runs batches on its own `Session` per batch size, so
/// a batch of 8 always runs on the same execution context, compiled once for 8 (kernels from the
/// cache, constants shared with every other size and instance).
///
/// Requests hold a lease on the version they were given (`acquire`/`release`); a version replaced or
/// unloaded is `retire`d and its batcher finishes only once the last lease is released, so a request
/// still reading its body when a reload swaps versions is served by the version it started with.
///
/// Shapes follow Triton: with `max_batch_size > 0` the metadata shows -1 for the batch dimension and
/// requests may send any batch up to the maximum; with 0, requests send the net's full input shape.
public final class ServedModel: @unchecked Sendable {
    /// One input or output in the protocol's terms.
    public struct TensorInfo: Sendable, Equatable {
        public var name: String
        /// The shape without the batch dimension when the model batches; the full shape otherwise.
        public var dims: [Int]
    }

    public let source: ModelSource
    public let configuration: ModelConfiguration
    public let inputs: [TensorInfo]
    public let outputs: [TensorInfo]
    public let batcher: DynamicBatcher
    public let metrics: ModelMetrics
    let model: Model
    private let sessions: InstanceSessions
    private let leaseLock = NSLock()
    private var leases = 0
    private var retired = false

    public var name: String { source.name }
    public var version: String { source.version }
    public var batches: Bool { configuration.maxBatchSize > 0 }

    /// Loads the model (weights once, shared by every execution context) and starts its batcher.
    /// `keepsParameters: false` drops the parameter arrays once compiled (weights held once, as
    /// constants) and reads the caffemodel again for a batch size not compiled yet: what a server
    /// that compiles its batch sizes up front (`--warmup`) wants.
    public init(source: ModelSource, compiler: Compiler, metrics: ServeMetricsRegistry, queueCapacity: Int,
                keepsParameters: Bool = true, warnings: (String) -> Void) throws {
        self.source = source
        var configuration = ModelConfiguration.standard
        if let path = source.configuration {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ServeError(.badRequest, "model '\(source.name)': cannot read \(path): \(error.localizedDescription)")
            }
            configuration = try ModelConfiguration.parse(text, file: path)
        }
        configuration.warnings.forEach(warnings)
        if let declared = configuration.name, declared != source.name {
            warnings("model '\(source.name)': config.pbtxt names it '\(declared)'; serving it as '\(source.name)' (its folder's name)")
        }
        // The prototxt's own input shapes, then the configuration's dims where it gives them.
        let definition = try CaffeFiles.loadNet(path: source.prototxt)
        let graph = try GraphBuilder(phase: .test, insertsSplits: false).build(definition)
        let probe = (inputs: graph.nodes.filter { $0.kind == .input }.flatMap(\.outputs).map { (name: graph.values[$0].name, shape: graph.values[$0].shape.dims) }, ())
        var shapes: [String: [Int]] = [:]
        for input in probe.inputs {
            guard let declared = configuration.inputs.first(where: { $0.name == input.name }), !declared.dims.isEmpty else { continue }
            if declared.dataType != "TYPE_FP32" {
                throw ServeError(.badRequest, "model '\(source.name)': input '\(input.name)' is \(declared.dataType) in config.pbtxt; these nets take TYPE_FP32")
            }
            shapes[input.name] = configuration.maxBatchSize > 0 ? [1] + declared.dims : declared.dims
        }
        if let unknown = configuration.inputs.first(where: { declared in !probe.inputs.contains { $0.name == declared.name } }) {
            throw ServeError(.badRequest, "model '\(source.name)': config.pbtxt declares input '\(unknown.name)' but the net's inputs are " + probe.inputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        if configuration.maxBatchSize > 0 { for input in probe.inputs where shapes[input.name] == nil { shapes[input.name] = [1] + input.shape.dropFirst() } }
        let model = try Model(prototxt: source.prototxt, weights: source.weights, inputShapes: shapes,
                              keepsParameters: keepsParameters, compiler: compiler)
        let batches = configuration.maxBatchSize > 0
        inputs = model.inputs.map { TensorInfo(name: $0.name, dims: batches ? Array($0.shape.dropFirst()) : $0.shape) }
        outputs = model.outputs.map { name in
            let dims = model.graph.value(named: name)?.shape.dims ?? []
            return TensorInfo(name: name, dims: batches ? Array(dims.dropFirst()) : dims)
        }
        for declared in configuration.outputs where !outputs.contains(where: { $0.name == declared.name }) {
            throw ServeError(.badRequest, "model '\(source.name)': config.pbtxt declares output '\(declared.name)' but the net's outputs are " + outputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        self.configuration = configuration
        self.model = model
        let sessions = InstanceSessions(model: model, instances: configuration.instanceCount)
        self.sessions = sessions
        let metrics = metrics.model(source.name, version: source.version)
        self.metrics = metrics
        let batching = configuration.dynamicBatching
        let policy = BatchPolicy(maxBatchSize: configuration.maxBatchSize, dynamic: batching != nil,
                                 maxQueueDelayMicroseconds: batching?.maxQueueDelayMicroseconds ?? 0,
                                 preferredBatchSizes: batching?.preferredBatchSizes ?? [], queueCapacity: queueCapacity,
                                 instances: configuration.instanceCount)
        batcher = DynamicBatcher(name: source.name, policy: policy, observer: { _, _ in metrics.recordExecution() }) { instance, inputs in
            try sessions.run(inputs, on: instance)
        }
    }

    /// A request starts using this version (the repository calls it under its own lock).
    func acquire() { leaseLock.withLock { leases += 1 } }

    /// A request is done with the version `ModelRepository.model(_:version:lease: true)` gave it.
    public func release() {
        let last = leaseLock.withLock {
            leases -= 1
            return retired && leases == 0
        }
        if last { batcher.finish() }
    }

    /// Takes this version out of service: its batcher finishes once no request holds it.
    func retire() {
        let idle = leaseLock.withLock {
            retired = true
            return leases == 0
        }
        if idle { batcher.finish() }
    }

    /// Makes every instance's session for every batch size the batcher forms, compiling each size's
    /// program once (kernels from the cache), and runs each once so its arena is touched.
    public func warmUp() throws {
        let sizes = batches ? batcher.policy.batchSizes : [0]
        for size in sizes {
            var feed: [String: NDArray] = [:]
            for input in inputs { feed[input.name] = NDArray(shape: batches ? [size] + input.dims : input.dims) }
            for instance in 0..<configuration.instanceCount { _ = try sessions.run(feed, on: instance) }
        }
    }

    /// Checks a decoded request against this model and returns the net's inputs and the batch rows.
    public func validate(_ request: InferenceRequest) throws(ServeError) -> (inputs: [String: NDArray], rows: Int) {
        var feed: [String: NDArray] = [:]
        var rows: Int?
        for input in request.inputs {
            guard let expected = inputs.first(where: { $0.name == input.name }) else {
                throw ServeError(.badRequest, "model '\(name)' has no input '\(input.name)'; its inputs are " + inputs.map { "'\($0.name)'" }.joined(separator: ", "))
            }
            let wanted = batches ? [-1] + expected.dims : expected.dims
            let matches = batches ? (input.shape.count == wanted.count && Array(input.shape.dropFirst()) == expected.dims)
                                  : input.shape == expected.dims
            guard matches else {
                throw ServeError(.badRequest, "model '\(name)': input '\(input.name)': expected shape \(shapeText(wanted)), got \(shapeText(input.shape))")
            }
            if batches {
                let batch = input.shape[0]
                guard batch >= 1, batch <= configuration.maxBatchSize else {
                    throw ServeError(.badRequest, "model '\(name)': input '\(input.name)': batch size \(batch) is outside 1...\(configuration.maxBatchSize) (max_batch_size)")
                }
                if let rows, rows != batch {
                    throw ServeError(.badRequest, "model '\(name)': inputs have different batch sizes (\(rows) and \(batch))")
                }
                rows = batch
            }
            feed[input.name] = NDArray(shape: input.shape, data: input.values)
        }
        if let missing = inputs.first(where: { feed[$0.name] == nil }) {
            throw ServeError(.badRequest, "model '\(name)': input '\(missing.name)' is missing (shape \(shapeText(batches ? [-1] + missing.dims : missing.dims)), FP32)")
        }
        if let outputs = request.outputs, let unknown = outputs.first(where: { requested in !self.outputs.contains { $0.name == requested.name } }) {
            throw ServeError(.badRequest, "model '\(name)' has no output '\(unknown.name)'; its outputs are " + self.outputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        return (feed, rows ?? 1)
    }
}

/// Each batcher instance's sessions by input shapes. Instance `i`'s table is touched only from
/// instance `i`'s thread (and by `warmUp` before the model is in service), so it needs no lock.
final class InstanceSessions: @unchecked Sendable {
    private let model: Model
    private var tables: [[[String: [Int]]: Session]]

    init(model: Model, instances: Int) {
        self.model = model
        tables = Array(repeating: [:], count: instances)
    }

    func run(_ inputs: [String: NDArray], on instance: Int) throws -> [String: NDArray] {
        let shapes = inputs.mapValues(\.shape)
        if let session = tables[instance][shapes] { return try session.run(inputs) }
        let session = try model.session(inputShapes: shapes)
        tables[instance][shapes] = session
        return try session.run(inputs)
    }
}
