import CaffeFormat
import Foundation
import Graph
import NumPy
import Runtime
import Solvers

/// A net compiled for training by `TrainingCompiler`: forward (and backward) over one batch per
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

    public let graph: Graph
    /// Steps `0..<forwardStepCount` of `executable` are the forward pass, the rest backward.
    public let executable: Executable
    public let forwardStepCount: Int
    /// Where this compilation's kernels came from (compiled, disk cache, already in the process).
    public let kernels: KernelStatistics
    private let cache: KernelCache
    private let slots: [ParameterSlot]
    private let slotOf: [[Int]]
    private let feeds: [String: Feed]
    private let outputNames: [String]
    private let values: [String: Blob]
    private let diffs: [String: Blob]
    private let seeds: [String: Blob]
    private let losses: [(Blob, Float)]
    private let nodeSteps: [Range<Int>]
    private let checks: [(layer: String, tops: [(name: String, buffer: BufferID, count: Int)])]
    private let randomKey: BufferID
    private let seed: UInt64
    private let backwardProblems: [Diagnostic]
    private let statisticSlots: Set<Int>
    private var runCount: UInt64 = 0
    private var lastFeeds: [String: NDArray] = [:]
    private let lock = NSLock()

    init(graph: Graph, executable: Executable, cache: KernelCache, kernels: KernelStatistics, slots: [ParameterSlot], slotOf: [[Int]],
         feeds: [String: Feed], outputs: [String], values: [String: Blob], diffs: [String: Blob], seeds: [String: Blob],
         losses: [(Blob, Float)], forwardStepCount: Int, nodeSteps: [Range<Int>],
         checks: [(String, [(String, BufferID, Int)])], randomKey: BufferID, seed: UInt64,
         backwardProblems: [Diagnostic], statisticSlots: Set<Int>) {
        self.graph = graph
        self.executable = executable
        self.cache = cache
        self.kernels = kernels
        self.slots = slots
        self.slotOf = slotOf
        self.feeds = feeds
        self.outputNames = outputs
        self.values = values
        self.diffs = diffs
        self.seeds = seeds
        self.losses = losses
        self.forwardStepCount = forwardStepCount
        self.nodeSteps = nodeSteps
        self.checks = checks.map { (layer: $0.0, tops: $0.1.map { (name: $0.0, buffer: $0.1, count: $0.2) }) }
        self.randomKey = randomKey
        self.seed = seed
        self.backwardProblems = backwardProblems
        self.statisticSlots = statisticSlots
    }

    /// The data-source tops `run` takes, with their shapes.
    public var feedShapes: [String: [Int]] { feeds.mapValues(\.blob.shape) }

    /// Arena floats (activations and diffs, with reuse), what one buffer per blob would take, and
    /// the floats kept outside the arena (parameters, their diffs, seeds).
    public var memory: (arena: Int, naive: Int, persistent: Int) {
        let persistent = slots.reduce(0) { $0 + 2 * $1.shape.reduce(1, *) } + seeds.values.reduce(0) { $0 + $1.count }
        return (executable.memoryPlan.arenaCount, executable.memoryPlan.naiveCount, persistent)
    }

    // MARK: Running

    /// Runs forward (TRAIN semantics when `graph.phase == .train`) and, when `backward`, backward.
    /// `feeds` holds every data-source top by blob name (constant DummyData tops may be left out).
    /// Returns the total loss (Σ loss_weight · Σ top over loss-weighted tops) and each net output.
    public func run(_ feeds: [String: NDArray], backward: Bool) throws -> (loss: Float, outputs: [String: NDArray]) {
        lock.lock()
        defer { lock.unlock() }
        if backward, let problem = backwardProblems.first { throw problem }
        try write(feeds)
        lastFeeds = feeds
        runCount += 1
        writeRandomKey()
        executable.execute(steps: 0..<forwardStepCount)
        if backward { executable.execute(steps: forwardStepCount..<executable.steps.count) }
        var loss: Float = 0
        for (blob, weight) in losses {
            let pointer = executable.pointer(to: blob.buffer)
            for i in 0..<blob.count { loss += pointer[i] * weight }
        }
        var outputs: [String: NDArray] = [:]
        for name in outputNames { outputs[name] = read(values[name]) }
        return (loss, outputs)
    }

    private func write(_ given: [String: NDArray]) throws {
        if let unknown = given.keys.sorted().first(where: { feeds[$0] == nil }) {
            throw Diagnostic("'\(unknown)' is not a data-source top of this net",
                             hint: "its data-source tops are " + feeds.keys.sorted().map { "'\($0)'" }.joined(separator: ", "))
        }
        for (name, feed) in feeds {
            let pointer = executable.pointer(to: feed.blob.buffer)
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
                                 hint: "feed every data-source top by name: " + feeds.keys.sorted().joined(separator: ", "))
            }
        }
    }

    /// This run's 64-bit dropout key, mixed from the seed and the run count, stored as four exact
    /// 16-bit chunks.
    private func writeRandomKey() {
        var z = seed &+ runCount &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let pointer = executable.pointer(to: randomKey)
        for k in 0..<4 { pointer[k] = Float((z >> (16 * UInt64(k))) & 0xFFFF) }
    }

    private func read(_ blob: Blob?) -> NDArray? {
        guard let blob else { return nil }
        let pointer = executable.pointer(to: blob.buffer)
        return NDArray(shape: blob.shape, data: Array(UnsafeBufferPointer(start: pointer, count: blob.count)))
    }

    // MARK: Parameters

    /// The learnable parameters for the solver: each shared blob once (the owner's lr/decay
    /// multipliers), in Caffe's `learnable_params` order. The buffers live as long as the net.
    public var learnableParameters: [LearnableParameter] {
        slots.map { slot in
            let count = slot.shape.reduce(1, *)
            return LearnableParameter(data: UnsafeMutableBufferPointer(start: executable.pointer(to: slot.data), count: count),
                                      diff: UnsafeMutableBufferPointer(start: executable.pointer(to: slot.diff), count: count),
                                      lrMult: slot.lrMult, decayMult: slot.decayMult)
        }
    }

    /// `layer/index` of each learnable parameter's owner, parallel to `learnableParameters`.
    public var learnableParameterNames: [String] { slots.map(\.name) }

    public func zeroParameterDiffs() {
        lock.lock()
        defer { lock.unlock() }
        for slot in slots { executable.pointer(to: slot.diff).update(repeating: 0, count: slot.shape.reduce(1, *)) }
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
                executable.pointer(to: slot.data).update(from: array.data, count: count)
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
        guard (try? write(lastFeeds)) != nil else { return nil }
        let saved = statisticSlots.map { index in
            (index, Array(UnsafeBufferPointer(start: executable.pointer(to: slots[index].data), count: slots[index].shape.reduce(1, *))))
        }
        defer {
            for (index, values) in saved { executable.pointer(to: slots[index].data).update(from: values, count: values.count) }
        }
        writeRandomKey()
        for (node, steps) in zip(checks, nodeSteps) {
            executable.execute(steps: steps)
            for top in node.tops {
                let pointer = executable.pointer(to: top.buffer)
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
        return read(values[name])
    }

    /// A blob's diff after the last backward (seeded outputs; every blob that got a diff when
    /// compiled `keepingAllBlobs`), or nil. For in-place chains it is the diff of the chain's first
    /// version, which Caffe's shared diff holds at the end of backward.
    public func blobDiff(_ name: String) -> NDArray? {
        lock.lock()
        defer { lock.unlock() }
        return read(diffs[name])
    }

    /// Seeds the diffs of net outputs for the next backward runs (replacing the loss weight for
    /// loss outputs). Names that are not outputs whose producer runs backward are ignored.
    public func setTopDiffs(_ diffs: [String: NDArray]) {
        lock.lock()
        defer { lock.unlock() }
        for (name, array) in diffs {
            guard let seed = seeds[name] else { continue }
            executable.pointer(to: seed.buffer).update(from: array.data, count: min(array.count, seed.count))
        }
    }

    /// Per-step seconds of one pass over the current arena contents, split into forward and
    /// backward steps and labelled with their layer (for `swiftjit time --backward`).
    public func profileSteps() -> (forward: [(layer: String, seconds: Double)], backward: [(layer: String, seconds: Double)]) {
        lock.lock()
        defer { lock.unlock() }
        let times = executable.profileSteps()
        let labelled = zip(executable.steps.map(\.label), times).map { (layer: $0.0, seconds: $0.1) }
        return (Array(labelled[..<forwardStepCount]), Array(labelled[forwardStepCount...]))
    }
}
