import Foundation

/// Trains a net as `caffe train` does: Caffe's `Solver::Step`/`Solve` loop over a `TrainableNet`,
/// with its data feeds, test nets, snapshots and resume.
///
/// Per iteration, in Caffe's order: zero parameter diffs; run the test nets every `test_interval`
/// (at iteration 0 too, unless `test_initialization: false`); `iter_size` forward/backward passes;
/// smooth the loss over `average_loss`; log every `display`; apply the solver update; snapshot every
/// `snapshot` iterations. After `max_iter`: a final snapshot, Caffe's extra logging forward and a
/// final test. A NaN or infinite loss stops training after a snapshot, naming the iteration and the
/// first layer that produced a non-finite value. A stop request (SIGINT, SIGTERM) snapshots and
/// stops; a snapshot request (SIGHUP) snapshots and goes on.
///
///     let trainer = try Trainer(solverPath: "solver.prototxt", options: options, compile: compile)
///     let result = try trainer.train()
public final class Trainer {
    /// Compiles a graph (with splits) and its parameter values into something trainable.
    public typealias Compile = (_ graph: Graph, _ parameters: [String: [NDArray]]) throws -> any TrainableNet

    public let solverPath: String
    public let parameter: Caffe_SolverParameter
    public let solver: Solver
    public let net: any TrainableNet
    public private(set) var testNets: [(net: any TrainableNet, iterations: Int, feeds: TrainingFeeds)] = []
    /// The train net's data feeds (LMDB readers, DummyData fillers), which `LayerwiseSolver`'s
    /// nets also read on a forward outside `step`, as Caffe's data layers are part of the net.
    public let feeds: TrainingFeeds
    private let options: TrainingOptions
    private let log: TrainingLog
    private var smoothing = LossSmoothing(window: 1)

    /// Reads the solver, builds and compiles the train net (and test nets), and loads `--weights`
    /// or restores a `.solverstate`.
    public init(solverPath: String, options: TrainingOptions = TrainingOptions(), compile: Compile) throws {
        self.solverPath = solverPath
        self.options = options
        let p = try CaffeFiles.loadSolver(path: solverPath)
        parameter = p
        let hyper = try SolverConfiguration.hyperparameters(p, file: solverPath)
        let seed = p.randomSeed >= 0 ? UInt64(p.randomSeed) : 1701
        let base = options.baseDirectory

        let trainDefinition = try Self.trainNet(p, solverPath: solverPath, base: base)
        let trainShapes = try TrainingFeeds.dataShapes(trainDefinition, phase: .train, level: p.trainState.level,
                                                       stages: p.trainState.stage, baseDirectory: base)
        var trainBuilder = GraphBuilder(phase: .train, level: p.trainState.level, stages: p.trainState.stage,
                                        inputShapes: trainShapes, insertsSplits: true)
        options.prepareGraph?(0, &trainBuilder)
        let trainGraph = try trainBuilder.build(trainDefinition)
        var values = try ParameterInitializer.initialize(trainGraph, seed: seed, memory: .training)
        var resumeState: Caffe_SolverState?
        if let resume = options.resume {
            let state = try CaffeFiles.loadSolverState(path: resume)
            resumeState = state
            if !state.learnedNet.isEmpty {
                let learned = Snapshot.modelPath(forState: resume, learnedNet: state.learnedNet, base: base)
                values = try TrainedLayers.copy(from: learned, into: trainGraph) { values }
            }
        } else {
            for weights in options.weights { values = try TrainedLayers.copy(from: weights, into: trainGraph) { values } }
        }
        net = try compile(trainGraph, values)
        feeds = try TrainingFeeds(graph: trainGraph, seed: seed, baseDirectory: base, netFile: trainDefinition.file,
                                  provider: options.provider, dataInPlace: options.dataInPlace)
        solver = Solver(hyperparameters: hyper, parameterCounts: net.learnableParameters.map(\.data.count))
        if let state = resumeState {
            let history = state.history.map { $0.data }
            try solver.restore(iteration: Int(state.iter), currentStep: Int(state.currentStep), history: history)
        }
        for (index, definition) in try Self.testNetDefinitions(p, solverPath: solverPath, base: base).enumerated() {
            let rule = index < p.testState.count ? p.testState[index] : Caffe_NetState()
            let shapes = try TrainingFeeds.dataShapes(definition, phase: .test, level: rule.level, stages: rule.stage, baseDirectory: base)
            var builder = GraphBuilder(phase: .test, level: rule.level, stages: rule.stage, inputShapes: shapes, insertsSplits: true)
            options.prepareGraph?(index + 1, &builder)
            let graph = try builder.build(definition)
            guard index < p.testIter.count else {
                throw Diagnostic("test net \(index + 1) has no test_iter", file: solverPath, hint: "add one test_iter line per test net")
            }
            let testNet = try compile(graph, Self.shared(values, with: graph))
            testNets.append((testNet, Int(p.testIter[index]), try TrainingFeeds(graph: graph, seed: seed, baseDirectory: base, netFile: definition.file,
                                                                                  provider: options.provider, dataInPlace: options.dataInPlace)))
        }
        log = TrainingLog(options: options, maxIterations: Int(p.maxIter))
        smoothing = LossSmoothing(window: max(1, Int(p.averageLoss)))
    }

