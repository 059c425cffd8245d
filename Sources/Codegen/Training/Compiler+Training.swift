import CaffeFormat
import Foundation
import Graph
import NumPy
import Runtime

/// Training's half of `Compiler`: compiles a TRAIN- or TEST-phase `Graph` built with Caffe's Split layers
/// (`GraphBuilder(phase:, insertsSplits: true)`) into a `TrainingNet`: forward steps (TRAIN
/// semantics when the graph's phase is TRAIN: batch statistics, dropout masks), then backward
/// steps for exactly the layers, bottoms and parameters Caffe's `Net::Init` marks as needing
/// backward (`BackwardAnalysis`), all over one planned arena plus persistent parameter buffers.
///
/// Forward layers are the inference compiler's lowerings (`Lowering`), reading the parameters'
/// persistent buffers; what they derive from parameters (packed panels, Winograd filters) is
/// derived again before each forward. Backward kernels are JIT'd like forward ones (one per op and
/// shape, cached, compiled in one batch with the forward kernels once every layer is lowered);
/// convolution gradients run image by image across the threads (an item loop over the JIT'd panel
/// GEMM: the input diff into columns, then col2im; the weight gradient as dWᵀ += col·dyᵀ into each
/// thread's partial sum, added up in thread order). Every value gets its own diff buffer, planned by lifetime like activations; forward values backward reads stay
/// live until then, the rest are reused.
///
///     let compiler = try Compiler()
///     let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(definition)
///     let net = try compiler.compileTraining(graph: graph, parameters: initialValues)
///     let (loss, _) = try net.run(["data": images, "label": labels], backward: true)
extension Compiler {
    /// Compiles `graph` for training. `parameters` holds every parameter blob by layer name in
    /// Caffe's order (shared blobs may be given by any layer sharing them). `keepingAllBlobs`
    /// keeps every blob's value and diff readable after a run (`blob`, `blobDiff`; for tests and
    /// debugging), at the cost of memory reuse. `seed` seeds dropout masks. Throws a `Diagnostic`
    /// naming the layer for a layer type that cannot be trained yet, missing or misshapen
    /// parameters, a blob shape not fully known, or a graph without Split layers.
    ///
    /// A net with data-dependent rows (Filter, DetectionOutput) is compiled for Caffe's setup shapes and re-specializes
    /// itself when a run selects another count (`RowSpecializer`); its variants share one set of
    /// parameters, diffs and statistics.
    ///
    /// With `sharingParametersWith`, a parameter blob of a layer whose name and blob shape match a
    /// layer of `other` uses `other`'s parameter memory (Caffe's `ShareTrainedLayersWith`: data
    /// only; diffs stay this net's own). `hostLayer` runs "Python" layers (host steps in the schedule).
    public func compileTraining(graph: Graph, parameters: [String: [NDArray]], keepingAllBlobs: Bool = false,
                        seed: UInt64 = 1701, sharingParametersWith other: TrainingNet? = nil,
                        hostLayer: HostLayerFunction? = nil) throws -> TrainingNet {
        let first = try buildTraining(graph: graph, parameters: parameters, keepingAllBlobs: keepingAllBlobs, sibling: nil, sharing: other,
                              hostLayer: hostLayer)
        let rows = first.layout.rowGuards.isEmpty ? nil : RowSpecializer(first.layout) { [self] rows, guessesFrom in
            // The variant trains the first one's parameter buffers: the arrays only give shapes.
            let specialized = try graph.specializingRows(rows, guessesFrom: guessesFrom)
            let shapes = Dictionary(uniqueKeysWithValues: graph.nodes.filter { !$0.parameters.isEmpty }.map { node in
                (node.name, node.parameters.map { NDArray(shape: $0.shape.dims, repeating: 0) })
            })
            let variant = try buildTraining(graph: specialized, parameters: shapes, keepingAllBlobs: keepingAllBlobs, sibling: first.layout.executable)
            let buffers = [first.randomKey] + first.slots.flatMap { [$0.data, $0.diff] }
            guard variant.slots.count == first.slots.count,
                  buffers.allSatisfy({ variant.layout.executable.pointer(to: $0) == first.layout.executable.pointer(to: $0) }) else {
                throw CodegenError("re-specializing for data-dependent rows \(rows)", "the variant does not share the net's parameter buffers")
            }
            return variant.layout
        }
        return TrainingNet(graph: graph, layout: first.layout, cache: cache, kernels: first.layout.program.kernels, phases: first.phases,
                           compileSeconds: first.compileSeconds, slots: first.slots, slotOf: first.slotOf,
                           randomKey: first.randomKey, seed: seed, statisticSlots: first.statisticSlots, rows: rows)
    }

