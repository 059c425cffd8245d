import CaffeFormat
import Graph
import NumPy
import Runtime

/// One learnable parameter blob of a training net: persistent data and diff buffers outside the
/// arena, shared by every layer that names it in `param { name }`.
struct ParameterSlot {
    /// `layer/index` of the owner (the first layer using the blob), for errors.
    var name: String
    var shape: [Int]
    var data: BufferID
    var diff: BufferID
    var lrMult: Float
    var decayMult: Float
}

/// The state of lowering one graph into a training `Program`: the forward `Lowering` (whose
/// kernels and buffers forward layers reuse), the parameter slots, and the diff buffer of each
/// value. Forward lowerings live in `Training*Forward` files, backward ones in `Gradient*` files.
///
/// Invariants: forward steps come first, in net order, then backward steps in reverse net order.
/// Every value's diff is written by at most one layer (its one reader — the graph has Caffe's
/// Split layers) and is overwritten, never accumulated; parameter diffs accumulate (`+=`), which
/// both sums shared parameters' gradients and implements `iter_size`.
struct TrainingLowering {
    var base: Lowering
    let analysis: BackwardAnalysis
    private(set) var slots: [ParameterSlot] = []
    /// Per node, per parameter blob: its slot.
    private(set) var slotOf: [[Int]] = []
    /// Diff buffers of values written so far by backward (or seeded).
    var diffOf: [ValueID: BufferID] = [:]
    /// Diff buffers callers seed (net outputs, loss tops): persistent.
    var seeds: [ValueID: BufferID] = [:]
    /// Data-source tops, fed by the caller; constant DummyData tops have defaults.
    var feeds: [ValueID] = []
    var feedDefaults: [ValueID: [Float]] = [:]
    /// Forward steps of each node.
    var forwardSteps: [Range<Int>] = []
    /// MAX pooling layers whose forward saved each output's arg-max (Caffe's `max_idx_`), for
    /// their backward to scatter through: the buffer of flat in-plane indices, as floats.
    var savedArgmax: [NodeID: BufferID] = [:]
    /// A persistent 4-float buffer holding this run's 64-bit random key (dropout masks).
    var randomKey: BufferID
    /// Why backward cannot run, when a layer that must run it has none (Caffe aborts there).
    var backwardProblems: [Diagnostic] = []
    /// Parameter slots that forward writes (BatchNorm running statistics).
    var slotsWrittenByForward = Set<Int>()
    /// BatchNorm layers whose Scale's backward was folded into theirs (`lowerScaleBackward`): the
    /// scale factors γ and the per-channel sums Σ dy·y, Σ dy of the Scale's top diff, which is
    /// then the BatchNorm's top diff as it stands, before γ.
    var foldedScales: [NodeID: (scale: Operand, sums: Operand)] = [:]

    var graph: Graph { base.graph }

