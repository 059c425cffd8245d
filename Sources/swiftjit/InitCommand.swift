import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit init`: a .caffemodel filled by the net's own fillers, for tests, benchmarks and
/// training from scratch.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write a .caffemodel whose parameters come from the prototxt's fillers.",
        discussion: """
        Every parameter blob is filled as Caffe's layer would fill it at setup (weight_filler, bias_filler, Scale's 1, PReLU's 0.25, BatchNorm's zeros), from --seed. The same seed gives the same file; each blob draws from its own stream, so editing one layer leaves the others' values unchanged. Caffe's own random generator cannot be reproduced outside Caffe, so the values differ from Caffe's for the same seed; their distributions do not.
        """
    )

    @Argument(help: "The net definition (.prototxt).")
    var net: String

    @Option(name: .shortAndLong, help: "Where to write the .caffemodel (written atomically).")
    var output: String

    @Option(name: .long, help: "The random seed.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "The phase to build: test or train.")
    var phase: PhaseOption = .test

    @Option(name: .long, help: "Override an input's shape: NAME=d0,d1,... (repeatable).")
    var input: [InputShape] = []

    @Option(name: .long, help: "BatchNorm statistics: caffe (all 0, as Caffe's setup; divides by sqrt(eps)) or unit (mean 0, variance 1).")
    var batchnorm: ParameterInitializer.BatchNormStatistics = .caffe

    @Option(name: .long, help: ArgumentHelp("The filler for convolution/InnerProduct weights the prototxt gives no weight_filler: msra, xavier, or caffe (Caffe's default, constant 0).",
                                            discussion: "Deploy nets rarely name fillers, so Caffe's default makes every activation 0; msra keeps random-weight activations at a realistic scale for benchmarks and runtime comparisons."))
    var unfilledWeights: UnfilledWeights = .caffe

    enum UnfilledWeights: String, ExpressibleByArgument, CaseIterable {
        case caffe, msra, xavier

        var filler: Filler? {
            guard self != .caffe else { return nil }
            var p = Caffe_FillerParameter()
            p.type = rawValue
            return Filler(p)
        }
    }

    func run() throws {
        do {
            let graph = try NetInspection(netPath: net, phase: phase.caffePhase,
                                          inputShapes: Dictionary(input.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 })).build().graph
            let parameters = try ParameterInitializer.initialize(graph, seed: seed, batchNorm: batchnorm, unfilledWeights: unfilledWeights.filler, memory: .parametersOnly)
            try CaffeFiles.write(Snapshot.netParameter(graph: graph, parameters: parameters), to: output)
            let count = parameters.values.flatMap { $0 }.reduce(0) { $0 + $1.count }
            print("wrote \(output): \(parameters.count) layers, \(NetSummary.grouped(count)) values (seed \(seed))")
        } catch {
            throw fail(error)
        }
    }
}

extension ParameterInitializer.BatchNormStatistics: ExpressibleByArgument {}
