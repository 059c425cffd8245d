import CaffeFormat
import Foundation
import Graph
import NumPy
import Runtime
import Solvers

/// A net compiled for training by `Compiler`: forward (and backward) over one batch per
/// `run`, persistent parameters the solver updates in place, and Caffe's bookkeeping around them.
///
/// Parameter diffs accumulate across runs until `zeroParameterDiffs` (Caffe's `iter_size`).
/// Loss outputs' diffs hold their loss weight; other outputs' diffs are zero unless seeded with
/// `setTopDiffs`. Blob values and diffs other than the outputs are readable only when the net
/// was compiled `keepingAllBlobs` (the arena reuses their memory otherwise). Runs are serialized.
///
///     net.zeroParameterDiffs()
///     let (loss, outputs) = try net.run(["data": x, "label": y], backward: true)
///     solver.update(net.learnableParameters)
public final class TrainingNet: @unchecked Sendable {
    /// A buffer holding a blob (or its diff) of `shape`.
    struct Blob {
        var buffer: BufferID
        var shape: [Int]
        var count: Int { shape.reduce(1, *) }
    }

    /// A data-source top and, for constant `DummyData` fillers, the values used when not fed.
    struct Feed {
        var blob: Blob
        var defaultValues: [Float]?
    }

    /// One compiled schedule and where its blobs live: for the graph's shapes, or — for a net
    /// with Filter layers — re-specialized for a run's selected row counts. Parameters, their
    /// diffs, the random key and running statistics are the same buffers in every layout.
    struct Layout: RowVariant {
        /// The compiled program this layout runs: `Compiler`'s one program type, here with forward
        /// and backward steps and the parameters as persistent buffers of its one context.
        var program: CompiledProgram
        /// The program's context. Steps `0..<forwardStepCount` are the forward pass, the rest backward.
        var executable: Executable
        var forwardStepCount: Int
        var rowGuards: [RowGuard]
        var feeds: [String: Feed]
        var outputs: [String]
        var values: [String: Blob]
        var diffs: [String: Blob]
        var seeds: [String: Blob]
        var losses: [(Blob, Float)]
        var nodeSteps: [Range<Int>]
        /// Backward steps of each node (by node id; empty for nodes that run no backward).
        var backwardNodeSteps: [Range<Int>] = []
        var checks: [(layer: String, tops: [(name: String, buffer: BufferID, count: Int)])]
        /// Why backward cannot run in any layout (a layer Caffe cannot run backward).
        var backwardProblems: [Diagnostic]
        /// Why backward cannot run in this layout: a Filter that selected no row (Caffe crashes).
        var zeroRowProblems: [Diagnostic]
        /// Recurrent layers' carried h/c: persistent buffers a forward writes and the next reads.
        var recurrentStates: [(buffer: BufferID, count: Int)] = []
        /// The diff buffer of every value that has one (each version of an in-place blob its own).
        var valueDiffs: [ValueID: BufferID] = [:]
    }

