import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// Caffe's training bookkeeping, one behaviour per test: which blobs get diffs, loss weights,
/// propagate_down, shared parameters, iter_size accumulation, dropout masks, NaN reports, errors.
@Suite("Caffe's training semantics")
struct TrainingSemanticsTests {
    func compile(_ text: String, phase: Caffe_Phase = .train, parameters: [String: [NDArray]] = [:], keep: Bool = true,
                 seed: UInt64 = 1701, shapes: [String: TensorShape] = [:]) throws -> TrainingNet {
        let graph = try GraphBuilder(phase: phase, inputShapes: shapes, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
        return try sharedTrainingCompiler.compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: keep, seed: seed)
    }

    func lenet(_ weights: String) throws -> (TrainingNet, batch: [String: NDArray]) {
        let train = GoldenTrainingCase.shared.appendingPathComponent("golden/train")
        let text = try String(contentsOf: train.appendingPathComponent("common/train_test.prototxt"), encoding: .utf8)
        let values = try CaffeParameters.arrays(from: CaffeFiles.loadWeights(path: train.appendingPathComponent(weights).path))
        let net = try compile(text, parameters: values, shapes: ["data": TensorShape([16, 1, 28, 28]), "label": TensorShape([16])])
        let batches = try NumPyFile.readArchive(path: train.appendingPathComponent("data/first_batches.npz").path)
        return (net, ["data": batches["data_batch0"]!, "label": batches["label_batch0"]!])
    }

    @Test("the TRAIN LeNet's loss on Caffe's first batch matches losses.csv at iterations 0 and 20")
    func lenetLoss() throws {
        // Iteration 20 reads batch 0 again: the train LMDB holds exactly 20 batches.
        for (weights, expected) in [("common/init.caffemodel", Float(2.29449654)), ("sgd/snap_iter_20.caffemodel", Float(1.01085711))] {
            let (net, batch) = try lenet(weights)
            let loss = try net.run(batch, backward: true).loss
            #expect(abs(loss - expected) <= 1e-5 * expected, "\(weights): loss \(loss), Caffe \(expected)")
        }
    }

    @Test("without force_backward, data and labels get no diff and every parameter gets one")
    func noDiffIntoData() throws {
        let (net, batch) = try lenet("common/init.caffemodel")
        net.zeroParameterDiffs()
        _ = try net.run(batch, backward: true)
        #expect(net.blobDiff("data") == nil)
        #expect(net.blobDiff("label") == nil)
        #expect(net.blobDiff("pool1") != nil)
        for (layer, diffs) in net.parameterDiffs() {
            #expect(diffs.allSatisfy { $0.data.contains { $0 != 0 } }, "\(layer) got no gradient")
        }
        #expect(net.learnableParameterNames == ["conv1/0", "conv1/1", "conv2/0", "conv2/1", "ip1/0", "ip1/1", "ip2/0", "ip2/1"])
        #expect(net.learnableParameters.map(\.lrMult) == [1, 2, 1, 2, 1, 2, 1, 2])
    }