    deinit {
        feeds.close()
        for test in testNets { test.feeds.close() }
    }

    /// Runs from the current iteration to `max_iter` (or until stopped) and returns what happened
    /// (Caffe's `Solver::Solve`: `Step`, then the final snapshot, logging forward and test).
    @discardableResult
    public func train() throws -> TrainingResult {
        let p = parameter
        var result = TrainingResult()
        log.start(from: solver.iteration)
        if try step(Int(p.maxIter) - solver.iteration, into: &result) { return result }
        if p.snapshotAfterTrain, p.snapshot == 0 || solver.iteration % Int(p.snapshot) != 0 {
            result.snapshots.append(try snapshot())
        }
        if p.display > 0, solver.iteration % Int(p.display) == 0 {
            let pass = try net.run(try feeds.next(), backward: false)
            result.finalLoss = pass.loss
            log.display(iteration: solver.iteration, smoothedLoss: pass.loss, outputs: pass.outputs)
        }
        if p.testInterval > 0, solver.iteration % Int(p.testInterval) == 0 {
            result.tests.append((solver.iteration, try testAll()))
        }
        log.finish()
        return result
    }

    /// The smoothed loss of the last iteration `step` ran (Caffe's `smoothed_loss_`).
    public private(set) var smoothedLoss: Float = 0

    /// Runs `iterations` iterations of Caffe's `Solver::Step`: test every `test_interval`,
    /// `iter_size` forward/backward passes, the smoothed loss (restarted by each call, as Caffe),
    /// display, the update, snapshots.
    @discardableResult
    public func step(_ iterations: Int) throws -> TrainingResult {
        var result = TrainingResult()
        _ = try step(iterations, into: &result)
        return result
    }

    /// `step`, adding to `result`; true when a stop request ended it early (after a snapshot).
    private func step(_ iterations: Int, into result: inout TrainingResult) throws -> Bool {
        let p = parameter
        let startIteration = solver.iteration
        let stopIteration = startIteration + max(0, iterations)
        smoothing = LossSmoothing(window: max(1, Int(p.averageLoss)))
        while solver.iteration < stopIteration {
            let iteration = solver.iteration
            net.zeroParameterDiffs()
            if p.testInterval > 0, iteration % Int(p.testInterval) == 0, iteration > 0 || p.testInitialization {
                result.tests.append((iteration, try testAll()))
            }
            var loss: Float = 0
            let passes = max(1, Int(p.iterSize))
            var outputs: [String: NDArray] = [:]
            for _ in 0..<passes {
                let pass = try net.run(try feeds.next(), backward: true)
                loss += pass.loss
                outputs = pass.outputs
            }
            loss /= Float(passes)
            let smoothed = smoothing.add(loss, iteration: iteration - startIteration)
            smoothedLoss = smoothed
            if !loss.isFinite {
                let culprit = net.firstNonFinite()
                let paths = try snapshot()
                throw Diagnostic("the loss became \(loss.isNaN ? "NaN" : "\(loss)") at iteration \(iteration)" +
                                 (culprit.map { "; the first non-finite value is in blob '\($0.blob)', made by layer '\($0.layer)'" } ?? ""),
                                 file: solverPath,
                                 hint: "a snapshot of the state before this update is in \(paths.model); lower base_lr, or add clip_gradients")
            }
            if p.display > 0, iteration % Int(p.display) == 0 {
                log.display(iteration: iteration, smoothedLoss: smoothed, outputs: outputs)
            }
            let rate = solver.applyUpdate(net.learnableParameters)
            result.losses.append((iteration, loss, rate))
            try log.record(iteration: iteration, loss: loss, smoothed: smoothed, rate: rate)
            // Caffe's Step: a periodic snapshot, or one a signal asked for (sighup_effect: snapshot).
            let requested = options.stop.takeSnapshotRequest()  // consumed even when a periodic one is due
            let snapshotted = requested || p.snapshot > 0 && solver.iteration % Int(p.snapshot) == 0
            if snapshotted { result.snapshots.append(try snapshot()) }
            if options.stop.isRequested {
                if !snapshotted { result.snapshots.append(try snapshot()) }
                result.stoppedEarly = true
                log.note("stopped at iteration \(solver.iteration) on request; snapshot written")
                return true
            }
        }
        return false
    }