    init(graph: Graph, parameters: [String: [NDArray]], cache: KernelCache, parallelThreshold: Int) throws {
        analysis = try BackwardAnalysis(graph)
        var program = Program()
        randomKey = program.addPersistent("random key", count: 4)
        var given: [String: [NDArray]] = [:]
        var ownerOf: [String: Int] = [:]
        var slots: [ParameterSlot] = []
        var values: [[Float]] = []
        var hasLr: [Bool] = [], hasDecay: [Bool] = []
        for node in graph.nodes {
            var row: [Int] = []
            let supplied = parameters[node.name] ?? []
            for (k, info) in node.parameters.enumerated() {
                guard let count = info.shape.count else {
                    throw Diagnostic("parameter \(k) (\(info.role)) has shape \(info.shape), which is not fully known", at: node.location, layer: node.name)
                }
                let spec = k < node.layer.param.count ? node.layer.param[k] : Caffe_ParamSpec()
                let blob = k < supplied.count ? supplied[k] : nil
                if let blob, blob.count != count {
                    throw Diagnostic("parameter \(k) (\(info.role)) should be \(info.shape) = \(count) values, but the weights give \(blob.shape) = \(blob.count)",
                                     at: node.location, layer: node.name, hint: "the weights were trained for a different net or input size")
                }
                if let share = info.shareName, let owner = ownerOf[share] {
                    guard slots[owner].shape.reduce(1, *) == count else {
                        throw Diagnostic("cannot share parameter '\(share)' owned by \(slots[owner].name): its shape is \(slots[owner].shape), this layer expects \(info.shape.dims)",
                                         at: node.location, layer: node.name, hint: "shared parameters must have the same shape")
                    }
                    if spec.hasLrMult {
                        if hasLr[owner], slots[owner].lrMult != spec.lrMult {
                            throw Diagnostic("shared parameter '\(share)' has mismatched lr_mult (\(spec.lrMult) here, \(slots[owner].lrMult) in \(slots[owner].name))",
                                             at: node.location, layer: node.name, hint: "give every layer sharing it the same lr_mult")
                        }
                        hasLr[owner] = true
                        slots[owner].lrMult = spec.lrMult
                    }
                    if spec.hasDecayMult {
                        if hasDecay[owner], slots[owner].decayMult != spec.decayMult {
                            throw Diagnostic("shared parameter '\(share)' has mismatched decay_mult", at: node.location, layer: node.name,
                                             hint: "give every layer sharing it the same decay_mult")
                        }
                        hasDecay[owner] = true
                        slots[owner].decayMult = spec.decayMult
                    }
                    // Caffe copies trained layers in net order into the one shared blob: the last wins.
                    if let blob { values[owner] = blob.data }
                    row.append(owner)
                } else {
                    guard let blob else {
                        throw Diagnostic("needs \(node.parameters.count) parameter blob\(node.parameters.count == 1 ? "" : "s"), but the weights give \(supplied.count)",
                                         at: node.location, layer: node.name, hint: "initialize the net's parameters (fillers) or load a .caffemodel with a layer named '\(node.name)'")
                    }
                    if let share = info.shareName { ownerOf[share] = slots.count }
                    row.append(slots.count)
                    slots.append(ParameterSlot(name: "\(node.name)/\(k)", shape: info.shape.dims, data: 0, diff: 0,
                                               lrMult: info.lrMult, decayMult: info.decayMult))
                    values.append(blob.data)
                    hasLr.append(spec.hasLrMult || node.kind == .batchNorm)
                    hasDecay.append(spec.hasDecayMult)
                }
            }
            slotOf.append(row)
        }
        for index in slots.indices {
            slots[index].data = program.addPersistent(slots[index].name, count: values[index].count, values: values[index])
            slots[index].diff = program.addPersistent(slots[index].name + " diff", count: values[index].count)
        }
        for node in graph.nodes where !node.parameters.isEmpty {
            given[node.name] = slotOf[node.id].enumerated().map { k, slot in NDArray(shape: node.parameters[k].shape.dims, data: values[slot]) }
        }
        self.slots = slots

        var lowered = graph
        for node in graph.nodes where !TrainingLowering.runsInPlace(node) {
            for output in node.outputs { lowered.values[output].isInPlace = false }
        }
        base = Lowering(graph: lowered, parameters: given, cache: cache, kept: Set(graph.values.map(\.id)), parallelThreshold: parallelThreshold)
        base.program = program
        base.parameterBuffers = slotOf.map { row in row.map { slots[$0].data } }
    }

    /// Whether a prototxt in-place layer may overwrite its bottom: its backward reads only its top
    /// (or a mask), so the overwritten bottom is not needed. Others get a separate top buffer.
    static func runsInPlace(_ node: Node) -> Bool {
        switch node.kind {
        case .relu: return node.layer.reluParam.negativeSlope >= 0
        case .sigmoid, .tanh, .dropout, .batchNorm, .elu, .exp, .mvn: return true
        default: return false
        }
    }

    // MARK: Values and diffs

    func shape(_ value: ValueID) -> [Int] { graph.values[value].shape.dims }
    func count(_ value: ValueID) -> Int { graph.values[value].shape.count ?? 0 }
    mutating func data(_ value: ValueID) -> Operand { Operand(base.buffer(value)) }

    /// Parameter `k` of `node`: its data and diff.
    func parameter(_ node: Node, _ k: Int) -> (data: Operand, diff: Operand) {
        let slot = slots[slotOf[node.id][k]]
        return (Operand(slot.data), Operand(slot.diff))
    }

