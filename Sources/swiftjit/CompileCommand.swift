import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit compile`: what every layer of a net produces, and whether weights fit it.
struct CompileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compile",
        abstract: "Read a net, infer every blob's shape, and print one row per layer.",
        discussion: """
        Reads today's `layer {}` prototxt and the old V0/V1 `layers {}` formats (upgraded on load). Each row shows the layer's tops with their shapes, its parameter shapes (weights, bias, ...) and its forward FLOPs (a multiply-add counts 2). A `?` is an extent known only once data is read (e.g. a Data layer's image size): give it with --input.

        With --weights, checks the .caffemodel against the net the way Caffe copies weights (by layer name, shape by shape) and lists the layers it initializes and those it leaves to their fillers.
        """
    )

    @Argument(help: "The net definition (.prototxt).")
    var net: String

    @Option(name: .long, help: "A .caffemodel to check against the net.")
    var weights: String?

    @Option(name: .long, help: "The phase to build: test or train.")
    var phase: PhaseOption = .test

    @Option(name: .long, help: "Net stages to enable (repeatable), as in Caffe's NetState.")
    var stage: [String] = []

    @Option(name: .long, help: "Net level, as in Caffe's NetState.")
    var level: Int32?

    @Option(name: .long, help: "Override an input's shape: NAME=d0,d1,... (repeatable), e.g. data=1,3,224,224.")
    var input: [InputShape] = []

    @Flag(name: .long, help: "Print one JSON document instead of the table.")
    var json = false

    func run() throws {
        let inspection = NetInspection(netPath: net, weightsPath: weights, phase: phase.caffePhase,
                                       stages: stage.isEmpty ? nil : stage, level: level,
                                       inputShapes: Dictionary(input.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 }))
        do {
            let summary = try inspection.summarize()
            print(json ? summary.json : summary.table)
        } catch {
            throw fail(error)
        }
    }
}

enum PhaseOption: String, ExpressibleByArgument, CaseIterable {
    case test, train
    var caffePhase: Caffe_Phase { self == .train ? .train : .test }
}

/// `NAME=d0,d1,...` from the command line.
struct InputShape: ExpressibleByArgument {
    var name: String
    var shape: TensorShape

    init?(argument: String) {
        guard let equals = argument.lastIndex(of: "=") else { return nil }
        name = String(argument[..<equals])
        let dims = argument[argument.index(after: equals)...].split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !name.isEmpty, !dims.isEmpty, dims.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        shape = TensorShape(dims.map { $0! })
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
