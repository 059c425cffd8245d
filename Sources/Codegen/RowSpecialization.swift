import Foundation
import Graph
import Runtime

/// Where a compiled schedule learns a data-dependent row count: after the step that computes it
/// (Filter's selection kernel, DetectionOutput's NMS), before the rows are copied into the tops.
///
/// Any layer can own one (`Graph.rowOwnership(of:inputs:outputs:)` says which layers do, which
/// axis of which tops the count sets, and the most rows it can be): its lowering stores the count
/// as a float in a buffer, appends a `RowGuard` naming the layer, the count operand and the axis,
/// with `step` the next step's index and `rows` the count its tops have in the graph being
/// compiled, then emits the steps that fill the tops for exactly `rows`.
///
/// Everything before `step` is the *prefix*: the same steps over the same buffers (id for id) in
/// every variant of the net, whatever row counts the variants were compiled for, because the
/// layers before the owner do not depend on its count. `finishRowGuards` fills in what a
/// variant switch must carry over.
struct RowGuard: Sendable {
    /// The owning layer (Filter, DetectionOutput, …), for messages.
    var layer: String
    var node: NodeID
    /// The axis of the owner's tops that the count sets (Filter: 0; DetectionOutput: 2).
    var axis: Int
    /// Steps `0..<step` compute the count; the steps from `step` on were compiled for `rows`.
    var step: Int
    /// Where the selection kernel stored the count (a float holding an integer).
    var count: Operand
    /// The row count the steps from `step` on were compiled for.
    var rows: Int
    /// How many buffers were declared before the guard: the prefix's, the same in every variant.
    var prefixBuffers: Int
    /// Activation buffers (all in the prefix) whose contents the steps from `step` on need, with
    /// their sizes: what a switch to another variant copies.
    var live: [(buffer: BufferID, count: Int)] = []
    /// A digest of the prefix (its buffer declarations and step labels), to check that two
    /// variants really share it before moving state from one to the other.
    var prefixDigest = 0
}

extension Lowering {
    /// Completes every row guard once the whole program (forward, and backward for training) is
    /// built, and declares each as a `Checkpoint` so the memory plan keeps its live buffers intact
    /// across it. Live across a guard are the prefix buffers some step before it and some step
    /// after it touch (including inputs read later, kept outputs, and, in training, the values
    /// backward reads), plus the buffers of every value made before the owner and read by a layer
    /// from the owner on — those even when this variant's later steps skip them (a kernel over 0
    /// rows is not emitted), so that a variant that skipped them can still hand them over.
    mutating func finishRowGuards() {
        guard !rowGuards.isEmpty else { return }
        let program = self.program
        var first = [Int](repeating: Int.max, count: program.buffers.count)
        var last = [Int](repeating: -1, count: program.buffers.count)
        for (index, step) in program.steps.enumerated() {
            for operand in step.action.operands {
                first[operand.buffer] = min(first[operand.buffer], index)
                last[operand.buffer] = max(last[operand.buffer], index)
            }
        }
        for input in program.inputs { first[input.buffer] = -1 }
        for output in program.outputs { last[output.buffer] = Int.max }
        for k in rowGuards.indices {
            let guardStep = rowGuards[k].step, node = rowGuards[k].node
            var live = Set((0..<rowGuards[k].prefixBuffers).filter { first[$0] < guardStep && last[$0] >= guardStep })
            for value in graph.values where (value.producer ?? -1) < node && value.consumers.contains(where: { $0 >= node }) {
                if let buffer = bufferOf[value.id] { live.insert(buffer) }
            }
            live.insert(rowGuards[k].count.buffer)
            let sorted = live.filter { program.buffers[$0].isActivation }.sorted()
            rowGuards[k].live = sorted.map { ($0, program.buffers[$0].count) }
            var hasher = Hasher()
            for declaration in program.buffers[..<rowGuards[k].prefixBuffers] {
                hasher.combine(declaration.name)
                hasher.combine(declaration.count)
                hasher.combine(declaration.isActivation)
            }
            for step in program.steps[..<guardStep] { hasher.combine(step.label) }
            rowGuards[k].prefixDigest = hasher.finalize()
            self.program.checkpoints.append(Checkpoint(step: guardStep, live: sorted))
        }
    }

}

/// A net compiled for one vector of data-dependent row counts: its executable and its row guards.
protocol RowVariant {
    var executable: Executable { get }
    var rowGuards: [RowGuard] { get }
}