    /// The graph as built: for a net with Filter layers, Caffe's setup shapes (all rows selected).
    public let graph: Graph
    /// The schedule of the last run (steps `0..<forwardStepCount` forward, the rest backward).
    public var executable: Executable {
        lock.lock()
        defer { lock.unlock() }
        return layout.executable
    }
    /// The compiled program of the last run's layout: `Compiler`'s one program type, of which this
    /// net is the one execution context (its arena, its parameters as persistent buffers).
    public var program: CompiledProgram {
        lock.lock()
        defer { lock.unlock() }
        return layout.program
    }
    public var forwardStepCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return layout.forwardStepCount
    }
    var layout: Layout
    /// For a net with data-dependent rows (Filter, DetectionOutput): its layouts by row counts; nil otherwise.
    let rows: RowSpecializer<Layout>?
    /// Where the first compilation's kernels came from (compiled, disk cache, already in the process).
    public let kernels: KernelStatistics
    /// Where the first compilation's time went (lowering, kernels, arena and parameters), as
    /// `CompiledNet.phases`, and the whole of it (graph to executable).
    public let phases: CompilePhases
    public let compileSeconds: Double
    private let cache: KernelCache
    let slots: [ParameterSlot]
    let slotOf: [[Int]]
    private let randomKey: BufferID
    private let seed: UInt64
    private let statisticSlots: Set<Int>
    /// The recurrent layers' carried h/c (see `Layout.recurrentStates`) before the last run, so
    /// `firstNonFinite` replays that run from the same state.
    private var statesBeforeLastRun: [[Float]] = []
    var runCount: UInt64 = 0
    private var lastFeeds: [String: NDArray] = [:]
    /// What `setTopDiffs` was given, written again into a layout a run moves to.
    private var topDiffs: [String: NDArray] = [:]
    /// Recursive: a caller's layer running inside a pass may read blobs (`blobMemory`).
    let lock = NSRecursiveLock()

    init(graph: Graph, layout: Layout, cache: KernelCache, kernels: KernelStatistics, phases: CompilePhases, compileSeconds: Double,
         slots: [ParameterSlot], slotOf: [[Int]], randomKey: BufferID, seed: UInt64, statisticSlots: Set<Int>, rows: RowSpecializer<Layout>?) {
        self.graph = graph
        self.layout = layout
        self.cache = cache
        self.kernels = kernels
        self.phases = phases
        self.compileSeconds = compileSeconds
        self.slots = slots
        self.slotOf = slotOf
        self.randomKey = randomKey
        self.seed = seed
        self.statisticSlots = statisticSlots
        self.rows = rows
    }

    /// The data-source tops `run` takes, with their shapes.
    public var feedShapes: [String: [Int]] {
        lock.lock()
        defer { lock.unlock() }
        return layout.feeds.mapValues(\.blob.shape)
    }

    /// Arena floats (activations and diffs, with reuse), what one buffer per blob would take, and
    /// the floats kept outside the arena (parameters, their diffs, seeds).
    public var memory: (arena: Int, naive: Int, persistent: Int) {
        lock.lock()
        defer { lock.unlock() }
        let persistent = slots.reduce(0) { $0 + 2 * $1.shape.reduce(1, *) } + layout.seeds.values.reduce(0) { $0 + $1.count }
        return (layout.executable.memoryPlan.arenaCount, layout.executable.memoryPlan.naiveCount, persistent)
    }

    /// For a net with Filter layers: the row counts the last run selected (the setup counts before
    /// any run) and how many re-specializations runs have compiled; nil otherwise.
    public var filterRows: (current: [Int], specializations: Int)? {
        lock.lock()
        defer { lock.unlock() }
        return rows.map { ($0.currentRows, $0.specializations) }
    }

    // MARK: Running

    /// Runs forward (TRAIN semantics when `graph.phase == .train`) and, when `backward`, backward.
    /// `feeds` holds every data-source top by blob name (constant DummyData tops may be left out).
    /// Returns the total loss (Σ loss_weight · Σ top over loss-weighted tops) and each net output.
    ///
    /// In a net with Filter layers every blob below a Filter has this run's selected rows, as in
    /// Caffe (losses normalize by them too); seeds given to `setTopDiffs` apply to the layout the
    /// run ends in. Backward through a Filter that selected no row throws (Caffe crashes there).
    public func run(_ feeds: [String: NDArray], backward: Bool) throws -> (loss: Float, outputs: [String: NDArray]) {
        lock.lock()
        defer { lock.unlock() }
        if backward, let problem = layout.backwardProblems.first { throw problem }
        try write(feeds, into: layout)
        lastFeeds = feeds
        runCount += 1
        writeRandomKey()
        statesBeforeLastRun = layout.recurrentStates.map(readState)
        if let rows {
            let start = layout.executable
            let (variant, resumeAt) = try rows.advance { next, firstNew in try self.write(feeds, into: next, from: firstNew) }
            layout = variant
            if variant.executable !== start { writeTopDiffs() }
            layout.executable.execute(steps: resumeAt..<layout.forwardStepCount)
            if backward, let problem = layout.zeroRowProblems.first { throw problem }
        } else {
            layout.executable.execute(steps: 0..<layout.forwardStepCount)
        }
        if backward { layout.executable.execute(steps: layout.forwardStepCount..<layout.executable.steps.count) }
        var loss: Float = 0
        for (blob, weight) in layout.losses {
            let pointer = layout.executable.pointer(to: blob.buffer)
            for i in 0..<blob.count { loss += pointer[i] * weight }
        }
        var outputs: [String: NDArray] = [:]
        for name in layout.outputs { outputs[name] = read(layout.values[name]) }
        return (loss, outputs)
    }

    /// Writes the feeds into `target`'s buffers: all of them, or (when a run moves to another
    /// layout) only those declared from buffer `first` on, which the layout's prefix does not hold.
    private func write(_ given: [String: NDArray], into target: Layout, from first: BufferID = 0) throws {
        if let unknown = given.keys.sorted().first(where: { target.feeds[$0] == nil }) {
            throw Diagnostic("'\(unknown)' is not a data-source top of this net",
                             hint: "its data-source tops are " + target.feeds.keys.sorted().map { "'\($0)'" }.joined(separator: ", "))
        }
        for (name, feed) in target.feeds where feed.blob.buffer >= first {
            let pointer = target.executable.pointer(to: feed.blob.buffer)
            if let array = given[name] {
                guard array.count == feed.blob.count, array.shape == feed.blob.shape || array.shape.reduce(1, *) == feed.blob.count else {
                    throw Diagnostic("'\(name)' was fed shape \(array.shape), but the net was compiled for \(feed.blob.shape)",
                                     hint: "feed a batch of the compiled shape, or recompile the net for this one")
                }
                array.data.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: feed.blob.count) }
            } else if let defaults = feed.defaultValues {
                pointer.update(from: defaults, count: feed.blob.count)
            } else {
                throw Diagnostic("no value fed for data-source top '\(name)' \(feed.blob.shape)",
                                 hint: "feed every data-source top by name: " + target.feeds.keys.sorted().joined(separator: ", "))
            }
        }
    }

    /// This run's 64-bit dropout key, mixed from the seed and the run count, stored as four exact
    /// 16-bit chunks.
    func writeRandomKey() {
        var z = seed &+ runCount &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let pointer = layout.executable.pointer(to: randomKey)
        for k in 0..<4 { pointer[k] = Float((z >> (16 * UInt64(k))) & 0xFFFF) }
    }

    private func readState(_ state: (buffer: BufferID, count: Int)) -> [Float] {
        Array(UnsafeBufferPointer(start: layout.executable.pointer(to: state.buffer), count: state.count))
    }

    private func writeStates(_ values: [[Float]]) {
        for (state, values) in zip(layout.recurrentStates, values) {
            layout.executable.pointer(to: state.buffer).update(from: values, count: state.count)
        }
    }

    private func read(_ blob: Blob?) -> NDArray? {
        guard let blob else { return nil }
        let pointer = layout.executable.pointer(to: blob.buffer)
        return NDArray(shape: blob.shape, data: Array(UnsafeBufferPointer(start: pointer, count: blob.count)))
    }

    // MARK: Parameters

    /// The learnable parameters for the solver: each shared blob once (the owner's lr/decay
    /// multipliers), in Caffe's `learnable_params` order. The buffers live as long as the net.
    public var learnableParameters: [LearnableParameter] {
        lock.lock()
        defer { lock.unlock() }
        return slots.map { slot in
            let count = slot.shape.reduce(1, *)
            return LearnableParameter(data: UnsafeMutableBufferPointer(start: layout.executable.pointer(to: slot.data), count: count),
                                      diff: UnsafeMutableBufferPointer(start: layout.executable.pointer(to: slot.diff), count: count),
                                      lrMult: slot.lrMult, decayMult: slot.decayMult)
        }
    }

    /// `layer/index` of each learnable parameter's owner, parallel to `learnableParameters`.
    public var learnableParameterNames: [String] { slots.map(\.name) }

    public func zeroParameterDiffs() {
        lock.lock()
        defer { lock.unlock() }
        for slot in slots { layout.executable.pointer(to: slot.diff).update(repeating: 0, count: slot.shape.reduce(1, *)) }
    }

    /// Current values by layer name, in each layer's blob order (shared blobs repeated under each
    /// layer), as Caffe's `Net::ToProto` writes them.
    public func parameterArrays() -> [String: [NDArray]] { parameterBlobs(\.data) }

    /// Current diffs by layer name, like `parameterArrays`.
    public func parameterDiffs() -> [String: [NDArray]] { parameterBlobs(\.diff) }

    private func parameterBlobs(_ which: KeyPath<ParameterSlot, BufferID>) -> [String: [NDArray]] {
        lock.lock()
        defer { lock.unlock() }
        var result: [String: [NDArray]] = [:]
        for node in graph.nodes where !node.parameters.isEmpty {
            result[node.name] = slotOf[node.id].enumerated().map { k, index in
                read(Blob(buffer: slots[index][keyPath: which], shape: node.parameters[k].shape.dims))!
            }
        }
        return result
    }

    /// Copies parameter values in by layer name (Caffe's `CopyTrainedLayersFrom`: layers this net
    /// lacks are ignored). Throws when a layer is given more blobs than it has or a blob's element
    /// count differs from its parameter's.
    public func setParameters(_ values: [String: [NDArray]]) throws {
        lock.lock()
        defer { lock.unlock() }
        for node in graph.nodes where !node.parameters.isEmpty {
            guard let arrays = values[node.name] else { continue }
            guard arrays.count <= node.parameters.count else {
                throw Diagnostic("was given \(arrays.count) parameter blobs, but has \(node.parameters.count)", at: node.location, layer: node.name,
                                 hint: "the weights belong to a different net")
            }
            for (k, array) in arrays.enumerated() {
                let slot = slots[slotOf[node.id][k]]
                let count = slot.shape.reduce(1, *)
                guard array.count == count else {
                    throw Diagnostic("parameter \(k) should be \(node.parameters[k].shape) = \(count) values, but was given \(array.shape) = \(array.count)",
                                     at: node.location, layer: node.name, hint: "the weights were trained for a different net or input size")
                }
                layout.executable.pointer(to: slot.data).update(from: array.data, count: count)
            }
        }
    }

    // MARK: Inspection

    /// After a run: the first layer (net order) whose top holds a NaN or infinity, and that top.
    /// Replays the last run's forward layer by layer (restoring the running statistics it updates),
    /// since the arena has reused most blobs' memory by the end of a run.
    public func firstNonFinite() -> (layer: String, blob: String)? {
        lock.lock()
        defer { lock.unlock() }
        guard (try? write(lastFeeds, into: layout)) != nil else { return nil }
        let saved = statisticSlots.map { index in
            (index, Array(UnsafeBufferPointer(start: layout.executable.pointer(to: slots[index].data), count: slots[index].shape.reduce(1, *))))
        }
        let statesAfterRun = layout.recurrentStates.map(readState)
        writeStates(statesBeforeLastRun)
        defer {
            for (index, values) in saved { layout.executable.pointer(to: slots[index].data).update(from: values, count: values.count) }
            writeStates(statesAfterRun)
        }
        writeRandomKey()
        for (node, steps) in zip(layout.checks, layout.nodeSteps) {
            layout.executable.execute(steps: steps)
            for top in node.tops {
                let pointer = layout.executable.pointer(to: top.buffer)
                if (0..<top.count).contains(where: { !pointer[$0].isFinite }) { return (node.layer, top.name) }
            }
        }
        return nil
    }

    /// A blob's value after the last run (the net's outputs and feeds; every blob when compiled
    /// `keepingAllBlobs`), or nil.
    public func blob(_ name: String) -> NDArray? {
        lock.lock()
        defer { lock.unlock() }
        return read(layout.values[name])
    }

    /// A blob's diff after the last backward (seeded outputs; every blob that got a diff when
    /// compiled `keepingAllBlobs`), or nil. For in-place chains it is the diff of the chain's first
    /// version, which Caffe's shared diff holds at the end of backward.
    public func blobDiff(_ name: String) -> NDArray? {
        lock.lock()
        defer { lock.unlock() }
        return read(layout.diffs[name])
    }

    /// Seeds the diffs of net outputs for the next backward runs (replacing the loss weight for
    /// loss outputs). Names that are not outputs whose producer runs backward are ignored.
    public func setTopDiffs(_ diffs: [String: NDArray]) {
        lock.lock()
        defer { lock.unlock() }
        topDiffs.merge(diffs) { $1 }
        writeTopDiffs()
    }

    /// Writes the seeds `setTopDiffs` was given into the current layout.
    private func writeTopDiffs() {
        for (name, array) in topDiffs {
            guard let seed = layout.seeds[name] else { continue }
            layout.executable.pointer(to: seed.buffer).update(from: array.data, count: min(array.count, seed.count))
        }
    }

    /// Per-step seconds of one pass over the current arena contents, split into forward and
    /// backward steps and labelled with their layer (for `swiftjit time --backward`).
    public func profileSteps() -> (forward: [(layer: String, seconds: Double)], backward: [(layer: String, seconds: Double)]) {
        lock.lock()
        defer { lock.unlock() }
        let times = layout.executable.profileSteps()
        let labelled = zip(layout.executable.steps.map(\.label), times).map { (layer: $0.0, seconds: $0.1) }
        return (Array(labelled[..<layout.forwardStepCount]), Array(labelled[layout.forwardStepCount...]))
    }
}
