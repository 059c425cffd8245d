import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// Training forward and backward of the segmentation and sequence forks' layers: SegNet's and
/// ENet's BN (LEARN: batch statistics; INFERENCE: scale and shift), ENet's spatial dropout and
/// CTPN's Transpose and Reverse. Gradients are checked against central differences of the
/// float32 forward, coordinate by coordinate, for the bottom and for each parameter blob.
@Suite("segmentation and sequence fork layers in training")
struct SegmentationGradientTests {
    /// The fork-gradient suites' deterministic inputs (`ForkLayerGradientTests.values`).
    static func values(_ count: Int, seed: UInt64) -> [Float] { ForkLayerGradientTests.values(count, seed: seed) }

    static func compile(_ text: String, parameters: [String: [NDArray]] = [:], phase: Caffe_Phase = .train, seed: UInt64 = 1701) throws -> TrainingNet {
        let graph = try GraphBuilder(phase: phase, insertsSplits: true).build(try CaffeFiles.parseNet(text: text))
        return try sharedTrainingCompiler.compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: true, seed: seed)
    }

    /// f = Σ y · seed after one forward (with `extra` fed beside x).
    static func objective(_ net: TrainingNet, x: NDArray, seed: [Float], extra: [String: NDArray] = [:]) throws -> Double {
        let y = try net.run(extra.merging(["x": x]) { $1 }, backward: false).outputs["y"]!
        return zip(y.data, seed).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Central differences of f for a few coordinates of x and of each parameter blob of `layer`,
    /// against the analytic diffs of one backward; returns the worst relative error.
    static func worstError(_ text: String, layer: String, x: NDArray, parameters: [String: [NDArray]], outputCount: Int,
                           extra: [String: NDArray] = [:]) throws -> Double {
        let seed = values(outputCount, seed: 99)
        let net = try compile(text, parameters: parameters)
        net.setTopDiffs(["y": NDArray(shape: [outputCount], data: seed)])
        net.zeroParameterDiffs()
        _ = try net.run(extra.merging(["x": x]) { $1 }, backward: true)
        let dx = try #require(net.blobDiff("x")).data
        let diffs = try #require(net.parameterDiffs()[layer])
        let eps: Float = 1e-2
        var worst = 0.0
        func compare(_ analytic: Float, _ plus: Double, _ minus: Double) {
            let numeric = (plus - minus) / Double(2 * eps)
            worst = max(worst, abs(Double(analytic) - numeric) / max(1e-2, abs(numeric)))
        }
        for i in stride(from: 0, to: x.count, by: max(1, x.count / 7)) {
            var up = x, down = x
            up.data[i] += eps
            down.data[i] -= eps
            compare(dx[i], try objective(net, x: up, seed: seed, extra: extra), try objective(net, x: down, seed: seed, extra: extra))
        }
        for (k, blob) in parameters[layer]!.enumerated() {
            for i in stride(from: 0, to: blob.count, by: max(1, blob.count / 3)) {
                var up = parameters, down = parameters
                up[layer]![k].data[i] += eps
                down[layer]![k].data[i] -= eps
                try net.setParameters(up)
                let plus = try objective(net, x: x, seed: seed, extra: extra)
                try net.setParameters(down)
                let minus = try objective(net, x: x, seed: seed, extra: extra)
                compare(diffs[k].data[i], plus, minus)
            }
        }
        try net.setParameters(parameters)
        return worst
    }

    static func bnNet(_ mode: String) -> String {
        """
        force_backward: true
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 4 dim: 3 dim: 5 } } }
        layer { name: "bn" type: "BN" bottom: "x" top: "y" bn_param { bn_mode: \(mode) } }
        """
    }

    static let bnParameters = ["bn": [NDArray(shape: [1, 4, 1, 1], data: [1.5, -0.5, 0.75, 2]), NDArray(shape: [1, 4, 1, 1], data: [0.1, -1, 0.5, 0])]]

    @Test("BN (SegNet/ENet) backward in LEARN and INFERENCE mode matches central differences for x, scale and shift", arguments: ["LEARN", "INFERENCE"])
    func bnGradients(_ mode: String) throws {
        let x = NDArray(shape: [3, 4, 3, 5], data: Self.values(180, seed: 5))
        let worst = try Self.worstError(Self.bnNet(mode), layer: "bn", x: x, parameters: Self.bnParameters, outputCount: 180)
        #expect(worst < 2e-2, "worst relative error \(worst)")
    }

    @Test("BN LEARN's training forward normalizes with the batch statistics, as the fork's Forward_cpu")
    func bnTrainingForward() throws {
        let net = try Self.compile(Self.bnNet("LEARN"), parameters: Self.bnParameters)
        let x = Self.values(180, seed: 5)
        let y = try net.run(["x": NDArray(shape: [3, 4, 3, 5], data: x)], backward: false).outputs["y"]!
        let scale = Self.bnParameters["bn"]![0].data, shift = Self.bnParameters["bn"]![1].data
        for c in 0..<4 {
            let indices = (0..<3).flatMap { n in (0..<15).map { (n * 4 + c) * 15 + $0 } }
            let mean = indices.reduce(0.0) { $0 + Double(x[$1]) } / 45
            let variance = indices.reduce(0.0) { $0 + Double(x[$1]) * Double(x[$1]) } / 45 - mean * mean
            for i in indices {
                let expected = Double(scale[c]) * (Double(x[i]) - mean) / (variance + 1e-9).squareRoot() + Double(shift[c])
                #expect(abs(Double(y.data[i]) - expected) < 1e-4, "channel \(c) element \(i)")
            }
        }
    }

    static let spatialDropout = """
        force_backward: true
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 8 dim: 64 dim: 3 dim: 4 } } }
        layer { name: "drop" type: "Python" bottom: "x" top: "y"
                python_param { module: "spatial_dropout" layer: "SpatialDropoutLayer" param_str: "{'phase': 'TRAIN', 'p': '0.25'}" } }
        """

    @Test("ENet's spatial dropout drops whole channels per image with probability p, scales the rest by 1/(1 − p), and backward uses the same mask")
    func spatialDropoutMask() throws {
        let net = try Self.compile(Self.spatialDropout, seed: 1234)
        let x = NDArray(shape: [8, 64, 3, 4], data: Self.values(8 * 64 * 12, seed: 3).map { $0 == 0 ? 1 : $0 })
        let ones = NDArray(shape: [8, 64, 3, 4], repeating: 1)
        net.setTopDiffs(["y": ones])
        let y = try net.run(["x": x], backward: true).outputs["y"]!
        let dx = try #require(net.blobDiff("x"))
        let scale = Float(1) / Float(0.75)
        var kept = 0
        for row in 0..<(8 * 64) {
            let range = (row * 12)..<((row + 1) * 12)
            let dropped = range.allSatisfy { y.data[$0] == 0 }
            let scaled = range.allSatisfy { y.data[$0] == x.data[$0] * scale }
            #expect(dropped || scaled, "row \(row) is neither dropped nor kept whole")
            #expect(range.allSatisfy { dx.data[$0] == (dropped ? 0 : scale) }, "row \(row): backward's mask differs")
            if !dropped { kept += 1 }
        }
        // 512 Bernoulli(0.75) draws: the kept fraction lies within 4 standard deviations (0.077).
        #expect(abs(Double(kept) / 512 - 0.75) < 0.077, "kept \(kept) of 512")
        // The expectation of y is x: the mean of y / x over the rows is close to 1.
        let ratio = (0..<y.count).reduce(0.0) { $0 + Double(y.data[$1] / x.data[$1]) } / Double(y.count)
        #expect(abs(ratio - 1) < 0.1, "E[y/x] = \(ratio)")
        // Another seed draws other masks.
        let other = try Self.compile(Self.spatialDropout, seed: 99)
        #expect(try other.run(["x": x], backward: false).outputs["y"] != y)
    }

    @Test("ENet's spatial dropout with a phase other than 'TRAIN' in param_str scales by 1/(1 − p) forward and backward, as the fork's else branch")
    func spatialDropoutTestBranch() throws {
        let text = Self.spatialDropout.replacingOccurrences(of: "'TRAIN'", with: "'TEST'")
        let net = try Self.compile(text)
        let x = NDArray(shape: [8, 64, 3, 4], data: Self.values(8 * 64 * 12, seed: 3))
        net.setTopDiffs(["y": NDArray(shape: [8, 64, 3, 4], repeating: 1)])
        let y = try net.run(["x": x], backward: true).outputs["y"]!
        #expect(y.data == x.data.map { $0 * (Float(1) / Float(0.75)) })
        #expect(net.blobDiff("x")?.data == Array(repeating: Float(1) / Float(0.75), count: x.count))
    }

    @Test("CTPN's Transpose and Reverse pass the top diff back through the inverse permutation and the same reversal")
    func transposeReverseBackward() throws {
        let text = """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
            layer { name: "t" type: "Transpose" bottom: "x" top: "t" transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
            layer { name: "r" type: "Reverse" bottom: "t" top: "y" reverse_param { axis: 0 } }
            """
        let net = try Self.compile(text)
        let x = NDArray(shape: [2, 3, 4, 5], data: Self.values(120, seed: 8))
        let seed = Self.values(120, seed: 9)
        net.setTopDiffs(["y": NDArray(shape: [5, 4, 2, 3], data: seed)])
        _ = try net.run(["x": x], backward: true)
        let dx = try #require(net.blobDiff("x"))
        // y[w', h, n, c] = x[n, c, h, 4 − w'], so dx[n, c, h, w] = seed[4 − w, h, n, c].
        for n in 0..<2 { for c in 0..<3 { for h in 0..<4 { for w in 0..<5 {
            #expect(dx.data[((n * 3 + c) * 4 + h) * 5 + w] == seed[(((4 - w) * 4 + h) * 2 + n) * 3 + c])
        } } } }
    }

    static func lstmNet(clipping: Float) -> String {
        """
        force_backward: true
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
        layer { name: "lstm" type: "Lstm" bottom: "x" top: "y" lstm_param { num_output: 3 clipping_threshold: \(clipping) } }
        """
    }

    static let lstmParameters = ["lstm": [NDArray(shape: [12, 3], data: values(36, seed: 31).map { $0 * 0.3 }),
                                          NDArray(shape: [12, 3], data: values(36, seed: 32).map { $0 * 0.3 }),
                                          NDArray(shape: [12], data: values(12, seed: 33).map { $0 * 0.2 })]]

    @Test("CTPN's Lstm backward through time matches central differences for x, W_i, W_h and b")
    func ctpnLSTMGradients() throws {
        let x = NDArray(shape: [4, 2, 3], data: Self.values(24, seed: 34))
        let worst = try Self.worstError(Self.lstmNet(clipping: 0), layer: "lstm", x: x, parameters: Self.lstmParameters, outputCount: 24)
        #expect(worst < 2e-2, "worst relative error \(worst)")
    }

    @Test("CTPN's Lstm clips each step's pre-activation diffs to ±clipping_threshold, as the fork's caffe_bound")
    func ctpnLSTMClipping() throws {
        let x = NDArray(shape: [4, 2, 3], data: Self.values(24, seed: 34))
        func biasDiff(_ clipping: Float) throws -> [Float] {
            let net = try Self.compile(Self.lstmNet(clipping: clipping), parameters: Self.lstmParameters)
            net.setTopDiffs(["y": NDArray(shape: [4, 2, 3], data: Self.values(24, seed: 35).map { $0 * 10 })])
            net.zeroParameterDiffs()
            _ = try net.run(["x": x], backward: true)
            return try #require(net.parameterDiffs()["lstm"])[2].data
        }
        let free = try biasDiff(0), clipped = try biasDiff(0.01)
        // db sums T·N = 8 clipped pre-activation diffs per gate unit.
        #expect(clipped.allSatisfy { abs($0) <= 8 * 0.01 + 1e-6 }, "\(clipped)")
        #expect(free.contains { abs($0) > 8 * 0.01 }, "the seed is large enough for clipping to matter: \(free)")
    }

    @Test("CTPN's Lstm with a clip bottom: restarts mid-sequence stop the gradient through h and c there; central differences agree for x, W_i, W_h and b")
    func ctpnLSTMClipGradients() throws {
        let text = """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
            layer { name: "clip" type: "Input" top: "clip" input_param { shape { dim: 4 dim: 2 } } }
            layer { name: "lstm" type: "Lstm" bottom: "x" bottom: "clip" top: "y" lstm_param { num_output: 3 } }
            """
        // Both streams start fresh at t = 0 (so the state the previous run carried does not enter
        // the objective); stream 0 restarts at t = 2, stream 1 at t = 3.
        let clip = NDArray(shape: [4, 2], data: [0, 0, 1, 1, 0, 1, 1, 0])
        let x = NDArray(shape: [4, 2, 3], data: Self.values(24, seed: 36))
        let worst = try Self.worstError(text, layer: "lstm", x: x, parameters: Self.lstmParameters, outputCount: 24, extra: ["clip": clip])
        #expect(worst < 2e-2, "worst relative error \(worst)")
        // A restart cuts the sequence: the diff of y at t ≥ 2 of stream 0 does not reach x at t < 2 of stream 0.
        let net = try Self.compile(text, parameters: Self.lstmParameters)
        var seed = [Float](repeating: 0, count: 24)
        for step in 2..<4 { for k in 0..<3 { seed[(step * 2 + 0) * 3 + k] = 1 } }
        net.setTopDiffs(["y": NDArray(shape: [4, 2, 3], data: seed)])
        _ = try net.run(["x": x, "clip": clip], backward: true)
        let dx = try #require(net.blobDiff("x")).data
        #expect((0..<2).allSatisfy { step in (0..<3).allSatisfy { dx[(step * 2 + 0) * 3 + $0] == 0 } }, "\(dx)")
        #expect((2..<4).contains { step in (0..<3).contains { dx[(step * 2 + 0) * 3 + $0] != 0 } })
        #expect(try #require(net.blobDiff("clip")).data.allSatisfy { $0 == 0 })
    }
}