    /// What `buildTraining` makes: one variant's layout, and the parameter bookkeeping all variants share.
    fileprivate struct Built {
        var layout: TrainingNet.Layout
        var slots: [ParameterSlot]
        var slotOf: [[Int]]
        var randomKey: BufferID
        var statisticSlots: Set<Int>
        /// Where this variant's compile time went, and all of it.
        var phases: CompilePhases
        var compileSeconds: Double
    }

    /// Lowers and plans `graph` for its shapes; with a `sibling` (a net's first variant), its
    /// persistent buffers and equal constants are the sibling's.
    fileprivate func buildTraining(graph: Graph, parameters: [String: [NDArray]], keepingAllBlobs: Bool, sibling: Executable?,
                       sharing other: TrainingNet? = nil, hostLayer: HostLayerFunction? = nil) throws -> Built {
        let start = DispatchTime.now().uptimeNanoseconds
        try requireKnownShapes(graph, hint: "give the net's data layers concrete shapes")
        var lowering = try TrainingLowering(graph: graph, parameters: parameters, cache: cache, parallelThreshold: options.parallelThreshold)
        lowering.keepsAllDiffs = keepingAllBlobs
        lowering.hostLayer = hostLayer
        configure(&lowering.base, training: true)
        for node in graph.nodes {
            try located(node) { try lowering.lowerForward(node) }
        }
        let forwardCount = lowering.base.program.steps.count
        try lowering.declareSeeds()
        var backwardSteps = Array(repeating: 0..<0, count: graph.nodes.count)
        for node in graph.nodes.reversed() {
            let first = lowering.base.program.steps.count
            try located(node) { try lowering.lowerBackward(node) }
            backwardSteps[node.id] = first..<lowering.base.program.steps.count
        }

        // Readable blobs: the latest version of each name (all, or the net outputs and feeds).
        var latest: [String: ValueID] = [:], order: [String] = []
        for value in graph.values {
            if latest[value.name] == nil { order.append(value.name) }
            latest[value.name] = value.id
        }
        let outputs = graph.outputs
        let readable = keepingAllBlobs ? order.map { latest[$0]! } : outputs
        var values: [String: TrainingNet.Blob] = [:]
        for id in readable + lowering.feeds {
            let value = graph.values[id]
            let buffer = lowering.base.buffer(id)
            values[value.name] = TrainingNet.Blob(buffer: buffer, shape: value.shape.dims)
            lowering.base.program.outputs.append(BlobBinding(name: value.name, shape: value.shape.dims, buffer: buffer))
        }
        // Diffs: Caffe's blob diff after backward is the one written last, the earliest version's.
        var diffs: [String: TrainingNet.Blob] = [:]
        for value in graph.values where diffs[value.name] == nil {
            guard let buffer = lowering.diffOf[value.id] else { continue }
            let isSeed = lowering.seeds[value.id] != nil
            guard keepingAllBlobs || isSeed else { continue }
            diffs[value.name] = TrainingNet.Blob(buffer: buffer, shape: value.shape.dims)
            if lowering.base.program.buffers[buffer].isActivation {
                lowering.base.program.outputs.append(BlobBinding(name: value.name + " diff", shape: [max(1, value.shape.count ?? 1)], buffer: buffer))
            }
        }
        var seeds: [String: TrainingNet.Blob] = [:]
        for (id, buffer) in lowering.seeds { seeds[graph.values[id].name] = TrainingNet.Blob(buffer: buffer, shape: graph.values[id].shape.dims) }
        var feeds: [String: TrainingNet.Feed] = [:]
        for id in lowering.feeds {
            let value = graph.values[id]
            feeds[value.name] = TrainingNet.Feed(blob: TrainingNet.Blob(buffer: lowering.base.buffer(id), shape: value.shape.dims),
                                                 defaultValues: lowering.feedDefaults[id])
        }
        var losses: [(TrainingNet.Blob, Float)] = []
        for node in graph.nodes {
            for (k, output) in node.outputs.enumerated() where k < node.lossWeights.count && node.lossWeights[k] != 0 {
                guard let blob = values[graph.values[output].name] else { continue }
                losses.append((blob, node.lossWeights[k]))
            }
        }
        let checks = graph.nodes.map { node in
            (layer: node.name, tops: node.outputs.map { (name: graph.values[$0].name, buffer: lowering.base.buffer($0), count: graph.values[$0].shape.count ?? 0) })
        }
        // Caffe's Filter backward divides by the top's row count: with no row selected it crashes.
        let zeroRowProblems = lowering.base.rowGuards.compactMap { rowGuard -> Diagnostic? in
            let node = graph.nodes[rowGuard.node]
            guard node.kind == .filter, rowGuard.rows == 0, node.inputs.indices.dropLast().contains(where: { lowering.analysis.writesBottomDiff(node, $0) }) else { return nil }
            return Diagnostic("Filter selected no rows, so it has no gradient to pass down: Caffe's Filter backward divides by the selected row count (0) and crashes",
                              at: node.location, layer: node.name,
                              hint: "make every batch select at least one row, or run this batch forward only (backward: false)")
        }

        if keepingAllBlobs {
            // Callers read and write any blob between partial passes (pycaffe's forward(start=),
            // backward(end=)): no blob or diff may share arena space with a scratch buffer.
            let pinned = (values.values.map(\.buffer) + diffs.values.map(\.buffer) + lowering.diffOf.values)
                .filter { lowering.base.program.buffers[$0].isActivation }
            lowering.base.program.checkpoints.append(Checkpoint(step: 0, live: Array(Set(pinned)).sorted()))
        }
        let program = try finish(&lowering.base, started: start)
        var adopted: [BufferID: AlignedBuffer] = [:]
        if let other {
            for node in graph.nodes {
                for (k, parameter) in node.parameters.enumerated() {
                    guard let memory = other.parameterMemory(layer: node.name, index: k, shape: parameter.shape.dims) else { continue }
                    adopted[lowering.slots[lowering.slotOf[node.id][k]].data] = memory
                }
            }
        }
        let executableStart = DispatchTime.now().uptimeNanoseconds
        let executable = try program.makeExecutable(sharingBuffersWith: sibling, adopting: adopted)
        let executableSeconds = Double(DispatchTime.now().uptimeNanoseconds - executableStart) / 1e9
        var phases = program.phases
        phases.executable += executableSeconds
        let layout = TrainingNet.Layout(program: program, executable: executable, forwardStepCount: forwardCount, rowGuards: lowering.base.rowGuards,
                                        feeds: feeds, outputs: outputs.map { graph.values[$0].name }, values: values, diffs: diffs,
                                        seeds: seeds, losses: losses, nodeSteps: lowering.forwardSteps, backwardNodeSteps: backwardSteps, checks: checks,
                                        backwardProblems: lowering.backwardProblems, zeroRowProblems: zeroRowProblems,
                                        recurrentStates: lowering.base.recurrentStates.map { ($0, lowering.base.program.buffers[$0].count) },
                                        valueDiffs: lowering.diffOf)
        return Built(layout: layout, slots: lowering.slots, slotOf: lowering.slotOf, randomKey: lowering.randomKey,
                     statisticSlots: lowering.slotsWrittenByForward, phases: phases,
                     compileSeconds: program.compileSeconds + executableSeconds)
    }
}