/// Runs a net with data-dependent rows (Filter, DetectionOutput) the way Caffe does — every Forward
/// resizes such a layer's tops to what the data gave and every layer below reshapes — on top of
/// schedules compiled for fixed shapes.
///
/// The design: a net is compiled for one row count per row owner (at first Caffe's setup count:
/// a Filter's N rows, DetectionOutput's one). Its schedule has a `RowGuard` right after each
/// owner has stored its count. `advance` runs the schedule up to each guard and reads the count. When it equals
/// the compiled one — the usual case, and the only cost a run pays: one float read per owner —
/// it goes on. When it differs, the net is re-specialized: the graph's shapes are re-inferred
/// for the new count (`Graph.specializingRows`) and compiled again, which costs lowering
/// and memory planning only, since the kernel cache already holds every kernel whose shapes did
/// not change (the whole prefix, and everything not downstream of the owner); then the state the
/// prefix computed is copied into the new variant (`RowGuard.live`) and the run continues there.
/// The prefix is never run twice: its side effects (TRAIN BatchNorm's running statistics, this
/// run's dropout masks) happen once, as in Caffe. Variants are kept, most recently used first
/// (`capacity` of them), so counts that come back cost a copy of the prefix's live state, not a
/// compilation; the next run starts in the variant the last one ended in. Training variants share
/// their parameters, diffs and statistics (`Executable(sharingBuffersWith:)`), so the solver
/// updates one set of weights whichever variant ran.
///
/// A net without row owners has no guards and never gets a specializer: nothing changes for it.
///
///     let (variant, resumeAt) = try specializer.advance(feed: …)   // inputs already fed to `current`
///     variant.executable.execute(steps: resumeAt..<variant.executable.steps.count)
final class RowSpecializer<Variant: RowVariant> {
    /// How many variants are kept compiled (the current one is never dropped).
    let capacity: Int
    /// The variant the next run starts in (the one the last run ended in).
    private(set) var current: Variant
    private var variants: [[Int]: Variant] = [:]
    /// Keys of `variants`, least recently used first.
    private var recency: [[Int]] = []
    private let make: ([Int], Int) throws -> Variant
    /// Variants compiled since creation (the first not counted), for tests and reports.
    private(set) var specializations = 0

    /// `first` is the variant compiled from the graph as built; `make(rows, k)` compiles the
    /// variant for a row-count vector (one count per row owner, in net order, `Graph.rowOwnerNodes`) whose counts from
    /// index `k` on are guesses it may lower (`Graph.specializingRows(_:guessesFrom:)`).
    init(_ first: Variant, capacity: Int = 8, make: @escaping ([Int], Int) throws -> Variant) {
        self.capacity = max(1, capacity)
        current = first
        self.make = make
        let key = first.rowGuards.map(\.rows)
        variants[key] = first
        recency = [key]
    }

    /// The row counts `current` was compiled for.
    var currentRows: [Int] { current.rowGuards.map(\.rows) }

    /// Runs `current` (whose inputs the caller has fed) from its first step through every row
    /// guard, switching to the variant for each observed count that differs, and returns the
    /// variant that now holds the run's state and the step to resume it at: its steps from there
    /// on are specialized for this run's counts. It becomes `current`. On a switch, `feed(next,
    /// first)` must write the inputs whose buffers are not in the prefix (ids from `first` on: an
    /// Input layer written after the owner) into `next`; the prefix's are copied over.
    func advance(feed: (Variant, BufferID) throws -> Void) throws -> (variant: Variant, resumeAt: Int) {
        var variant = current
        var start = 0
        for k in variant.rowGuards.indices {
            let rowGuard = variant.rowGuards[k]
            variant.executable.execute(steps: start..<rowGuard.step)
            let observed = Int(variant.executable.pointer(to: rowGuard.count.buffer)[rowGuard.count.offset])
            if observed != rowGuard.rows {
                var key = variant.rowGuards.map(\.rows)
                key[k] = observed
                let next = try self.variant(for: key, known: k + 1)
                try RowSpecializer.transfer(at: k, from: variant, to: next)
                try feed(next, next.rowGuards[k].prefixBuffers)
                variant = next
            }
            start = rowGuard.step
        }
        current = variant
        return (variant, start)
    }

    /// The variant for `key`, whose first `known` counts are observed and the rest guesses,
    /// compiled on a miss (the guesses possibly lowered to what the owners can give); drops
    /// the least recently used variants beyond `capacity`.
    private func variant(for key: [Int], known: Int) throws -> Variant {
        if let cached = variants[key] { return use(key, cached) }
        let made = try make(key, known)
        let compiled = made.rowGuards.map(\.rows)
        guard compiled.count == key.count, compiled[..<known] == key[..<known] else {
            throw CodegenError("re-specializing for data-dependent rows \(key)", "the compiled variant guards rows \(compiled)")
        }
        if let cached = variants[compiled] { return use(compiled, cached) }
        specializations += 1
        variants[compiled] = made
        let currentKey = currentRows
        recency.append(compiled)
        while variants.count > capacity, let evicted = recency.first(where: { $0 != compiled && $0 != currentKey }) {
            recency.removeAll { $0 == evicted }
            variants[evicted] = nil
        }
        return made
    }

    /// Marks `key` as the most recently used and returns its variant.
    private func use(_ key: [Int], _ variant: Variant) -> Variant {
        recency.removeAll { $0 == key }
        recency.append(key)
        return variant
    }

    /// Copies the state guard `k` of `old` needs into `new`, after checking that both share the
    /// prefix and that everything `new` needs was kept intact by `old`'s memory plan.
    private static func transfer(at k: Int, from old: Variant, to new: Variant) throws {
        let (a, b) = (old.rowGuards[k], new.rowGuards[k])
        let kept = Dictionary(uniqueKeysWithValues: a.live.map { ($0.buffer, $0.count) })
        guard a.step == b.step, a.prefixBuffers == b.prefixBuffers, a.prefixDigest == b.prefixDigest, a.count == b.count,
              b.live.allSatisfy({ kept[$0.buffer] == $0.count }) else {
            throw CodegenError("continuing after \(a.layer) gave \(b.rows) rows on axis \(a.axis)",
                               "the variant compiled for \(b.rows) rows does not share the schedule before \(a.layer) with the one for \(a.rows)")
        }
        for (buffer, count) in b.live {
            new.executable.pointer(to: buffer).update(from: old.executable.pointer(to: buffer), count: count)
        }
    }
}