    /// Restores a `.solverstate` (iteration, history, lr schedule) and the `.caffemodel` it names
    /// (looked up beside the state, then from the base directory: `Snapshot.modelPath`), as
    /// Caffe's `Solver::Restore`.
    public func restore(from statePath: String) throws {
        let state = try CaffeFiles.loadSolverState(path: statePath)
        if !state.learnedNet.isEmpty {
            let learned = Snapshot.modelPath(forState: statePath, learnedNet: state.learnedNet, base: options.baseDirectory)
            try net.setParameters(try TrainedLayers.copy(from: learned, into: net.graph) { [:] })
        }
        try solver.restore(iteration: Int(state.iter), currentStep: Int(state.currentStep), history: state.history.map { $0.data })
    }

    /// Runs every test net for its `test_iter` passes with the train net's current weights; returns
    /// each output's mean per test net, as Caffe's "Test net output" lines.
    public func testAll() throws -> [[String: Float]] {
        let values = net.parameterArrays()
        var scores: [[String: Float]] = []
        for (index, test) in testNets.enumerated() {
            try test.net.setParameters(Self.shared(values, with: test.net.graph))
            var sums: [String: Float] = [:]
            for _ in 0..<test.iterations {
                let pass = try test.net.run(try test.feeds.next(), backward: false)
                for (name, array) in pass.outputs { sums[name, default: 0] += array.data.reduce(0, +) / Float(max(1, array.count)) }
            }
            let means = sums.mapValues { $0 / Float(max(1, test.iterations)) }
            log.test(index: index, iteration: solver.iteration, means: means)
            scores.append(means)
        }
        return scores
    }

    /// Writes `prefix_iter_N.caffemodel` and `.solverstate` (atomically) and returns their paths.
    @discardableResult
    public func snapshot() throws -> (model: String, state: String) {
        let prefix = snapshotPrefix
        let model = Snapshot.netParameter(graph: net.graph, parameters: net.parameterArrays())
        let shapes = net.learnableShapes
        let history = solver.history.enumerated().map { index, values in
            let shape = shapes[index % max(1, shapes.count)]
            return NDArray(shape: shape.reduce(1, *) == values.count ? shape : [values.count], data: values)
        }
        let paths = try Snapshot.write(prefix: prefix, iteration: solver.iteration, net: model,
                                       currentStep: solver.hyper.schedule.currentStep, history: history)
        log.note("snapshot: \(paths.model), \(paths.state)")
        return paths
    }

    /// `snapshot_prefix` resolved against the base directory (default: the solver's path without
    /// its extension, as Caffe).
    var snapshotPrefix: String {
        parameter.snapshotPrefix.isEmpty
            ? URL(fileURLWithPath: solverPath).deletingPathExtension().path
            : Self.resolve(parameter.snapshotPrefix, base: options.baseDirectory, alternate: nil)
    }

    // MARK: - Nets and weights

    static func resolve(_ path: String, base: String?, alternate: String?) -> String {
        if path.hasPrefix("/") { return path }
        let primary = URL(fileURLWithPath: base ?? FileManager.default.currentDirectoryPath).appendingPathComponent(path).path
        if FileManager.default.fileExists(atPath: primary) { return primary }
        if let alternate {
            let other = URL(fileURLWithPath: alternate).appendingPathComponent(path).path
            if FileManager.default.fileExists(atPath: other) { return other }
        }
        return primary
    }

