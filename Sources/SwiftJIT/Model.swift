import Foundation
@_exported import Codegen
@_exported import Passes
import Runtime

/// A Caffe net loaded once for inference — the library's front door, and what the C API's
/// `sj_model`, the Python package and the inference server stand on.
///
/// A model reads a prototxt (any dialect) and optionally a caffemodel (otherwise the prototxt's
/// fillers from `seed` fill the parameters) and builds the graph for a phase. It compiles one
/// `CompiledProgram` per set of input shapes the first time those shapes are asked for, and keeps
/// it: the schedule, its kernels and every read-only constant (weights, folded weights, packed
/// panels, transformed filters), held once in the model's `ConstantStore` and shared by all
/// programs and all contexts. What runs is a `Session` (one per thread), which owns only its
/// activation arena; making another session for known shapes compiles nothing and copies no
/// weight. A model is thread-safe.
///
///     let model = try Model(prototxt: "deploy.prototxt", weights: "bvlc.caffemodel")
///     let session = try model.session()                       // one per thread
///     let prob = try session.run(["data": image])["prob"]!
///     let same = try model.forward(["data": image])["prob"]!  // pooled sessions, any thread
///     let conv1Weights = model.params["conv1"]![0]
public final class Model: @unchecked Sendable {
    public let definition: NetDefinition
    public let phase: Caffe_Phase
    /// Parameter blobs by layer name, in Caffe's order (`params["conv1"][0]` weights, `[1]` bias).
    /// For a model that does not keep its parameters (`keepsParameters: false`), each read loads
    /// them again from the caffemodel.
    public var params: [String: [NDArray]] { (try? parameters()) ?? [:] }
    /// The graph for the prototxt's own input shapes.
    public let graph: Graph
    public let compiler: Compiler
    /// Every constant of every program this model compiled, each held once.
    public let constants = ConstantStore()
    /// Whether programs that return only the outputs run the inference passes (BatchNorm folding,
    /// identity removal). Blob dumps (`.all`, `.named`) always run the net as written.
    public var optimizes = true

    /// What a program is compiled for: input shapes and the blobs it keeps.
    private struct ProgramKey: Hashable {
        var shapes: [String: [Int]]
        var blobs: String
    }
    private let lock = NSLock()
    /// Serializes compilations, so that two threads asking for the same new shapes compile once.
    private let compileLock = NSLock()
    private var programs: [ProgramKey: CompiledProgram] = [:]
    /// Contexts `forward` has finished with, ready for the next call.
    private var idle: [ProgramKey: [CompiledNet]] = [:]
    private var graphs: [[String: [Int]]: Graph] = [:]
    /// The parameters, while the model keeps them in memory.
    private var storedParams: [String: [NDArray]]?
    /// Loads the parameters again from the caffemodel; nil when the model keeps them.
    private let reloadParams: (() throws -> [String: [NDArray]])?

    /// Loads `prototxt` and `weights` (a .caffemodel; without one, parameters come from the fillers
    /// with `seed`, BatchNorm statistics set to mean 0 / variance 1 so outputs stay finite, and
    /// `unfilledWeights` — when given — for convolution/InnerProduct weights the prototxt gives no
    /// filler, which Caffe would set to 0). `inputShapes` overrides the prototxt's input shapes.
    ///
    /// With `keepsParameters: false` and a caffemodel, the model drops its parameter arrays once a
    /// program is compiled and reads the file again only to compile new shapes: it then holds its
    /// weights once, as the compiled constants, instead of twice (what a server wants).
    public convenience init(prototxt: String, weights: String? = nil, phase: Caffe_Phase = .test,
                            inputShapes: [String: [Int]] = [:], seed: UInt64 = 1, unfilledWeights: Filler? = nil,
                            keepsParameters: Bool = true, compiler: Compiler? = nil) throws {
        try self.init(definition: try CaffeFiles.loadNet(path: prototxt), weights: try weights.map { path in
            (try CaffeFiles.loadWeights(path: path), path)
        }, phase: phase, inputShapes: inputShapes, seed: seed, unfilledWeights: unfilledWeights,
           reloadingFrom: keepsParameters ? nil : weights, compiler: compiler)
    }

    /// A model from a parsed net and, optionally, decoded weights (`weights.file` names them in
    /// errors) — what loading from memory uses (`CaffeFiles.parseNet(text:)`, `parseWeights`).
    public convenience init(definition: NetDefinition, weights: (model: Caffe_NetParameter, file: String)?, phase: Caffe_Phase = .test,
                            inputShapes: [String: [Int]] = [:], seed: UInt64 = 1, unfilledWeights: Filler? = nil,
                            compiler: Compiler? = nil) throws {
        try self.init(definition: definition, weights: weights, phase: phase, inputShapes: inputShapes, seed: seed,
                      unfilledWeights: unfilledWeights, reloadingFrom: nil, compiler: compiler)
    }

