import Foundation
import Testing
@testable import SwiftJIT

/// The training loop's bookkeeping — iterations, iter_size, loss CSV, snapshots, resume, NaN
/// stops, stop requests, test nets — checked on a net small enough to differentiate by hand:
/// x (DummyData 4×3) → InnerProduct (1 output) → EuclideanLoss against t (DummyData 4×1).
/// The JIT-compiled training nets are checked against Caffe's golden runs in TrainingTests.
@Suite("the training loop", .serialized)
struct TrainerTests {
    /// A hand-written forward/backward of the net above, standing in for the compiled net.
    final class LinearRegressionNet: TrainableNet {
        let graph: Graph
        var weights: [Float]
        var bias: [Float]
        var weightDiff: [Float] = [0, 0, 0]
        var biasDiff: [Float] = [0]
        var lastNonFinite: (String, String)?

        init(graph: Graph, parameters: [String: [NDArray]]) {
            self.graph = graph
            weights = parameters["ip"]![0].data
            bias = parameters["ip"]![1].data
        }

        func run(_ feeds: [String: NDArray], backward: Bool) throws -> (loss: Float, outputs: [String: NDArray]) {
            let x = feeds["x"]!.data, t = feeds["t"]!.data
            var loss: Float = 0
            var residuals: [Float] = []
            for n in 0..<4 {
                let y = (0..<3).reduce(bias[0]) { $0 + weights[$1] * x[n * 3 + $1] }
                residuals.append(y - t[n])
                loss += (y - t[n]) * (y - t[n])
            }
            loss /= 2 * 4
            lastNonFinite = loss.isFinite ? nil : ("ip", "y")
            if backward {
                for n in 0..<4 {
                    for k in 0..<3 { weightDiff[k] += residuals[n] * x[n * 3 + k] / 4 }
                    biasDiff[0] += residuals[n] / 4
                }
            }
            return (loss, ["loss": NDArray(scalar: loss)])
        }

        var learnableParameters: [LearnableParameter] {
            [weights.withUnsafeMutableBufferPointer { w in weightDiff.withUnsafeMutableBufferPointer { d in LearnableParameter(data: w, diff: d) } },
             bias.withUnsafeMutableBufferPointer { b in biasDiff.withUnsafeMutableBufferPointer { d in LearnableParameter(data: b, diff: d, lrMult: 2) } }]
        }

        func zeroParameterDiffs() {
            weightDiff = [0, 0, 0]
            biasDiff = [0]
        }

        func parameterArrays() -> [String: [NDArray]] {
            ["ip": [NDArray(shape: [1, 3], data: weights), NDArray(shape: [1], data: bias)]]
        }

        func setParameters(_ values: [String: [NDArray]]) throws {
            weights = values["ip"]![0].data
            bias = values["ip"]![1].data
        }

        func firstNonFinite() -> (layer: String, blob: String)? { lastNonFinite.map { ($0.0, $0.1) } }
    }

    static let netText = """
    name: "linreg"
    layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 4 dim: 3 } data_filler { type: "constant" value: 0.5 } } }
    layer { name: "t" type: "DummyData" top: "t" dummy_data_param { shape { dim: 4 dim: 1 } data_filler { type: "constant" value: 2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
    """

    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-trainer-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        try netText.write(to: url.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        return url
    }

