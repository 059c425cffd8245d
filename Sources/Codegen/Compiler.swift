import CaffeFormat
import Foundation
import Graph
import NumPy
import Runtime

/// Which blobs a compiled net keeps readable after a run. Kept blobs hold their final value (the
/// last in-place version) and are never overwritten by memory reuse; the others share the arena.
public enum BlobSelection: Sendable {
    /// Every blob of the net (what Caffe's `net.blobs` shows), inputs included.
    case all
    /// The net's outputs: blobs no layer reads.
    case outputs
    /// These blobs, by name.
    case named([String])
}

/// What every compilation of a `Compiler` shares, inference and training alike: one option set,
/// read by the lowerings of both (training forward runs the inference lowerings, so a choice such
/// as Winograd or the panel GEMM applies to both passes). Defaults suit the machine the compiler
/// runs on; tests and benchmarks change them to force one path.
public struct CompileOptions: Sendable {
    /// Elements a kernel must touch before it is split across threads.
    public var parallelThreshold = 1 << 15
    /// When convolutions build their im2col columns band by band.
    public var convolutionBanding = ConvolutionBanding()
    /// When 3×3 convolutions run as Winograd; nil: always im2col + GEMM.
    public var winograd: WinogradPolicy? = WinogradPolicy()
    /// Whether a batch-1 Concat's bottoms are computed straight into its top instead of copied.
    /// Inference only: training's backward reads each bottom's own buffer.
    public var concatInPlace = true
    /// Whether convolutions on the GEMM path (not Winograd, depthwise or banded) multiply by the
    /// JIT'd `PanelGemm` instead of OpenBLAS + epilogue, where the JIT's features (the host's, or
    /// fewer) allow it (`PanelGemm.isNative`: AVX-512, or AVX2 + FMA); its tile follows the vector
    /// width. In training the panels are packed from the parameters before each forward.
    public var panelGemms = true
    /// Whether an InnerProduct over a few rows streams weight panels (`InnerProductPanels`).
    public var innerProductPanels = true

    public init() {}
}

/// The one front door of the compiler, for inference and training: lowers a shape-inferred `Graph`
/// into JIT'd, shape-specialized kernels and OpenBLAS GEMMs, compiles the kernels, plans one
/// arena, and returns a `CompiledProgram`, the one compiled-program type. For inference
/// (`compileProgram`, `compile`) the program's constants (weights, packed panels, Winograd
/// filters) live in a `ConstantStore` shared by every execution context (`CompiledNet`); for
/// training (`compileTraining`, in Compiler+Training.swift) the same lowerings read parameters
/// from persistent buffers, backward steps follow the forward ones, and the program's one context
/// is a `TrainingNet`.
///
/// The compiler owns the kernel cache (and through it the JIT), the thread pool and the BLAS
/// bridge, and passes them to everything it builds; compiling a second net, or the same net for a
/// new input shape, or a training net after its deploy net, reuses every kernel whose code is
/// unchanged. Every layer is lowered first; the kernels the net needs are then compiled as one
/// batch (looked up in the cache's disk cache, the rest compiled on several threads, all linked
/// at once), before memory is planned.
///
///     let compiler = try Compiler()
///     let net = try compiler.compile(graph: graph, parameters: try CaffeParameters.arrays(from: weights))
///     let outputs = try net.run(inputs: ["data": image])
public final class Compiler: @unchecked Sendable {
    public let cache: KernelCache
    public let pool: ThreadPool
    public let blas: BLAS
    /// The options of every compilation from here on.
    public var options = CompileOptions()