    /// The designated initializer: `reloadingFrom`, a caffemodel path, lets the model drop its
    /// parameters after compiling and read them from there again when it needs them.
    private init(definition: NetDefinition, weights: (model: Caffe_NetParameter, file: String)?, phase: Caffe_Phase,
                 inputShapes: [String: [Int]], seed: UInt64, unfilledWeights: Filler?, reloadingFrom path: String?,
                 compiler: Compiler?) throws {
        self.definition = definition
        self.phase = phase
        let graph = try GraphBuilder(phase: phase, inputShapes: inputShapes.mapValues(TensorShape.init), insertsSplits: false).build(definition)
        self.graph = graph
        // Before reading or filling a single parameter: a net that cannot fit fails in one line.
        try MemoryBudget(graph).check()
        let fillers = {
            try ParameterInitializer.initialize(graph, seed: seed, batchNorm: .unit, unfilledWeights: unfilledWeights)
        }
        if let weights {
            storedParams = try TrainedLayers.copy(from: weights.model, file: weights.file, into: graph, others: fillers)
        } else {
            storedParams = try fillers()
        }
        reloadParams = path.map { path in { try TrainedLayers.copy(from: path, into: graph, others: fillers) } }
        self.compiler = try compiler ?? Compiler()
        graphs[inputShapes.isEmpty ? [:] : inputShapes] = graph
    }

    /// The parameters: the ones in memory, or loaded again from the caffemodel.
    func parameters() throws -> [String: [NDArray]] {
        if let kept = lock.withLock({ storedParams }) { return kept }
        guard let reloadParams else { return [:] }
        return try reloadParams()
    }

    /// The net's inputs (Input layers' tops) with the prototxt's shapes.
    public var inputs: [(name: String, shape: [Int])] {
        graph.nodes.filter { $0.kind == .input }.flatMap(\.outputs).map { (graph.values[$0].name, graph.values[$0].shape.dims) }
    }

    /// The blobs no layer reads (`prob`), in net order, with the prototxt's shapes.
    public var outputs: [String] { graph.outputs.map { graph.values[$0].name } }

    /// The outputs with their shapes for the prototxt's input shapes.
    public var outputShapes: [(name: String, shape: [Int])] {
        graph.outputs.map { (graph.values[$0].name, graph.values[$0].shape.dims) }
    }

    /// A new execution context, for the prototxt's input shapes or, with `inputShapes`, for others
    /// (inputs not named keep the prototxt's shape). Compiles only shapes not seen before.
    public func session(inputShapes: [String: [Int]] = [:]) throws -> Session {
        try Session(model: self, shapes: completing(inputShapes))
    }

    /// Runs the net forward on `inputs` (every net input, by name) and returns the selected blobs,
    /// in a pooled context for these shapes. Safe from any number of threads at once.
    ///
    /// `HDF5Output` layers write their bottoms (`data`, `label`) to their `file_name` on every call,
    /// as Caffe's layer does on a forward pass.
    public func forward(_ inputs: [String: NDArray], blobs: BlobSelection = .outputs) throws -> [String: NDArray] {
        let writers = graph.nodes.filter { $0.kind == .hdf5Output }
        guard !writers.isEmpty else { return try run(inputs, blobs: blobs) }
        let written = writers.flatMap { $0.inputs.map { graph.values[$0].name } }
        let wanted: [String]?
        let selection: BlobSelection
        switch blobs {
        case .all: (wanted, selection) = (nil, .all)
        case .outputs: (wanted, selection) = (outputs, .named(outputs + written.filter { !outputs.contains($0) }))
        case .named(let names): (wanted, selection) = (names, .named(names + written.filter { !names.contains($0) }))
        }
        let results = try run(inputs, blobs: selection)
        for writer in writers {
            let bottoms = writer.inputs.map { graph.values[$0].name }
            guard bottoms.count >= 2, let data = results[bottoms[0]], let label = results[bottoms[1]] else {
                throw Diagnostic("HDF5Output needs two bottoms, data and label", layer: writer.name)
            }
            try HDF5OutputWriter.write(layer: writer.layer, data: HDF5Array(shape: data.shape, values: data.data),
                                       label: HDF5Array(shape: label.shape, values: label.data))
        }
        guard let wanted else { return results }
        return results.filter { wanted.contains($0.key) }
    }

