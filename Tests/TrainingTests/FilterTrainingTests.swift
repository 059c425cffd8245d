import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// Filter in training: forward and backward follow each run's selected rows, as Caffe's per-Forward
/// reshape does; unselected rows get zero diffs, the selector none.
@Suite("Filter in training")
struct FilterTrainingTests {
    /// The indices of the rows a selector keeps (C truthiness).
    static func kept(_ selector: [Float]) -> [Int] { selector.indices.filter { selector[$0] != 0 || selector[$0].isNaN } }

    static func rows(_ array: NDArray, _ rows: [Int]) -> NDArray {
        let inner = array.shape.dropFirst().reduce(1, *)
        return NDArray(shape: [rows.count] + array.shape.dropFirst(), data: rows.flatMap { array.data[($0 * inner)..<(($0 + 1) * inner)] })
    }

    /// `values` (one row per kept row) placed at `rows` of an `n`-row array of zeros.
    static func scatter(_ values: NDArray, _ rows: [Int], n: Int) -> [Float] {
        let inner = values.shape.dropFirst().reduce(1, *)
        var result = [Float](repeating: 0, count: n * inner)
        for (k, row) in rows.enumerated() { result.replaceSubrange((row * inner)..<((row + 1) * inner), with: values.data[(k * inner)..<((k + 1) * inner)]) }
        return result
    }

    /// Bias's gradient along axis 1: the sum over every other axis of each channel's diffs.
    static func channelSums(_ diff: NDArray, channels: Int) -> [Float] {
        let inner = diff.shape.dropFirst(2).reduce(1, *)
        var sums = [Float](repeating: 0, count: channels)
        for (i, value) in diff.data.enumerated() { sums[(i / inner) % channels] += value }
        return sums
    }

