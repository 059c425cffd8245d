import Foundation

/// Caffe's solver driven the way pycaffe drives `caffe.SGDSolver` (or `get_solver`): the train net
/// and test nets are `LayerwiseNet`s — every blob readable and writable in place — whose test nets
/// use the train net's parameter memory; `step`, `solve`, `applyUpdate`, `snapshot` and `restore`
/// are the `Trainer`'s own loop (the one `swiftjit train` runs), so losses are the same.
///
/// Data layers read their LMDB as in `swiftjit train`; Input and DummyData tops hold what the
/// caller writes (non-constant DummyData fillers refill every pass, as Caffe).
///
///     let solver = try LayerwiseSolver(solverPath: "solver.prototxt")
///     try solver.step(10)
///     print(solver.iteration, solver.trainer.smoothedLoss)
public final class LayerwiseSolver {
    public let trainer: Trainer
    public let net: LayerwiseNet
    public let testNets: [LayerwiseNet]

    /// Reads the solver and builds its nets. `options.dataInPlace` is always set; `threads` and
    /// `cache` configure the one compiler every net uses; `hostLayers` gives each net (0: the
    /// train net, i + 1: test net i) the implementation of its "Python" layers.
    public init(solverPath: String, options: TrainingOptions = TrainingOptions(), threads: Int? = nil, cache: KernelCache? = nil,
                hostLayers: ((_ net: Int) -> HostLayers?)? = nil) throws {
        var options = options
        options.dataInPlace = true
        let hosts = HostLayerSet(hostLayers)
        options.prepareGraph = { net, builder in hosts[net]?.install(in: &builder) }
        let solverSeed = try CaffeFiles.loadSolver(path: solverPath).randomSeed
        let seed = solverSeed >= 0 ? UInt64(solverSeed) : 1701
        let compiler = try Compiler(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount, cache: cache)
        var built: [LayerwiseNet] = []
        trainer = try Trainer(solverPath: solverPath, options: options) { graph, parameters in
            let host = hosts[built.count]
            let net = try LayerwiseNet(graph: graph, parameters: parameters, seed: seed, compiler: compiler, sharing: built.first,
                                       file: solverPath, hostLayers: host, build: LayerwiseNet.rebuilding(graph, hostLayers: host))
            built.append(net)
            return net
        }
        guard let first = built.first else {
            throw Diagnostic("the solver built no train net", file: solverPath)
        }
        net = first
        testNets = Array(built.dropFirst())
        // Caffe's data layers belong to the nets: a forward outside `step` reads the next batch.
        first.dataFeeds = trainer.feeds
        for (net, test) in zip(testNets, trainer.testNets) { net.dataFeeds = test.feeds }
    }

    /// Caffe's `iter_`: updates applied so far.
    public var iteration: Int { trainer.solver.iteration }

    /// `iterations` iterations of Caffe's `Solver::Step`; returns the last smoothed loss.
    @discardableResult
    public func step(_ iterations: Int) throws -> Float {
        try trainer.step(iterations)
        return trainer.smoothedLoss
    }

    /// Runs to `max_iter` (Caffe's `Solver::Solve`).
    public func solve() throws { try trainer.train() }

    /// One update from the diffs the train net holds, at the current iteration's rate; then
    /// `iteration` advances (Caffe's `ApplyUpdate`). Returns the rate used.
    @discardableResult
    public func applyUpdate() -> Float { trainer.solver.applyUpdate(net.learnableParameters) }

    /// Writes `prefix_iter_N.caffemodel` and `.solverstate`.
    @discardableResult
    public func snapshot() throws -> (model: String, state: String) { try trainer.snapshot() }

    /// Restores a `.solverstate` and the `.caffemodel` it names.
    public func restore(from path: String) throws { try trainer.restore(from: path) }
}

extension LayerwiseNet {
    /// A graph builder for new input shapes of a net already built as `graph` (its layers after
    /// phase filtering, their rules dropped so that the same layers are kept).
    public static func rebuilding(_ graph: Graph, hostLayers: HostLayers? = nil) -> GraphBuild {
        var net = Caffe_NetParameter()
        net.name = graph.name
        net.forceBackward = graph.forceBackward
        net.layer = graph.nodes.filter { !$0.isSynthetic }.map { node in
            var layer = node.layer
            layer.include = []
            layer.exclude = []
            return layer
        }
        let definition = NetDefinition(net: net, file: graph.name)
        let phase = graph.phase
        return { shapes in
            var builder = GraphBuilder(phase: phase, inputShapes: shapes, insertsSplits: true)
            hostLayers?.install(in: &builder)
            return try builder.build(definition)
        }
    }
}

/// One `HostLayers` per solver net, made on first use (the graph hook and the compile step of a
/// net both ask for it).
private final class HostLayerSet {
    private let make: ((Int) -> HostLayers?)?
    private var made: [Int: HostLayers] = [:]

    init(_ make: ((Int) -> HostLayers?)?) { self.make = make }

    subscript(net: Int) -> HostLayers? {
        if let existing = made[net] { return existing }
        let layers = make?(net)
        made[net] = layers
        return layers
    }
}