    static func solver(in folder: URL, _ extra: String = "") throws -> String {
        let text = """
        net: "net.prototxt"
        base_lr: 0.1 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 10
        max_iter: 30 display: 10 snapshot: 10 snapshot_prefix: "snap" random_seed: 3 type: "SGD"
        \(extra)
        """
        let path = folder.appendingPathComponent("solver.prototxt").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func options(_ folder: URL, lines: LineCollector? = nil) -> TrainingOptions {
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .lines
        if let lines { options.write = { lines.append($0) } } else { options.progress = .quiet }
        return options
    }

    final class LineCollector: @unchecked Sendable {
        var lines: [String] = []
        func append(_ line: String) { lines.append(line) }
    }

    static func compile(_ graph: Graph, _ parameters: [String: [NDArray]]) throws -> any TrainableNet {
        LinearRegressionNet(graph: graph, parameters: parameters)
    }

    @Test("trains, logs at display, writes the loss CSV and snapshots every 10 iterations")
    func trainsAndSnapshots() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let lines = LineCollector()
        var options = Self.options(folder, lines: lines)
        options.lossCSV = folder.appendingPathComponent("loss.csv").path
        let trainer = try Trainer(solverPath: try Self.solver(in: folder), options: options, compile: Self.compile)
        let result = try trainer.train()
        #expect(result.losses.count == 30)
        #expect(result.losses.last!.loss < result.losses.first!.loss / 10)
        #expect(result.losses.map(\.rate)[9] == 0.1 && result.losses.map(\.rate)[10] == 0.05 && result.losses.map(\.rate)[29] == 0.025)
        #expect(result.snapshots.map { URL(fileURLWithPath: $0.model).lastPathComponent } == ["snap_iter_10.caffemodel", "snap_iter_20.caffemodel", "snap_iter_30.caffemodel"])
        #expect(result.finalLoss != nil)  // Caffe's extra forward: display divides max_iter
        let csv = try String(contentsOfFile: options.lossCSV!, encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 31 && csv[0] == "iteration,loss,lr" && csv[1].hasPrefix("0,"))
        #expect(lines.lines.filter { $0.hasPrefix("Iteration ") && $0.contains("loss = ") }.count == 4)
        let state = try CaffeFiles.loadSolverState(path: result.snapshots[1].state)
        #expect(state.iter == 20 && state.currentStep == 1 && state.history.count == 2)
        #expect(state.history[0].shape.dim == [1, 3])
    }

