import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit time`: per-layer and total forward times, like `caffe time`.
struct TimeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "time",
        abstract: "Time the forward pass of a net, layer by layer, like `caffe time`.",
        discussion: """
        Inputs are seeded random values with the prototxt's shapes (or --input NAME=d0,d1,...; data layers' shapes come from their sources, found as every command finds them), valid indices for an Embed layer's input and valid boxes for `rois`; parameters come from --weights or the prototxt's fillers. One untimed warm-up pass runs first. The report lists each layer's average time over --iterations profiled passes, then the load time (net definition and weights or fillers), the compile time (graph to executable: graph passes, lowering, kernels, arena and weights) with how many kernels were compiled and how many came from the kernel cache, the arena planned versus one buffer per blob, and Caffe's summary line `Average Forward pass: X ms.` measured over whole unprofiled passes. With --backward, forward and backward per layer on the TRAIN net; add --solver S.prototxt to also time whole training iterations (zero the diffs, forward, backward, the solver's update), as `swiftjit train` runs them without reading data.
        """
    )

    @Argument(help: "The net definition (.prototxt).")
    var net: String

    @Option(name: .long, help: "The .caffemodel (default: fillers with --seed).")
    var weights: String?

    @Option(name: .long, help: "Override an input's shape: NAME=d0,d1,... (repeatable).")
    var input: [InputShape] = []

    @Option(name: .long, help: "Timed passes.")
    var iterations: Int = 50

    @Option(name: .long, help: "Seed for inputs and fillers.")
    var seed: UInt64 = 1

    @Flag(name: .long, help: "Also time backward: builds the TRAIN phase with gradients, like `caffe time`.")
    var backward = false

    @Option(name: .long, help: ArgumentHelp("With --backward: also time whole training iterations with this solver's update (its type, learning rate policy, momentum and weight decay; its net is ignored).", valueName: "solver.prototxt"))
    var solver: String?

    @OptionGroup var kernelCache: KernelCacheOptions

    func run() throws {
        do {
            if solver != nil, !backward {
                throw ValidationError("--solver times training iterations, which need --backward")
            }
            if backward { return try timeBackward() }
            // Data layers' shapes come from their LMDBs (DataSources' rule); --input wins.
            let given = Dictionary(input.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 })
            let definition = try CaffeFiles.loadNet(path: net)
            let data = try DataSources.shapes(definition, phase: .test, given: given, required: false)
            let shapes = data.shapes.merging(given) { $1 }
            let loadStart = DispatchTime.now().uptimeNanoseconds
            // File data layers become inputs of their learned shapes, fed random values below.
            let net = try Net(definition: try DataSources.replacingFileLayers(definition, phase: .test, shapes: shapes, inputForm: "N,C,H,W"),
                              weights: try weights.map { (try CaffeFiles.loadWeights(path: $0), $0) }, inputShapes: shapes.mapValues(\.dims),
                              seed: seed, compiler: Compiler(cache: kernelCache.makeCache()))
            let loadSeconds = elapsed(since: loadStart)
            var generator = SeededGenerator(seed: seed, stream: "inputs")
            var inputs: [String: NDArray] = [:]
            let image = net.inputs.first { $0.name != "rois" && $0.shape.count == 4 }?.shape
            // Inputs an Embed layer reads are indices: valid ones, as a caption generator feeds.
            var vocabulary: [String: Int] = [:]
            for node in net.graph.nodes where node.kind == .embed {
                vocabulary[net.graph.values[node.inputs[0]].name] = Int(node.layer.embedParam.inputDim)
            }
            for (name, shape) in net.inputs {
                if name == "rois", shape.count == 2, shape[1] == 5, let image {
                    // Valid boxes [batch_index, x1, y1, x2, y2] inside the image, as a detector feeds.
                    let (height, width) = (Float(image[2]), Float(image[3]))
                    inputs[name] = NDArray(shape: shape, data: (0..<shape[0]).flatMap { row -> [Float] in
                        let x1 = generator.uniform(0, width / 2), y1 = generator.uniform(0, height / 2)
                        return [Float(row % image[0]), x1, y1, x1 + generator.uniform(8, width / 2), y1 + generator.uniform(8, height / 2)]
                    })
                    continue
                }
                if let words = vocabulary[name] {
                    inputs[name] = NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float(min(words - 1, Int(generator.uniform(0, Float(words))))) })
                    continue
                }
                inputs[name] = NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in generator.gaussian(mean: 0, std: 1) })
            }
            let compileStart = DispatchTime.now().uptimeNanoseconds
            let compiled = try net.compiled(for: inputs.mapValues(\.shape))
            let compileSeconds = elapsed(since: compileStart)
            _ = try compiled.run(inputs: inputs)
            let labels = compiled.executable.steps.map(\.label)
            var perLayer: [String: Double] = [:]
            let passes = max(1, iterations)
            for _ in 0..<passes {
                for (label, seconds) in zip(labels, compiled.executable.profileSteps()) { perLayer[label, default: 0] += seconds }
            }
            let order = labels.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            let width = order.map(\.count).max() ?? 10
            for label in order {
                let ms = perLayer[label]! / Double(passes) * 1000
                print(label.padding(toLength: width, withPad: " ", startingAt: 0) + String(format: "  forward: %9.4f ms.", ms))
            }
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<passes { _ = try compiled.run(inputs: inputs, blobs: []) }
            let average = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(passes)
            let memory = compiled.memory
            print(String(format: "load: %.3f s (net definition, %@)", loadSeconds, weights == nil ? "fillers" : "weights"))
            print(kernelCache.report(seconds: compileSeconds, compiled))
            print("activations: \(NetSummary.humanBytes(4 * memory.planned)) planned, \(NetSummary.humanBytes(4 * memory.naive)) with one buffer per blob")
            print(String(format: "Average Forward pass: %.4f ms.", average))
        } catch {
            throw fail(error)
        }
    }

    /// Whether `value` (or a Split copy of it) is the labels bottom of a classification loss or Accuracy.
    private func feedsLabels(_ value: ValueID, in graph: Graph) -> Bool {
        graph.values[value].consumers.contains { id in
            let consumer = graph.nodes[id]
            switch consumer.kind {
            case .softmaxWithLoss, .accuracy, .hingeLoss, .multinomialLogisticLoss, .infogainLoss:
                return consumer.inputs.count > 1 && consumer.inputs[1] == value
            case .split:
                return consumer.outputs.contains { feedsLabels($0, in: graph) }
            default:
                return false
            }
        }
    }

    /// Forward and backward per layer on the TRAIN-phase net, fed random data (Data layers take their
    /// shapes from their LMDBs, or from --input).
    private func timeBackward() throws {
        let definition = try CaffeFiles.loadNet(path: net)
        let given = Dictionary(input.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 })
        var shapes = try DataSources.shapes(definition, phase: .train, given: given, required: false).shapes
        for (name, shape) in given { shapes[name] = shape }
        let graph = try GraphBuilder(phase: .train, inputShapes: shapes, insertsSplits: true).build(definition)
        let fill = { try ParameterInitializer.initialize(graph, seed: seed, batchNorm: .unit, memory: .training) }
        try MemoryBudget(graph, use: .training).check()
        let parameters = try weights.map { try TrainedLayers.copy(from: $0, into: graph, others: fill) } ?? fill()
        let compileStart = DispatchTime.now().uptimeNanoseconds
        let compiled = try Compiler(cache: kernelCache.makeCache()).compileTraining(graph: graph, parameters: parameters, seed: seed)
        let compileSeconds = elapsed(since: compileStart)
        var generator = SeededGenerator(seed: seed, stream: "inputs")
        var feeds: [String: NDArray] = [:]
        for node in graph.nodes where node.kind.isDataSource {
            for output in node.outputs {
                let value = graph.values[output]
                // Class labels: a data layer's second top, or an Input top a classification loss or
                // Accuracy reads as its labels (valid indices, so the loss is a real one).
                let isLabel = (node.outputs.firstIndex(of: output) == 1 && node.kind != .input && node.kind != .dummyData)
                    || (node.kind == .input && feedsLabels(output, in: graph))
                feeds[value.name] = NDArray(shape: value.shape.dims, data: (0..<(value.shape.count ?? 0)).map { _ in
                    isLabel ? Float(Int(generator.uniform(0, 2))) : generator.gaussian(mean: 0, std: 1)
                })
            }
        }
        _ = try compiled.run(feeds, backward: true)
        var forward: [String: Double] = [:], backwardTimes: [String: Double] = [:]
        var order: [String] = []
        let passes = max(1, iterations)
        for _ in 0..<passes {
            let profile = compiled.profileSteps()
            for (layer, seconds) in profile.forward {
                if forward[layer] == nil, !order.contains(layer) { order.append(layer) }
                forward[layer, default: 0] += seconds
            }
            for (layer, seconds) in profile.backward {
                if !order.contains(layer) { order.append(layer) }
                backwardTimes[layer, default: 0] += seconds
            }
        }
        let width = order.map(\.count).max() ?? 10
        for layer in order {
            let f = (forward[layer] ?? 0) / Double(passes) * 1000, b = (backwardTimes[layer] ?? 0) / Double(passes) * 1000
            print(layer.padding(toLength: width, withPad: " ", startingAt: 0) + String(format: "  forward: %9.4f ms.  backward: %9.4f ms.", f, b))
        }
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<passes { _ = try compiled.run(feeds, backward: true) }
        let total = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(passes)
        let f = forward.values.reduce(0, +) / Double(passes) * 1000, b = backwardTimes.values.reduce(0, +) / Double(passes) * 1000
        print(kernelCache.report(seconds: compileSeconds, compiled))
        print(String(format: "Average Forward pass: %.4f ms.", f))
        print(String(format: "Average Backward pass: %.4f ms.", b))
        print(String(format: "Average Forward-Backward: %.4f ms.", total))
        if let solver {
            // Caffe's Solver::Step without the data layer: zero the diffs, forward, backward, update.
            let parameters = compiled.learnableParameters
            let hyper = try SolverConfiguration.hyperparameters(CaffeFiles.loadSolver(path: solver), file: solver)
            let update = Solver(hyperparameters: hyper, parameterCounts: parameters.map(\.data.count))
            var loss: Float = 0
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<passes {
                compiled.zeroParameterDiffs()
                loss = try compiled.run(feeds, backward: true).loss
                update.applyUpdate(parameters)
            }
            let iteration = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(passes)
            print(String(format: "Average Training iteration (forward, backward, %@ update): %.4f ms. (loss after %d updates: %g)",
                         hyper.kind.rawValue, iteration, passes, loss))
        }
    }
}