    static func seeds(_ shape: [Int], salt: Int) -> NDArray {
        NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { Float(sin(Double($0 * 7 + salt))) })
    }

    @Test("the golden Filter trains for 3, 1, 4 rows and back: unselected rows get zero diffs, the biases sum the selected seeds")
    func countChanges() throws {
        let golden = try GoldenTrainingCase("layers", "filter")
        let compiler = try Compiler(threads: 1)
        let net = try compiler.compileTraining(graph: golden.graph(), parameters: golden.parameters(), keepingAllBlobs: true)
        var inputs = try golden.archive("inputs.npz")
        let (x, z) = (inputs["x"]!, inputs["z"]!)
        for (step, selector) in [[Float]([1, 0, 1, 1]), [0, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0], [1, 0, 1, 1]].enumerated() {
            let kept = Self.kept(selector)
            inputs["sel"] = NDArray(shape: [4], data: selector)
            let dfx = Self.seeds([kept.count, 3, 2], salt: step), dfz = Self.seeds([kept.count, 5], salt: 100 + step)
            net.setTopDiffs(["fx": dfx, "fz": dfz])
            net.zeroParameterDiffs()
            let (loss, outputs) = try net.run(inputs, backward: true)
            #expect(outputs["fx"]?.shape == [kept.count, 3, 2] && outputs["fx"]?.data == Self.rows(x, kept).data, "\(selector)")
            #expect(outputs["fz"]?.shape == [kept.count, 5] && outputs["fz"]?.data == Self.rows(z, kept).data, "\(selector)")
            // Caffe's loss for a loss-weighted top is Σ weight · top (the seeds only replace the diffs).
            let sum = (Self.rows(x, kept).data + Self.rows(z, kept).data).reduce(0, +)
            #expect(abs(loss - sum) <= 1e-5 * max(1, abs(sum)), "\(selector): loss \(loss), expected \(sum)")
            #expect(net.blobDiff("x1")?.data == Self.scatter(dfx, kept, n: 4), "\(selector)")
            #expect(net.blobDiff("z1")?.data == Self.scatter(dfz, kept, n: 4), "\(selector)")
            let diffs = net.parameterDiffs()
            let expectedBiases: [Float] = Self.channelSums(dfx, channels: 3) + Self.channelSums(dfz, channels: 5)
            let actualBiases: [Float] = diffs["x_pre"]![0].data + diffs["z_pre"]![0].data
            for (actual, expected) in zip(actualBiases, expectedBiases) {
                #expect(abs(actual - expected) <= 1e-5, "\(selector): bias diff \(actual), expected \(expected)")
            }
            #expect(net.filterRows?.current == [kept.count])
        }
        #expect(net.filterRows?.specializations == 3)
    }

    @Test("profiling (swiftjit time --backward) times the layout of the last run, Filter steps included")
    func profile() throws {
        let golden = try GoldenTrainingCase("layers", "filter")
        let net = try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters())
        _ = try net.run(try golden.archive("inputs.npz"), backward: true)
        let profile = net.profileSteps()
        #expect(profile.forward.count == net.forwardStepCount && profile.forward.contains { $0.layer == "filter" })
        #expect(profile.backward.count == net.executable.steps.count - net.forwardStepCount && profile.backward.contains { $0.layer == "filter" })
    }

    @Test("no selected row: forward gives 0-row tops as in Caffe; backward, where Caffe divides by zero, is an error naming the layer")
    func zeroRows() throws {
        let golden = try GoldenTrainingCase("layers", "filter")
        let net = try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters(), keepingAllBlobs: true)
        var inputs = try golden.archive("inputs.npz")
        inputs["sel"] = NDArray(shape: [4], repeating: 0)
        let (loss, outputs) = try net.run(inputs, backward: false)
        #expect(outputs["fx"]?.shape == [0, 3, 2] && outputs["fz"]?.shape == [0, 5] && loss == 0)
        do {
            _ = try net.run(inputs, backward: true)
            Issue.record("backward through a Filter with no selected row should throw")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.layer == "filter")
            #expect(diagnostic.message.contains("selected no rows"))
        }
        // The net recovers with the next batch that selects rows.
        inputs["sel"] = NDArray(shape: [4], data: [1, 0, 1, 1])
        net.setTopDiffs(try golden.archive("top_diff.npz"))
        net.zeroParameterDiffs()
        _ = try net.run(inputs, backward: true)
        let grads = try golden.archive("grads.npz")
        #expect(net.blobDiff("x1")?.data == grads["x1"]?.data)
        for (a, b) in zip(net.parameterDiffs()["x_pre"]![0].data, grads["x_pre/0"]!.data) { #expect(abs(a - b) <= 1e-5) }
    }

    @Test("parameter diffs accumulate across runs of different counts (iter_size): the variants share one set of parameters")
    func sharedParameters() throws {
        let golden = try GoldenTrainingCase("layers", "filter")
        let net = try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters())
        var inputs = try golden.archive("inputs.npz")
        func diff(_ selector: [Float]) throws -> [Float] {
            inputs["sel"] = NDArray(shape: [4], data: selector)
            _ = try net.run(inputs, backward: true)
            return net.parameterDiffs()["x_pre"]![0].data
        }
        net.zeroParameterDiffs()
        let a = try diff([1, 1, 0, 0])
        net.zeroParameterDiffs()
        let b = try diff([0, 0, 0, 1])
        net.zeroParameterDiffs()
        _ = try diff([1, 1, 0, 0])
        let both = try diff([0, 0, 0, 1])
        for k in 0..<3 { #expect(abs(both[k] - (a[k] + b[k])) <= 1e-5) }
        // A solver step through `learnableParameters` reaches every variant.
        let parameters = net.learnableParameters
        for p in parameters { for i in 0..<p.data.count { p.data[i] = 1 } }
        inputs["sel"] = NDArray(shape: [4], data: [0, 1, 0, 0])
        let fx = try net.run(inputs, backward: false).outputs["fx"]!
        #expect(fx.data == Self.rows(inputs["x"]!, [1]).data.map { $0 + 1 })
    }

    static func lossNet(_ rows: Int?, normalization: String) -> String {
        let n = rows ?? 5
        let filter = rows == nil ? """
            layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 5 } } }
            layer { name: "pick" type: "Filter" bottom: "x1" bottom: "label" bottom: "sel" top: "fx" top: "flabel" }
            layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fx" bottom: "flabel" top: "loss" propagate_down: true propagate_down: false \(normalization) }
            """ : """
            layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x1" bottom: "label" top: "loss" \(normalization) }
            """
        return """
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(n) dim: 4 } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { dim: \(n) } } }
            layer { name: "bias" type: "Bias" bottom: "x" top: "x1" }
            \(filter)
            """
    }

    @Test("a SoftmaxWithLoss below a Filter normalizes by the selected rows, like the same loss fed only those rows",
          arguments: ["", "loss_param { normalization: BATCH_SIZE }", "loss_param { normalization: FULL }"])
    func lossNormalization(_ normalization: String) throws {
        func compile(_ text: String) throws -> TrainingNet {
            let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
            return try sharedTrainingCompiler.compileTraining(graph: graph, parameters: ["bias": [NDArray(shape: [4], data: [0.1, -0.2, 0.3, 0])]], keepingAllBlobs: true)
        }
        let filtered = try compile(Self.lossNet(nil, normalization: normalization))
        let x = NDArray(shape: [5, 4], data: (0..<20).map { Float(cos(Double($0))) })
        let label = NDArray(shape: [5], data: [3, 0, 1, 2, 1])
        for selector: [Float] in [[1, 0, 1, 1, 0], [0, 0, 0, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]] {
            let kept = Self.kept(selector)
            filtered.zeroParameterDiffs()
            let loss = try filtered.run(["x": x, "label": label, "sel": NDArray(shape: [5], data: selector)], backward: true).loss
            let reference = try compile(Self.lossNet(kept.count, normalization: normalization))
            reference.zeroParameterDiffs()
            let expected = try reference.run(["x": Self.rows(x, kept), "label": Self.rows(label, kept)], backward: true).loss
            #expect(abs(loss - expected) <= 1e-6 * abs(expected), "\(selector): loss \(loss), expected \(expected)")
            let dx = Self.scatter(reference.blobDiff("x1")!, kept, n: 5)
            for (a, b) in zip(filtered.blobDiff("x1")!.data, dx) { #expect(abs(a - b) <= 1e-6, "\(selector)") }
            for (a, b) in zip(filtered.parameterDiffs()["bias"]![0].data, reference.parameterDiffs()["bias"]![0].data) {
                #expect(abs(a - b) <= 1e-6, "\(selector)")
            }
        }
        // No row selected: Caffe's normalizer is at least 1, so the loss is 0 (forward only, see `zeroRows`).
        let none = try filtered.run(["x": x, "label": label, "sel": NDArray(shape: [5], repeating: 0)], backward: false)
        #expect(none.loss == 0 && none.outputs["loss"]?.data == [0])
    }

    @Test("TRAIN BatchNorm before a Filter updates its statistics once per run, also when the run re-specializes")
    func prefixRunsOnce() throws {
        let text = """
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } }
            layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 4 } } }
            layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }
            layer { name: "pick" type: "Filter" bottom: "y" bottom: "sel" top: "fy" loss_weight: 1 }
            """
        let parameters: [String: [NDArray]] = ["bn": [NDArray(shape: [3], repeating: 0), NDArray(shape: [3], repeating: 0), NDArray(shape: [1], repeating: 0)]]
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
        let x = NDArray(shape: [4, 3], data: (0..<12).map { Float($0 * $0 % 7) })
        var statistics: [[Float]] = []
        for selector: [Float] in [[1, 1, 1, 1], [0, 1, 1, 0]] {
            let net = try sharedTrainingCompiler.compileTraining(graph: graph, parameters: parameters)
            for _ in 0..<2 { _ = try net.run(["x": x, "sel": NDArray(shape: [4], data: selector)], backward: true) }
            statistics.append(net.parameterArrays()["bn"]!.flatMap(\.data))
        }
        #expect(statistics[0] == statistics[1])
        #expect(abs(statistics[0].last! - 1.999) < 1e-6)
    }

    @Test("Filter refuses to backpropagate to its selector under force_backward, as Caffe aborts")
    func selectorGetsNoDiff() throws {
        let text = """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 } } }
            layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 3 } } }
            layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "y" }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
        let net = try sharedTrainingCompiler.compileTraining(graph: graph, parameters: [:])
        let feeds = ["x": NDArray(shape: [3, 2], data: [1, 2, 3, 4, 5, 6]), "sel": NDArray(shape: [3], data: [0, 1, 1])]
        #expect(try net.run(feeds, backward: false).outputs["y"]?.data == [3, 4, 5, 6])
        do {
            _ = try net.run(feeds, backward: true)
            Issue.record("expected Caffe's refusal")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.layer == "f")
            #expect(diagnostic.message == "Filter cannot backpropagate to its selector 'sel' (Caffe aborts here too)")
        }
    }
}