    private func run(_ inputs: [String: NDArray], blobs: BlobSelection) throws -> [String: NDArray] {
        let shapes = inputs.mapValues(\.shape)
        try checkNames(Set(inputs.keys))
        let key = ProgramKey(shapes: shapes, blobs: String(describing: blobs))
        let context = try checkOut(key, blobs: blobs)
        defer { checkIn(context, key) }
        return try context.run(inputs: inputs, blobs: blobNames(blobs))
    }

    /// A new context for these shapes, ready to run (its program compiled now if it is new).
    public func compiled(for shapes: [String: [Int]], blobs: BlobSelection = .outputs) throws -> CompiledNet {
        try program(for: shapes, blobs: blobs).makeContext()
    }

    /// The compiled program for these input shapes (every input named), compiled on first use and
    /// kept for the model's lifetime.
    public func program(for shapes: [String: [Int]], blobs: BlobSelection = .outputs) throws -> CompiledProgram {
        let key = ProgramKey(shapes: shapes, blobs: String(describing: blobs))
        if let known = lock.withLock({ programs[key] }) { return known }
        compileLock.lock()
        defer { compileLock.unlock() }
        if let known = lock.withLock({ programs[key] }) { return known }
        let graph = try self.graph(for: shapes)
        if case .named(let names) = blobs, let missing = names.first(where: { graph.value(named: $0) == nil }) {
            throw Diagnostic("the net has no blob '\(missing)'" + Diagnostic.didYouMean(missing, among: Array(Set(graph.values.map(\.name)))))
        }
        let program: CompiledProgram = try { () throws -> CompiledProgram in
            let params = try parameters()
            if case .outputs = blobs, optimizes {
                // Only the outputs are wanted, so intermediate blobs may be fused away.
                let optimized = try InferencePasses.run(graph, parameters: params)
                return try compiler.compileProgram(graph: optimized.graph, parameters: optimized.parameters, keeping: .outputs, constants: constants)
            }
            return try compiler.compileProgram(graph: graph, parameters: params, keeping: blobs, constants: constants)
        }()
        lock.withLock {
            programs[key] = program
            if reloadParams != nil { storedParams = nil }
        }
        // Lowering's temporaries (parameter copies, IR, transformed weights before interning) are
        // freed by now; hand their pages back so a long-lived model's footprint is what it holds.
        Heap.trim()
        return program
    }

    /// The shapes of every input: `given`, and the prototxt's for the others. Throws for a name
    /// that is not an input.
    func completing(_ given: [String: [Int]]) throws -> [String: [Int]] {
        try checkNames(Set(given.keys), requireAll: false)
        var shapes = Dictionary(inputs.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 })
        shapes.merge(given) { $1 }
        return shapes
    }

    private func checkNames(_ names: Set<String>, requireAll: Bool = true) throws {
        let known = inputs.map(\.name)
        if requireAll, let missing = known.first(where: { !names.contains($0) }) {
            throw Diagnostic("input '\(missing)' is missing", hint: "feed every net input: " + known.joined(separator: ", "))
        }
        if let unknown = names.sorted().first(where: { !known.contains($0) }) {
            throw Diagnostic("'\(unknown)' is not an input of this net" + Diagnostic.didYouMean(unknown, among: known),
                             hint: "net inputs: " + known.joined(separator: ", "))
        }
    }

    private func graph(for shapes: [String: [Int]]) throws -> Graph {
        let known = lock.withLock { graphs[shapes] } ?? (inputs.allSatisfy { shapes[$0.name] == $0.shape } ? graph : nil)
        let graph = try known ?? GraphBuilder(phase: phase, inputShapes: shapes.mapValues(TensorShape.init), insertsSplits: false).build(definition)
        lock.withLock { graphs[shapes] = graph }
        return graph
    }

    private func blobNames(_ selection: BlobSelection) -> [String]? {
        if case .named(let names) = selection { return names }
        return nil
    }

    private func checkOut(_ key: ProgramKey, blobs: BlobSelection) throws -> CompiledNet {
        let pooled: CompiledNet? = lock.withLock {
            guard var contexts = idle[key], let context = contexts.popLast() else { return nil }
            idle[key] = contexts
            return context
        }
        return try pooled ?? program(for: key.shapes, blobs: blobs).makeContext()
    }

    private func checkIn(_ context: CompiledNet, _ key: ProgramKey) {
        lock.withLock { idle[key, default: []].append(context) }
    }
}

/// The name pycaffe users know; a `Net` is a `Model`.
public typealias Net = Model

