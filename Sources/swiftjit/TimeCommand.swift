import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit time`: per-layer and total forward times, like `caffe time`.
struct TimeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "time",
        abstract: "Time the forward pass of a net, layer by layer, like `caffe time`.",
        discussion: """
        Inputs are seeded random values with the prototxt's shapes (or --input NAME=d0,d1,...); parameters come from --weights or the prototxt's fillers. One untimed warm-up pass runs first. The report lists each layer's average time over --iterations profiled passes, then the compile time, the arena planned versus one buffer per blob, and Caffe's summary line `Average Forward pass: X ms.` measured over whole unprofiled passes.
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

    func run() throws {
        do {
            let shapes = Dictionary(input.map { ($0.name, $0.shape.dims) }, uniquingKeysWith: { $1 })
            let net = try Net(prototxt: self.net, weights: weights, inputShapes: shapes, seed: seed)
            var generator = SeededGenerator(seed: seed, stream: "inputs")
            var inputs: [String: NDArray] = [:]
            for (name, shape) in net.inputs {
                inputs[name] = NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in generator.gaussian(mean: 0, std: 1) })
            }
            let compiled = try net.compiled(for: inputs.mapValues(\.shape))
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
            print(String(format: "compile: %.3f s (%d kernels generated)", compiled.compileSeconds, compiled.compiledKernels))
            print("activations: \(NetSummary.humanBytes(4 * memory.planned)) planned, \(NetSummary.humanBytes(4 * memory.naive)) with one buffer per blob")
            print(String(format: "Average Forward pass: %.4f ms.", average))
        } catch {
            throw fail(error)
        }
    }
}
