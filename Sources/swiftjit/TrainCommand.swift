import ArgumentParser
import Dispatch
import Foundation
import SwiftJIT

/// `swiftjit train`: what `caffe train` does, with progress on the terminal and safe snapshots.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a net from a solver prototxt, as `caffe train` does.",
        discussion: """
        Follows the solver: its net (relative paths resolve against the working directory, as in Caffe, then the solver's folder), max_iter, lr policy, test nets, display and snapshot settings. Start from scratch (the prototxt's fillers, seeded by random_seed), from --weights (copied by layer name; several files may be given, comma-separated), or resume from a --snapshot .solverstate.

        On a terminal a live line shows the iteration, smoothed loss, learning rate, iterations/s and time left; otherwise Caffe-style log lines appear every `display` iterations. Snapshots are written atomically (a temporary file, then a rename). Ctrl-C writes a snapshot and stops after the current iteration; a NaN or infinite loss stops training with a snapshot and names the first layer that produced a non-finite value.
        """
    )

    @Option(name: .long, help: "The solver definition (.prototxt).")
    var solver: String

    @Option(name: .long, help: "Caffemodel(s) to start from, comma-separated.")
    var weights: String?

    @Option(name: .long, help: "A .solverstate to resume from.")
    var snapshot: String?

    @Option(name: .long, help: "Write iteration,loss,lr for every iteration to this CSV file.")
    var lossCsv: String?

    @Flag(name: .long, help: "Print log lines instead of the live progress line.")
    var plain = false

    @OptionGroup var kernelCache: KernelCacheOptions

    func validate() throws {
        if weights != nil, snapshot != nil {
            throw ValidationError("give either --weights or --snapshot, not both (a snapshot carries its own weights)")
        }
    }

    func run() throws {
        var options = TrainingOptions()
        options.weights = weights?.split(separator: ",").map(String.init) ?? []
        options.resume = snapshot
        options.lossCSV = lossCsv
        options.progress = plain ? .lines : .automatic
        let stop = options.stop
        signal(SIGINT, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupt.setEventHandler {
            if stop.isRequested { Foundation.exit(130) }
            stop.request()
            FileHandle.standardError.write(Data("\nstopping after this iteration and writing a snapshot (Ctrl-C again to quit now)\n".utf8))
        }
        interrupt.resume()
        do {
            let trainer = try Trainer(solverPath: solver, options: options, compiler: try TrainingCompiler(cache: kernelCache.makeCache()))
            let result = try trainer.train()
            if let last = result.losses.last {
                print("done: iteration \(trainer.solver.iteration), last loss \(last.loss)" +
                      (result.snapshots.last.map { ", snapshot \($0.model)" } ?? ""))
            }
        } catch {
            throw fail(error)
        }
    }
}

/// `swiftjit test`: what `caffe test` does — score a trained net on its TEST data.
struct TestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Score a net's TEST phase for some iterations, as `caffe test` does.",
        discussion: "Runs the net's TEST phase (its Data layers read their LMDBs) for --iterations batches with --weights and prints each batch's outputs and their means."
    )

    @Option(name: .long, help: "The net definition (.prototxt) with TEST-phase data layers.")
    var model: String

    @Option(name: .long, help: "The trained .caffemodel.")
    var weights: String

    @Option(name: .long, help: "Number of batches.")
    var iterations: Int = 50

    @OptionGroup var kernelCache: KernelCacheOptions

    func run() throws {
        do {
            let definition = try CaffeFiles.loadNet(path: model)
            let shapes = try TrainingFeeds.dataShapes(definition, phase: .test, level: 0, stages: [], baseDirectory: nil)
            let graph = try GraphBuilder(phase: .test, inputShapes: shapes, insertsSplits: true).build(definition)
            let values = try TrainedLayers.copy(from: weights, into: graph) { try ParameterInitializer.initialize(graph, seed: 1) }
            let net = try TrainingCompiler(cache: kernelCache.makeCache()).compile(graph: graph, parameters: values)
            let feeds = try TrainingFeeds(graph: graph, seed: 1, baseDirectory: nil)
            defer { feeds.close() }
            var sums: [String: Float] = [:]
            for batch in 0..<max(1, iterations) {
                let pass = try net.run(try feeds.next(), backward: false)
                for (name, array) in pass.outputs.sorted(by: { $0.key < $1.key }) {
                    let mean = array.data.reduce(0, +) / Float(max(1, array.count))
                    sums[name, default: 0] += mean
                    print("Batch \(batch), \(name) = \(mean)")
                }
            }
            for (name, sum) in sums.sorted(by: { $0.key < $1.key }) { print("\(name) = \(sum / Float(max(1, iterations)))") }
        } catch {
            throw fail(error)
        }
    }
}