    /// A compiler for this machine: one pool thread per core by default. OpenBLAS runs on one
    /// thread; executables split large GEMMs across the pool themselves, so kernels and GEMMs share
    /// one set of threads and never compete for the cores.
    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, cache: KernelCache? = nil) throws {
        self.cache = try cache ?? KernelCache()
        pool = ThreadPool(threads: threads)
        blas = BLAS(threads: 1)
    }

    /// A compiler whose kernels are generated and chosen for `cpuFeatures` only, e.g. the AVX2
    /// path on an AVX-512 host: `Compiler(cpuFeatures: CPUFeatures.host().applying("-avx512f"))`.
    public convenience init(threads: Int = ProcessInfo.processInfo.activeProcessorCount, cpuFeatures: CPUFeatures,
                            disk: KernelDiskCache? = nil) throws {
        try self.init(threads: threads, cache: KernelCache(cpuFeatures: cpuFeatures, disk: disk))
    }

    /// Compiles `graph` for its inferred shapes. `parameters` maps layer names to their blobs in
    /// Caffe's order (weights, bias, …), e.g. from `CaffeParameters.arrays(from:)`. Throws a
    /// `Diagnostic` naming the layer for a layer type that cannot run yet, missing or misshapen
    /// weights, or a blob whose shape is not fully known.
    ///
    /// A net with data-dependent rows (Filter, DetectionOutput) is compiled for Caffe's setup shapes and re-specializes
    /// itself when a run selects another count (`RowSpecializer`); the variants it compiles then
    /// reuse this compiler, `graph` and `parameters`, which the returned net keeps for that purpose.
    ///
    /// The result is one execution context of a program of its own; to run many contexts over one
    /// set of constants, use `compileProgram` and `CompiledProgram.makeContext()`.
    public func compile(graph: Graph, parameters: [String: [NDArray]], keeping selection: BlobSelection = .all) throws -> CompiledNet {
        try compileProgram(graph: graph, parameters: parameters, keeping: selection, constants: ConstantStore()).makeContext()
    }

    /// Compiles `graph` into a `CompiledProgram`: the schedule and its constants, held in
    /// `constants` (shared with every other program compiled into the same store, so a model's
    /// programs for several input shapes hold each weight once), with no execution context yet.
    /// Throws as `compile` does.
    public func compileProgram(graph: Graph, parameters: [String: [NDArray]], keeping selection: BlobSelection = .all,
                               constants: ConstantStore) throws -> CompiledProgram {
        let built = try build(graph: graph, parameters: parameters, keeping: selection, constants: constants)
        let respecialize: (([Int], Int, Executable) throws -> CompiledNet.Variant)?
        if built.rowGuards.isEmpty {
            respecialize = nil
        } else {
            respecialize = { [self] rows, guessesFrom, first in
                let specialized = try graph.specializingRows(rows, guessesFrom: guessesFrom)
                let variant = try build(graph: specialized, parameters: parameters, keeping: selection, constants: constants)
                return CompiledNet.Variant(executable: try variant.makeExecutable(sharingBuffersWith: first),
                                           rowGuards: variant.rowGuards, inputChecks: variant.inputChecks)
            }
        }
        return CompiledProgram(program: built.program, cache: cache, pool: pool, blas: blas, kernels: built.kernels,
                               compileSeconds: built.compileSeconds, phases: built.phases, rowGuards: built.rowGuards,
                               inputChecks: built.inputChecks, respecialize: respecialize)
    }

    /// Lowers `graph`, compiles its kernels and materializes its constants: one program, which a
    /// net with Filter layers gets once per row-count variant.
    private func build(graph: Graph, parameters: [String: [NDArray]], keeping selection: BlobSelection,
                       constants: ConstantStore) throws -> CompiledProgram {
        let start = DispatchTime.now().uptimeNanoseconds
        try requireKnownShapes(graph, hint: "give the net's inputs concrete shapes (Input layers or --input NAME=dims)")
        let kept = keptValues(graph, selection)
        var lowering = Lowering(graph: graph, parameters: parameters, cache: cache, kept: Set(kept), parallelThreshold: options.parallelThreshold)
        configure(&lowering, training: false)
        for value in graph.externalInputs {
            lowering.program.inputs.append(BlobBinding(name: graph.values[value].name, shape: graph.values[value].shape.dims,
                                                       buffer: lowering.buffer(value)))
        }
        for node in graph.nodes {
            try located(node) { try lower(node, &lowering) }
        }
        for value in kept {
            lowering.program.outputs.append(BlobBinding(name: graph.values[value].name, shape: graph.values[value].shape.dims,
                                                        buffer: lowering.buffer(value)))
        }
        return try finish(&lowering, started: start) { program in try program.materializeConstants(in: constants) }
    }

    /// Runs `body`, attributing a diagnostic without a layer to `node`.
    func located(_ node: Node, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch let diagnostic as Diagnostic {
            var located = diagnostic.inLayer(node.name)
            if located.location == nil { located.location = node.location }
            throw located
        }
    }

    /// Fails with a diagnostic naming the producer of the first blob whose shape is not fully known.
    func requireKnownShapes(_ graph: Graph, hint: String) throws {
        if let unknown = graph.values.first(where: { !$0.shape.isFullyKnown }) {
            let producer = unknown.producer.map { graph.nodes[$0] }
            throw Diagnostic("blob '\(unknown.name)' has shape \(unknown.shape), which is not fully known", at: producer?.location,
                             layer: producer?.name, hint: hint)
        }
    }

    /// Hands this compiler's options and pool size to a fresh lowering: the one place they are read.
    func configure(_ lowering: inout Lowering, training: Bool) {
        lowering.threads = pool.threadCount
        lowering.banding = options.convolutionBanding
        lowering.winograd = options.winograd
        lowering.innerProductPanels = options.innerProductPanels
        lowering.concatInPlace = options.concatInPlace && !training
        lowering.panelGemms = options.panelGemms && PanelGemm.isNative(cache.jit.features)
    }

    /// Finishes a lowered program, inference or training alike: closes its row guards, compiles the
    /// kernels it asked for in one batch, runs `prepare` on the program (inference materializes its
    /// constants there), and times each phase from `started`.
    func finish(_ lowering: inout Lowering, started start: UInt64,
                prepare: (inout Program) throws -> Void = { _ in }) throws -> CompiledProgram {
        lowering.finishRowGuards()
        let lowered = DispatchTime.now().uptimeNanoseconds
        let kernels = try lowering.compileKernels()
        let compiled = DispatchTime.now().uptimeNanoseconds
        var program = lowering.program
        try prepare(&program)
        let finished = DispatchTime.now().uptimeNanoseconds
        // Kernel IR is built while lowering; count it with the kernels.
        let phases = CompilePhases(lowering: Double(lowered - start) / 1e9 - kernels.generateSeconds,
                                   kernels: Double(compiled - lowered) / 1e9 + kernels.generateSeconds,
                                   executable: Double(finished - compiled) / 1e9)
        return CompiledProgram(program: program, cache: cache, pool: pool, blas: blas, kernels: kernels,
                               compileSeconds: Double(finished - start) / 1e9, phases: phases, rowGuards: lowering.rowGuards,
                               inputChecks: lowering.inputChecks, respecialize: nil)
    }

    private func lower(_ node: Node, _ lowering: inout Lowering) throws {
        switch node.kind {
        case .input: lowering.lowerInput(node)
        case .convolution: try lowering.lowerConvolution(node)
        case .deconvolution: try lowering.lowerDeconvolution(node)
        case .innerProduct: try lowering.lowerInnerProduct(node)
        case .pooling: try lowering.lowerPooling(node)
        case .roiPooling: try lowering.lowerROIPooling(node)
        case .lrn: try lowering.lowerLRN(node)
        case .batchNorm: try lowering.lowerBatchNorm(node)
        case .scale: try lowering.lowerScale(node)
        case .bias: try lowering.lowerBias(node)
        case .softmax: try lowering.lowerSoftmax(node)
        case .concat: try lowering.lowerConcat(node)
        case .eltwise: try lowering.lowerEltwise(node)
        case .reshape, .flatten, .split: lowering.lowerView(node)
        case .silence, .hdf5Output: break  // HDF5Output writes its bottoms after the pass (SwiftJIT's Model).
        case .crop: try lowering.lowerCrop(node)
        case .slice: try lowering.lowerSlice(node)
        case .tile: try lowering.lowerTile(node)
        case .batchReindex: try lowering.lowerBatchReindex(node)
        case .filter: try lowering.lowerFilter(node)
        case .embed: try lowering.lowerEmbed(node)
        case .dummyData: try lowering.lowerDummyData(node)
        case .im2col: try lowering.lowerIm2colLayer(node)
        case .prelu: try lowering.lowerPReLU(node)
        case .reduction: try lowering.lowerReduction(node)
        case .argMax: try lowering.lowerArgMax(node)
        case .mvn: try lowering.lowerMVN(node)
        case .spp: try lowering.lowerSPP(node)
        case .lstm, .rnn: try lowering.lowerRecurrent(node)
        case .lstmUnit: try lowering.lowerLSTMUnit(node)
        // Caffe runs losses and Accuracy forward in every phase (the kernels `swiftjit test` runs).
        case .softmaxWithLoss: try lowering.lowerSoftmaxWithLossForward(node)
        case .sigmoidCrossEntropyLoss: try lowering.lowerSigmoidCrossEntropyForward(node)
        case .euclideanLoss: try lowering.lowerEuclideanForward(node)
        case .hingeLoss: try lowering.lowerHingeForward(node)
        case .multinomialLogisticLoss: try lowering.lowerMultinomialLogisticForward(node)
        case .infogainLoss: try lowering.lowerInfogainForward(node)
        case .contrastiveLoss: try lowering.lowerContrastiveForward(node)
        case .accuracy: try lowering.lowerAccuracy(node)
        case .permute: try lowering.lowerPermute(node)
        case .priorBox: try lowering.lowerPriorBox(node)
        case .detectionOutput: try lowering.lowerDetectionOutput(node)
        case .multiBoxLoss: try lowering.lowerMultiBoxLoss(node)
        case .normalize: try lowering.lowerNormalize(node)
        case .upsample: try lowering.lowerUpsample(node)
        case .reorg: try lowering.lowerReorg(node)
        case .proposal: try lowering.lowerProposal(node)
        case .region: try lowering.lowerRegion(node)
        case .psroiPooling: try lowering.lowerPSROIPooling(node)
        case .bn: try lowering.lowerBN(node)
        case .spatialDropout: try lowering.lowerSpatialDropout(node)
        case .transpose: try lowering.lowerTranspose(node)
        case .reverse: try lowering.lowerReverse(node)
        case .ctpnLSTM: try lowering.lowerCTPNLSTM(node)
        default:
            if let function = try lowering.unaryFunction(node) {
                try lowering.lowerUnary(node, function)
            } else {
                throw lowering.unsupported(node, "no lowering for this layer type yet",
                                           hint: node.kind.isDataSource ? "replace the data layer by an Input layer and feed its blobs" : nil)
            }
        }
    }

    /// The final version of each selected blob name, in net order.
    private func keptValues(_ graph: Graph, _ selection: BlobSelection) -> [ValueID] {
        switch selection {
        case .outputs:
            return graph.outputs
        case .all, .named:
            var latest: [String: ValueID] = [:]
            var order: [String] = []
            for value in graph.values {
                if latest[value.name] == nil { order.append(value.name) }
                latest[value.name] = value.id
            }
            if case .named(let names) = selection { order = order.filter(names.contains) }
            return order.map { latest[$0]! }
        }
    }
}