/// One execution context of a `Model`: its own activation arena over the model's shared program
/// and constants. Use a session from one thread at a time (make one per thread); a model hands out
/// any number.
///
/// `run` copies the inputs in and the outputs out. `runInPlace` and `inputBuffer` avoid both copies:
/// write inputs straight into the session's memory and read outputs where the net left them, valid
/// until the session's next run or reshape (what the C API and the server do).
///
///     let session = try model.session()
///     let out = try session.run(["data": x])
///     try session.reshape(["data": [8, 3, 224, 224]])   // compiles only shapes new to the model
public final class Session: @unchecked Sendable {
    public let model: Model
    /// The context for the current shapes.
    public private(set) var context: CompiledNet
    /// The input shapes the session runs now.
    public private(set) var shapes: [String: [Int]]

    init(model: Model, shapes: [String: [Int]]) throws {
        self.model = model
        self.shapes = shapes
        context = try model.program(for: shapes).makeContext()
    }

    /// The inputs in net order with the session's current shapes.
    public var inputs: [(name: String, shape: [Int])] { context.inputShapes }
    /// The outputs in net order with their shapes for the current input shapes.
    public var outputs: [(name: String, shape: [Int])] { context.executable.outputs.map { ($0.name, $0.shape) } }
    /// Bytes of this session's own memory (its arena).
    public var arenaBytes: Int { context.program.arenaBytes }

    /// Switches to new input shapes (inputs not named keep theirs). Pointers from earlier runs and
    /// `inputBuffer` are invalid afterwards.
    public func reshape(_ inputShapes: [String: [Int]]) throws {
        var next = shapes
        try next.merge(model.completing(inputShapes)) { _, new in new }
        for (name, shape) in inputShapes { next[name] = shape }
        guard next != shapes else { return }
        context = try model.program(for: next).makeContext()
        shapes = next
    }

    /// Runs forward on `inputs` (every input, with the session's shapes) and returns the outputs.
    public func run(_ inputs: [String: NDArray]) throws -> [String: NDArray] {
        try checkShapes(inputs.mapValues(\.shape))
        if let missing = self.inputs.first(where: { inputs[$0.name] == nil }) {
            throw Diagnostic("input '\(missing.name)' is missing", hint: "feed every net input: " + self.inputs.map(\.name).joined(separator: ", "))
        }
        return try context.run(inputs: inputs)
    }

    /// Runs forward reading the given inputs from the caller's memory; inputs not given are read
    /// from what was written into `inputBuffer`. Returns the outputs (or `blobs`) as views of the
    /// session's memory, valid until its next run or reshape.
    public func runInPlace(_ inputs: [String: CompiledNet.BlobView] = [:], blobs: [String]? = nil) throws -> [String: CompiledNet.BlobView] {
        try checkShapes(inputs.mapValues(\.shape))
        let outputs = context.blobNames
        if let unknown = blobs?.first(where: { !outputs.contains($0) }) {
            throw Diagnostic("'\(unknown)' is not an output of this net" + Diagnostic.didYouMean(unknown, among: outputs),
                             hint: "its outputs are " + outputs.joined(separator: ", ") + "; to read other blobs, run the model with BlobSelection.named")
        }
        return try context.runInPlace(inputs: inputs, blobs: blobs)
    }

    /// The session's memory for input `name`, for writing values in place before `runInPlace`.
    public func inputBuffer(_ name: String) throws -> UnsafeMutableBufferPointer<Float> {
        guard let buffer = context.inputBuffer(name) else {
            throw Diagnostic("'\(name)' is not an input of this net" + Diagnostic.didYouMean(name, among: inputs.map(\.name)),
                             hint: "net inputs: " + inputs.map(\.name).joined(separator: ", "))
        }
        return buffer
    }

    /// Names and shapes against the session's inputs: a clear error naming the blob and both shapes.
    private func checkShapes(_ given: [String: [Int]]) throws {
        for (name, shape) in given.sorted(by: { $0.key < $1.key }) {
            guard let expected = shapes[name] else {
                throw Diagnostic("'\(name)' is not an input of this net" + Diagnostic.didYouMean(name, among: inputs.map(\.name)),
                                 hint: "net inputs: " + inputs.map(\.name).joined(separator: ", "))
            }
            guard expected == shape else {
                throw Diagnostic("input '\(name)' has shape \(CompiledNet.format(shape)), but the session runs \(CompiledNet.format(expected))",
                                 hint: "reshape the session for the new shape first (Session.reshape, sj_session_reshape)")
            }
        }
    }
}
