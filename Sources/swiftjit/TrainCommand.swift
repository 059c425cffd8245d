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

        On a terminal a live line shows the iteration, smoothed loss, learning rate, iterations/s and time left; otherwise Caffe-style log lines appear every `display` iterations. Snapshots are written atomically (a temporary file flushed to disk, then a rename; the .solverstate last), and a .solverstate names its .caffemodel relative to itself, so the pair resumes wherever it is moved. A NaN or infinite loss stops training with a snapshot and names the first layer that produced a non-finite value.

        Signals, as Caffe's -sigint_effect/-sighup_effect, read after the current iteration: `stop` writes a snapshot and stops (exit 0), `snapshot` writes one and goes on, `none` ignores the signal. Defaults: SIGINT (Ctrl-C) stop — a second Ctrl-C quits at once —, SIGHUP snapshot, SIGTERM (what job schedulers send before killing) stop.
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

    @Option(name: .long, help: "What SIGINT (Ctrl-C) does: snapshot, stop (snapshot and stop) or none.")
    var sigintEffect: SignalEffect = .stop

    @Option(name: .long, help: "What SIGHUP does: snapshot, stop (snapshot and stop) or none.")
    var sighupEffect: SignalEffect = .snapshot

    @Option(name: .long, help: "What SIGTERM does: snapshot, stop (snapshot and stop) or none.")
    var sigtermEffect: SignalEffect = .stop

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
        let sources = [(SIGINT, "SIGINT", sigintEffect), (SIGHUP, "SIGHUP", sighupEffect), (SIGTERM, "SIGTERM", sigtermEffect)]
            .map { number, name, effect in effect.install(for: number, named: name, on: options.stop) }
        defer { sources.forEach { $0.cancel() } }
        do {
            let trainer = try Trainer(solverPath: solver, options: options, compiler: try Compiler(cache: kernelCache.makeCache()))
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

/// What a signal does to a training run (Caffe's `SolverAction`, chosen with `--sigint-effect`,
/// `--sighup-effect` and `--sigterm-effect`), acted on after the current iteration's update.
enum SignalEffect: String, ExpressibleByArgument, CaseIterable {
    /// Write a snapshot and stop; training ends normally (exit 0). Caffe's `stop`, whose final
    /// snapshot `snapshot_after_train` governs — here it is always written, so no work is lost.
    case stop
    /// Write a snapshot and go on.
    case snapshot
    /// Ignore the signal.
    case none

    /// Ignores the signal's default action and routes it to `request` through a dispatch source
    /// (`.none`: only ignores it). With `.stop`, a second SIGINT quits at once (exit 130).
    func install(for number: Int32, named name: String, on request: StopRequest) -> DispatchSourceSignal {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        let effect = self
        source.setEventHandler {
            switch effect {
            case .none:
                break
            case .snapshot:
                request.requestSnapshot()
                FileHandle.standardError.write(Data("\n\(name): writing a snapshot after this iteration\n".utf8))
            case .stop:
                if number == SIGINT, request.isRequested { Foundation.exit(130) }
                request.request()
                FileHandle.standardError.write(Data(("\n\(name): stopping after this iteration and writing a snapshot" +
                                                     (number == SIGINT ? " (Ctrl-C again to quit now)" : "") + "\n").utf8))
            }
        }
        source.resume()
        return source
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
            let net = try Compiler(cache: kernelCache.makeCache()).compileTraining(graph: graph, parameters: values)
            let feeds = try TrainingFeeds(graph: graph, seed: 1, baseDirectory: nil, netFile: model)
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