    static let innerProduct = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 2 inner_product_param { num_output: 2 } }
        """
    static let weights: [String: [NDArray]] = ["ip": [NDArray(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]), NDArray(shape: [2], data: [0.5, -1])]]
    static let x = NDArray(shape: [2, 3], data: [1, 0, -1, 2, 1, 0])

    @Test("a loss_weight on a non-loss layer adds weight · Σ top to the loss and seeds its backward")
    func lossWeightOnNonLossLayer() throws {
        let net = try compile(Self.innerProduct, parameters: Self.weights)
        net.zeroParameterDiffs()
        let (loss, outputs) = try net.run(["x": Self.x], backward: true)
        // y = x·Wᵀ + b = [[-2+0.5, -2-1], [4+0.5, 13-1]]
        #expect(outputs["y"]?.data == [-1.5, -3, 4.5, 12])
        #expect(loss == 2 * (-1.5 - 3 + 4.5 + 12))
        let diffs = net.parameterDiffs()["ip"]!
        #expect(diffs[0].data == [6, 2, -2, 6, 2, -2])   // 2 · Σ_m x[m]
        #expect(diffs[1].data == [4, 4])                  // 2 · M
    }

    @Test("parameter diffs accumulate across runs until zeroed, as iter_size needs")
    func accumulation() throws {
        let net = try compile(Self.innerProduct, parameters: Self.weights)
        net.zeroParameterDiffs()
        _ = try net.run(["x": Self.x], backward: true)
        _ = try net.run(["x": Self.x], backward: true)
        #expect(net.parameterDiffs()["ip"]![1].data == [8, 8])
        net.zeroParameterDiffs()
        #expect(net.parameterDiffs()["ip"]![1].data == [0, 0])
        _ = try net.run(["x": Self.x], backward: false)
        #expect(net.parameterDiffs()["ip"]![1].data == [0, 0])
    }

    @Test("propagate_down: false leaves that bottom without a diff and skips the branch above it")
    func propagateDown() throws {
        let text = """
            layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 4 } } }
            layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 4 } } }
            layer { name: "ba" type: "Bias" bottom: "a" top: "a1" bias_param { axis: 0 num_axes: 0 } }
            layer { name: "bb" type: "Bias" bottom: "b" top: "b1" bias_param { axis: 0 num_axes: 0 } }
            layer { name: "sum" type: "Eltwise" bottom: "a1" bottom: "b1" top: "c" propagate_down: true propagate_down: false loss_weight: 1 }
            """
        let zero = ["ba": [NDArray([0])], "bb": [NDArray([0])]]
        let feeds = ["a": NDArray([1, 2, 3, 4]), "b": NDArray([1, 1, 1, 1])]
        let net = try compile(text, parameters: zero)
        net.zeroParameterDiffs()
        _ = try net.run(feeds, backward: true)
        #expect(net.blobDiff("a1")?.data == [1, 1, 1, 1])
        #expect(net.blobDiff("b1") == nil)
        #expect(net.parameterDiffs()["ba"]![0].data == [4])
        #expect(net.parameterDiffs()["bb"]![0].data == [0])
        // force_backward wins over propagate_down: false, as in Caffe's Net::Init.
        let forced = try compile("force_backward: true\n" + text, parameters: zero)
        forced.zeroParameterDiffs()
        _ = try forced.run(feeds, backward: true)
        #expect(forced.blobDiff("b1")?.data == [1, 1, 1, 1])
        #expect(forced.parameterDiffs()["bb"]![0].data == [4])
    }

    @Test("shared parameters are one learnable blob with the owner's multipliers, and their gradients add up")
    func sharing() throws {
        let net = try compile("""
            layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 3 } } }
            layer { name: "ip1" type: "InnerProduct" bottom: "a" top: "y1" loss_weight: 1
                    param { name: "w" lr_mult: 3 } param { name: "b" } inner_product_param { num_output: 2 } }
            layer { name: "ip2" type: "InnerProduct" bottom: "a" top: "y2" loss_weight: 1
                    param { name: "w" } param { name: "b" decay_mult: 0 } inner_product_param { num_output: 2 } }
            """, parameters: ["ip1": Self.weights["ip"]!, "ip2": Self.weights["ip"]!])
        #expect(net.learnableParameterNames == ["ip1/0", "ip1/1"])
        #expect(net.learnableParameters.map(\.lrMult) == [3, 1])
        #expect(net.learnableParameters.map(\.decayMult) == [1, 0])
        net.zeroParameterDiffs()
        _ = try net.run(["a": NDArray(shape: [1, 3], data: [1, 2, 3])], backward: true)
        let diffs = net.parameterDiffs()
        #expect(diffs["ip1"]![0].data == [2, 4, 6, 2, 4, 6])
        #expect(diffs["ip2"]![0].data == diffs["ip1"]![0].data)
        #expect(diffs["ip1"]![1].data == [2, 2])
    }

    static let dropout = """
        force_backward: true
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 100 dim: 100 } } }
        layer { name: "drop" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.3 } }
        """

    @Test("TRAIN dropout keeps about 1 − ratio of the values scaled by 1/(1 − ratio), and backward applies the same mask")
    func dropoutMask() throws {
        let net = try compile(Self.dropout)
        let ones = NDArray(shape: [100, 100], repeating: 1)
        net.setTopDiffs(["y": ones])
        let y = try net.run(["x": ones], backward: true).outputs["y"]!
        let kept = y.data.filter { $0 != 0 }
        #expect(abs(Double(kept.count) / 10_000 - 0.7) < 0.02)
        #expect(kept.allSatisfy { $0 == Float(1) / Float(0.7) })
        #expect(net.blobDiff("x")?.data == y.data)
    }

    @Test("dropout masks are reproducible for a seed and differ between runs and seeds")
    func dropoutSeeds() throws {
        let ones = NDArray(shape: [100, 100], repeating: 1)
        let first = try compile(Self.dropout, keep: false), again = try compile(Self.dropout, keep: false)
        let other = try compile(Self.dropout, keep: false, seed: 42)
        let a1 = try first.run(["x": ones], backward: false).outputs["y"]!, a2 = try first.run(["x": ones], backward: false).outputs["y"]!
        let b1 = try again.run(["x": ones], backward: false).outputs["y"]!
        let c1 = try other.run(["x": ones], backward: false).outputs["y"]!
        #expect(a1 == b1)
        #expect(a1 != a2)
        #expect(a1 != c1)
        let test = try compile(Self.dropout, phase: .test)
        #expect(try test.run(["x": ones], backward: false).outputs["y"] == ones)
    }

    @Test("firstNonFinite names the first layer whose top holds NaN or infinity, and the run's statistics are kept")
    func nonFinite() throws {
        let net = try compile("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
            layer { name: "relu" type: "ReLU" bottom: "x" top: "r" }
            layer { name: "ip" type: "InnerProduct" bottom: "r" top: "y" inner_product_param { num_output: 2 } }
            layer { name: "out" type: "Power" bottom: "y" top: "z" loss_weight: 1 }
            """, parameters: Self.weights, keep: false)
        _ = try net.run(["x": Self.x], backward: true)
        #expect(net.firstNonFinite() == nil)
        try net.setParameters(["ip": [NDArray(shape: [2, 3], data: [1, .nan, 3, 4, 5, 6])]])
        let (loss, _) = try net.run(["x": Self.x], backward: true)
        #expect(loss.isNaN)
        let culprit = net.firstNonFinite()
        #expect(culprit?.layer == "ip")
        #expect(culprit?.blob == "y")

        // The replay restores the running statistics a TRAIN BatchNorm updates in forward.
        let normalized = try compile("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
            layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" }
            """, parameters: ["bn": [NDArray([0, 0, 0]), NDArray([1, 1, 1]), NDArray([1])]], keep: false)
        _ = try normalized.run(["x": Self.x], backward: false)
        let statistics = normalized.parameterArrays()
        #expect(statistics["bn"]![2].data == [Float(0.999) * 1 + 1])
        #expect(normalized.firstNonFinite() == nil)
        #expect(normalized.parameterArrays() == statistics)
    }

    @Test("setParameters and parameterArrays round-trip; a blob of the wrong size is refused, naming the layer")
    func parameterRoundTrip() throws {
        let net = try compile(Self.innerProduct, parameters: Self.weights)
        #expect(net.parameterArrays()["ip"]! == Self.weights["ip"]!)
        let changed = [NDArray(shape: [2, 3], data: [6, 5, 4, 3, 2, 1]), NDArray(shape: [2], data: [0, 0])]
        try net.setParameters(["ip": changed, "not_in_this_net": []])
        #expect(net.parameterArrays()["ip"]! == changed)
        #expect(net.learnableParameters[0].data[0] == 6)
        #expect(throws: Diagnostic.self) { try net.setParameters(["ip": [NDArray([1, 2])]]) }
        do {
            try net.setParameters(["ip": [NDArray([1, 2])]])
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.layer == "ip")
        }
    }

    @Test("Accuracy under force_backward runs forward but refuses backward, naming the layer")
    func accuracyBackward() throws {
        let net = try compile("""
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
            layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "accuracy" }
            """, phase: .test)
        let feeds = ["x": NDArray(shape: [2, 3], data: [0, 1, 2, 2, 1, 0]), "label": NDArray([2, 1])]
        #expect(try net.run(feeds, backward: false).outputs["accuracy"]?.data == [0.5])
        do {
            _ = try net.run(feeds, backward: true)
            Issue.record("backward through Accuracy should fail")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.layer == "acc")
        }
    }

    @Test("a graph without Split layers and a layer with no training lowering are diagnostics naming the layer")
    func refusals() throws {
        let text = """
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 } } }
            layer { name: "a" type: "AbsVal" bottom: "x" top: "a" loss_weight: 1 }
            layer { name: "b" type: "TanH" bottom: "x" top: "b" loss_weight: 1 }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: false).build(CaffeFiles.parseNet(text: text))
        #expect(throws: Diagnostic.self) { try sharedTrainingCompiler.compileTraining(graph: graph, parameters: [:]) }
        do {
            _ = try compile("""
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
                layer { name: "norm" type: "Normalize" bottom: "x" top: "y" }
                """, parameters: ["norm": [NDArray(shape: [2], repeating: 1)]])
            Issue.record("Normalize should be refused")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.layer == "norm")
        }
    }
}