    /// The train net: `train_net_param`, `train_net`, `net_param` or `net`, exactly one of them.
    static func trainNet(_ p: Caffe_SolverParameter, solverPath: String, base: String?) throws -> NetDefinition {
        let given = [p.hasTrainNetParam, p.hasTrainNet, p.hasNetParam, p.hasNet].filter { $0 }.count
        guard given == 1 else {
            throw Diagnostic(given == 0 ? "the solver names no net" : "the solver names \(given) train nets; give exactly one",
                             file: solverPath, hint: "set net: \"train_val.prototxt\" (or train_net)")
        }
        let folder = URL(fileURLWithPath: solverPath).deletingLastPathComponent().path
        if p.hasTrainNetParam { return NetDefinition(net: p.trainNetParam, file: solverPath) }
        if p.hasNetParam { return NetDefinition(net: p.netParam, file: solverPath) }
        return try CaffeFiles.loadNet(path: resolve(p.hasTrainNet ? p.trainNet : p.net, base: base, alternate: folder))
    }

    /// Test nets in Caffe's order: test_net_param, test_net, then net_param/net once per extra test_iter.
    static func testNetDefinitions(_ p: Caffe_SolverParameter, solverPath: String, base: String?) throws -> [NetDefinition] {
        let folder = URL(fileURLWithPath: solverPath).deletingLastPathComponent().path
        var definitions = p.testNetParam.map { NetDefinition(net: $0, file: solverPath) }
        for path in p.testNet { definitions.append(try CaffeFiles.loadNet(path: resolve(path, base: base, alternate: folder))) }
        let general = p.testIter.count - definitions.count
        if general > 0 {
            let shared: NetDefinition
            if p.hasNetParam { shared = NetDefinition(net: p.netParam, file: solverPath) } else if p.hasNet {
                shared = try CaffeFiles.loadNet(path: resolve(p.net, base: base, alternate: folder))
            } else {
                throw Diagnostic("the solver has \(p.testIter.count) test_iter values but only \(definitions.count) test nets", file: solverPath)
            }
            definitions += Array(repeating: shared, count: general)
        }
        return definitions
    }

    /// The train net's values for the layers `graph` shares with it (Caffe's ShareTrainedLayersWith);
    /// layers only the test net has get their fillers' values.
    static func shared(_ values: [String: [NDArray]], with graph: Graph) -> [String: [NDArray]] {
        var result: [String: [NDArray]] = [:]
        for node in graph.nodes where !node.parameters.isEmpty {
            if let blobs = values[node.name], blobs.count == node.parameters.count { result[node.name] = blobs }
        }
        if result.count < graph.nodes.filter({ !$0.parameters.isEmpty }).count,
           let filled = try? ParameterInitializer.initialize(graph, seed: 1701) {
            for (name, blobs) in filled where result[name] == nil { result[name] = blobs }
        }
        return result
    }
}

/// Caffe's `UpdateSmoothedLoss`: the mean of the last `average_loss` iterations' losses.
struct LossSmoothing {
    let window: Int
    private var losses: [Float] = []
    private var smoothed: Float = 0

    init(window: Int) { self.window = window }

    mutating func add(_ loss: Float, iteration: Int) -> Float {
        if losses.count < window {
            losses.append(loss)
            smoothed = (smoothed * Float(losses.count - 1) + loss) / Float(losses.count)
        } else {
            let index = iteration % window
            smoothed += (loss - losses[index]) / Float(window)
            losses[index] = loss
        }
        return smoothed
    }
}

/// What a training run did: every iteration's own loss and rate, test scores, snapshots written.
public struct TrainingResult: Sendable {
    public var losses: [(iteration: Int, loss: Float, rate: Float)] = []
    public var tests: [(iteration: Int, scores: [[String: Float]])] = []
    public var snapshots: [(model: String, state: String)] = []
    /// The loss of Caffe's extra forward after the last iteration (when `display` divides `max_iter`).
    public var finalLoss: Float?
    public var stoppedEarly = false
}