    /// Whether `node`'s backward accumulates parameter `k`'s diff.
    func propagatesToParameter(_ node: Node, _ k: Int) -> Bool {
        analysis.parameterPropagatesDown[node.id][k]
    }

    /// The diff of `value` for reading in backward: what its reader wrote, the caller's seed, or —
    /// when nothing writes it (Caffe's diff stays zero) — a zero-filled buffer.
    mutating func topDiff(_ node: Node, _ value: ValueID) throws -> Operand {
        if let id = diffOf[value] { return Operand(id) }
        let id = base.program.addBuffer(graph.values[value].name + " diff", count: max(1, count(value)))
        try base.emitFill(node, Operand(id), count: count(value), value: 0)
        diffOf[value] = id
        return Operand(id)
    }

    /// Whether `value`'s diff was written by its reader's backward (or is a seed).
    func hasDiff(_ value: ValueID) -> Bool { diffOf[value] != nil }

    /// A fresh buffer for the diff of `node`'s bottom `j`, or `reusing` top diff buffer when the
    /// layer may write the bottom diff over the top diff (element-wise backward) and nothing else
    /// reads that top diff afterwards (not a seed, not kept for callers).
    mutating func bottomDiff(_ node: Node, _ j: Int, reusing top: Operand? = nil) -> Operand {
        let value = node.inputs[j]
        if let top, top.offset == 0, !keepsAllDiffs, !base.program.buffers[top.buffer].isPersistent,
           base.program.buffers[top.buffer].count == max(1, count(value)) {
            diffOf[value] = top.buffer
            return top
        }
        let id = base.program.addBuffer(graph.values[value].name + " diff", count: max(1, count(value)))
        diffOf[value] = id
        return Operand(id)
    }

    /// When callers read every diff back, no diff is overwritten in place.
    var keepsAllDiffs = false
    /// Runs "Python" layers (host steps); nil: such layers are unsupported.
    var hostLayer: HostLayerFunction?

    // MARK: Common kernels

    /// `y[i] = x[i]` (or `y[i] += x[i]` when `accumulate`).
    mutating func emitCopy(_ node: Node, from source: Operand, to target: Operand, count: Int, accumulate: Bool = false) throws {
        try base.emitKernel(node, "copy accumulate=\(accumulate)", operands: [source, target], tasks: count, work: count) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { i in y[i] = accumulate ? y[i] + x[i] : x[i] }
        }
    }

    /// Caffe's `Split` backward: `dx = dy₀ + dy₁ (+ dy₂ …)`, added left to right.
    mutating func emitSum(_ node: Node, _ sources: [Operand], to target: Operand, count: Int) throws {
        try base.emitKernel(node, "sum \(sources.count)", operands: sources + [target], tasks: count, work: count * sources.count) { b in
            let y = b.operand(sources.count)
            b.forEachTask { i in
                var total = b.operand(0)[i]
                for k in 1..<max(1, sources.count) { total = total + b.operand(k)[i] }
                y[i] = total
            }
        }
    }

    // MARK: Parameters in forward lowerings

    /// After `base` lowered `node`'s forward (adding buffers from `firstBuffer` on): the inference
    /// lowerings read parameters through `Lowering.parameter` and `derivedConstant`, which training
    /// binds to the persistent parameter buffers; a constant made any other way would be computed
    /// from the parameters once and go stale as the solver updates them, so it is refused (kernels'
    /// run-time extents, `KernelExtents`, come from shapes and are allowed).
    func checkNoConstants(_ node: Node, firstBuffer: Int) throws {
        for id in firstBuffer..<base.program.buffers.count where base.program.buffers[id].isConstant && !base.definitionConstants.contains(id) {
            throw Diagnostic("\(node.kind.rawValue)'s forward precomputes '\(base.program.buffers[id].name)' from its parameters, so it cannot be trained yet",
                             at: node.location, layer: node.name)
        }
    }

    /// A layer the training compiler cannot lower (yet), as a diagnostic naming it.
    func unsupported(_ node: Node, _ why: String, hint: String? = nil) -> Diagnostic {
        Diagnostic("\(node.kind.rawValue) cannot be trained yet: \(why)", at: node.location, layer: node.name, hint: hint)
    }
}