    @Test("resuming from the iteration-20 snapshot reaches the same final weights")
    func resume() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let solverPath = try Self.solver(in: folder)
        let full = try Trainer(solverPath: solverPath, options: Self.options(folder), compile: Self.compile)
        try full.train()
        let finalWeights = full.net.parameterArrays()["ip"]!
        var options = Self.options(folder)
        options.resume = folder.appendingPathComponent("snap_iter_20.solverstate").path
        let resumed = try Trainer(solverPath: solverPath, options: options, compile: Self.compile)
        #expect(resumed.solver.iteration == 20)
        let result = try resumed.train()
        #expect(result.losses.count == 10)
        #expect(resumed.net.parameterArrays()["ip"]! == finalWeights)
    }

    @Test("iter_size accumulates gradients over passes and divides them")
    func iterSize() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let one = try Trainer(solverPath: try Self.solver(in: folder), options: Self.options(folder), compile: Self.compile)
        try one.train()
        let two = try Trainer(solverPath: try Self.solver(in: folder, "iter_size: 2"), options: Self.options(folder), compile: Self.compile)
        try two.train()
        // Both passes see the same constant batch, so the averaged gradient equals one pass's.
        for (a, b) in zip(one.net.parameterArrays()["ip"]!, two.net.parameterArrays()["ip"]!) {
            for (x, y) in zip(a.data, b.data) { #expect(abs(x - y) < 1e-5) }
        }
    }

    @Test("a NaN loss stops training with a snapshot and names the iteration and layer")
    func nanLoss() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let solverPath = try Self.solver(in: folder).replacingOccurrences(of: "", with: "")
        try "net: \"net.prototxt\" base_lr: 1e30 lr_policy: \"fixed\" max_iter: 30 snapshot_prefix: \"snap\" type: \"SGD\"".write(toFile: solverPath, atomically: true, encoding: .utf8)
        let trainer = try Trainer(solverPath: solverPath, options: Self.options(folder), compile: Self.compile)
        do {
            try trainer.train()
            Issue.record("expected the loss to overflow")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.message == "the loss became inf at iteration 1; the first non-finite value is in blob 'y', made by layer 'ip'")
            #expect(diagnostic.hint?.contains("snap_iter_") == true)
        }
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("snap_iter_1.caffemodel").path))
    }

    /// The linear regression net, but its loss is a NaN with the sign bit set (what 0 × inf or
    /// inf − inf give on x86), which Swift's `description` prints as "-nan".
    final class NegativeNaNNet: TrainableNet {
        let inner: LinearRegressionNet
        init(_ inner: LinearRegressionNet) { self.inner = inner }
        var graph: Graph { inner.graph }
        func run(_ feeds: [String: NDArray], backward: Bool) throws -> (loss: Float, outputs: [String: NDArray]) {
            let pass = try inner.run(feeds, backward: backward)
            return (-Float.nan, pass.outputs)
        }
        var learnableParameters: [LearnableParameter] { inner.learnableParameters }
        func zeroParameterDiffs() { inner.zeroParameterDiffs() }
        func parameterArrays() -> [String: [NDArray]] { inner.parameterArrays() }
        func setParameters(_ values: [String: [NDArray]]) throws { try inner.setParameters(values) }
        func firstNonFinite() -> (layer: String, blob: String)? { ("loss", "loss") }
    }

    @Test("a snapshot request (SIGHUP) writes one snapshot after the current iteration and training goes on")
    func snapshotRequest() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let options = Self.options(folder)
        options.stop.requestSnapshot()
        let trainer = try Trainer(solverPath: try Self.solver(in: folder), options: options, compile: Self.compile)
        let result = try trainer.train()
        #expect(!result.stoppedEarly && result.losses.count == 30)
        #expect(result.snapshots.map { URL(fileURLWithPath: $0.model).lastPathComponent }
                == ["snap_iter_1.caffemodel", "snap_iter_10.caffemodel", "snap_iter_20.caffemodel", "snap_iter_30.caffemodel"])
    }

    @Test("a NaN loss is reported as NaN, never -nan")
    func negativeNaNLoss() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect("\(-Float.nan)" == "-nan")  // what the message must not show
        let trainer = try Trainer(solverPath: try Self.solver(in: folder), options: Self.options(folder)) { graph, parameters in
            NegativeNaNNet(LinearRegressionNet(graph: graph, parameters: parameters))
        }
        do {
            try trainer.train()
            Issue.record("expected the NaN loss to stop training")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.message == "the loss became NaN at iteration 0; the first non-finite value is in blob 'loss', made by layer 'loss'")
        }
    }

    @Test("a stop request snapshots and stops; test nets report mean outputs")
    func stopAndTest() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var options = Self.options(folder)
        options.stop.request()
        let trainer = try Trainer(solverPath: try Self.solver(in: folder, "test_iter: 3 test_interval: 10"), options: options, compile: Self.compile)
        #expect(trainer.testNets.count == 1)
        let result = try trainer.train()
        #expect(result.stoppedEarly && result.losses.count == 1)
        #expect(result.snapshots.map { URL(fileURLWithPath: $0.model).lastPathComponent } == ["snap_iter_1.caffemodel"])
        #expect(result.tests.count == 1 && result.tests[0].iteration == 0 && result.tests[0].scores[0]["loss"] != nil)
    }

    @Test("a solver with no net, or a missing LMDB, says so in one line")
    func badInput() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("s.prototxt").path
        try "base_lr: 0.1".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: Diagnostic.self) { try Trainer(solverPath: path, options: Self.options(folder), compile: Self.compile) }
        do { _ = try Trainer(solverPath: path, options: Self.options(folder), compile: Self.compile) } catch {
            #expect("\(error)" == "\(path): the solver names no net\n  hint: set net: \"train_val.prototxt\" (or train_net)")
        }
        let net = """
        layer { name: "d" type: "Data" top: "x" top: "l" data_param { source: "no_such_lmdb" batch_size: 4 backend: LMDB } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 1 } }
        """
        try net.write(to: folder.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        do {
            _ = try Trainer(solverPath: try Self.solver(in: folder), options: Self.options(folder), compile: Self.compile)
            Issue.record("expected a missing-LMDB error")
        } catch {
            #expect("\(error)".contains("no_such_lmdb"), "\(error)")
            #expect(!"\(error)".contains("\n\n"))
        }
    }
}
