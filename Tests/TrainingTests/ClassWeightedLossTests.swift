import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// SoftmaxWithLoss with SegNet's and ENet's class weighting (`loss_param { weight_by_label_freqs:
/// true class_weighting: … }`), forward in inference (`run`/`Net`) and training, backward in
/// training, each against the NumPy reference written from the forks' C++
/// (Tests/references/weighted_softmax_loss.py), the gradient also against central differences,
/// and the forks' check on the number of weights as a diagnostic.
@Suite("class-weighted SoftmaxWithLoss (SegNet, ENet)")
struct ClassWeightedLossTests {
    /// One configuration: the scores' shape (axis 1 holds the classes), the loss_param text, the
    /// same settings as the reference's JSON, the loss weight, and whether labels include 255.
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var shape: [Int]
        var lossParam: String
        var json: String
        var lossWeight: Float = 1
        var labelsInclude255 = false
        var testDescription: String { name }
    }

    static let weights = "class_weighting: 0.25 class_weighting: 1.5 class_weighting: 3 class_weighting: 0.8"
    static let weightsJSON = "\"weight_by_label_freqs\": true, \"class_weighting\": [0.25, 1.5, 3, 0.8]"

    static let cases: [Case] = [
        Case(name: "weighted, 2×4×3×5, normalized by the count", shape: [2, 4, 3, 5],
             lossParam: "weight_by_label_freqs: true \(weights)", json: "{\(weightsJSON)}"),
        Case(name: "weighted with ignore_label 2 (a class), loss_weight 2", shape: [2, 4, 3, 5],
             lossParam: "ignore_label: 2 weight_by_label_freqs: true \(weights)", json: "{\(weightsJSON), \"ignore_label\": 2, \"loss_weight\": 2}",
             lossWeight: 2),
        Case(name: "weighted with ignore_label 255 as ENet's nets (255 in the labels)", shape: [2, 4, 4, 3],
             lossParam: "ignore_label: 255 weight_by_label_freqs: true \(weights)", json: "{\(weightsJSON), \"ignore_label\": 255}",
             labelsInclude255: true),
        Case(name: "weighted, normalize: false divides by N", shape: [3, 4, 2, 3],
             lossParam: "normalize: false weight_by_label_freqs: true \(weights)", json: "{\(weightsJSON), \"normalize\": false}"),
        Case(name: "weighted with BVLC's normalization: FULL and an ignored class", shape: [2, 4, 3, 3],
             lossParam: "normalization: FULL ignore_label: 0 weight_by_label_freqs: true \(weights)",
             json: "{\(weightsJSON), \"ignore_label\": 0, \"normalization\": \"FULL\"}"),
        Case(name: "weighted N×C classification (inner 1)", shape: [6, 4],
             lossParam: "weight_by_label_freqs: true \(weights)", json: "{\(weightsJSON)}"),
        Case(name: "class_weighting without weight_by_label_freqs is ignored, as in the forks", shape: [2, 4, 3, 5],
             lossParam: "\(weights)", json: "{\"weight_by_label_freqs\": false}"),
    ]

    static func net(_ c: Case, forceBackward: Bool) -> String {
        let dims = c.shape.map { "dim: \($0)" }.joined(separator: " ")
        let labelDims = ([c.shape[0], 1] + c.shape.dropFirst(2)).map { "dim: \($0)" }.joined(separator: " ")
        return """
            \(forceBackward ? "force_backward: true" : "")
            layer { name: "x" type: "Input" top: "x" input_param { shape { \(dims) } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { \(labelDims) } } }
            layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" loss_weight: \(c.lossWeight)
                    loss_param { \(c.lossParam) } }
            """
    }

    /// Scores in [-2, 2) and labels 0…3 (every fifth 255 when the case asks), deterministic.
    static func inputs(_ c: Case) -> (x: NDArray, label: NDArray) {
        let count = c.shape.reduce(1, *), positions = count / c.shape[1]
        let x = NDArray(shape: c.shape, data: ForkLayerGradientTests.values(count, seed: 11))
        let labels = (0..<positions).map { i -> Float in
            if c.labelsInclude255, i % 5 == 2 { return 255 }
            return Float((i * 7 + i / 3) % 4)
        }
        return (x, NDArray(shape: [c.shape[0], 1] + c.shape.dropFirst(2), data: labels))
    }

    struct Reference: Decodable {
        var loss: Double
        var grad: [Double]
    }

    static func reference(_ c: Case) throws -> Reference {
        let (x, label) = inputs(c)
        return try NumPyReference.run("weighted_softmax_loss.py", arrays: [("scores", x), ("label", label)], config: c.json)
    }

    static func training(_ c: Case) throws -> TrainingNet {
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: net(c, forceBackward: true)))
        return try sharedTrainingCompiler.compileTraining(graph: graph, parameters: [:], keepingAllBlobs: true, seed: 1)
    }

    @Test("forward in run and in training, and backward, equal the forks' C++ as NumPy computes it", arguments: cases)
    func againstReference(_ c: Case) throws {
        let expected = try Self.reference(c)
        let (x, label) = Self.inputs(c)

        // Inference (`swiftjit run`, `Net`): the loss layer's forward.
        let inference = try sharedTrainingCompiler.compile(graph: try GraphBuilder(phase: .test).build(try CaffeFiles.parseNet(text: Self.net(c, forceBackward: false))),
                                                           parameters: [:])
        let ran = try #require(try inference.run(inputs: ["x": x, "label": label])["loss"]?.data.first)
        #expect(abs(Double(ran) - expected.loss) <= 1e-5 * max(1, abs(expected.loss)), "run: \(ran) vs \(expected.loss)")

        // Training: the same value forward, and the diff backward seeded with the loss weight.
        let net = try Self.training(c)
        let result = try net.run(["x": x, "label": label], backward: true)
        let top = try #require(result.outputs["loss"]?.data.first)
        #expect(abs(Double(top) - expected.loss) <= 1e-5 * max(1, abs(expected.loss)), "train: \(top) vs \(expected.loss)")
        #expect(abs(Double(result.loss) - Double(c.lossWeight) * expected.loss) <= 1e-5 * max(1, abs(expected.loss)))
        let dx = try #require(net.blobDiff("x")).data
        #expect(dx.count == expected.grad.count)
        var worst = 0.0
        for (a, b) in zip(dx, expected.grad) { worst = max(worst, abs(Double(a) - b)) }
        #expect(worst <= 1e-6, "worst |dx − reference| \(worst)")
    }

    @Test("the weighted gradient equals central differences of the float32 forward")
    func finiteDifferences() throws {
        for c in [Self.cases[0], Self.cases[2]] {
            let net = try Self.training(c)
            var (x, label) = Self.inputs(c)
            _ = try net.run(["x": x, "label": label], backward: true)
            let dx = try #require(net.blobDiff("x")).data
            let eps: Float = 1e-2
            var worst = 0.0
            for i in stride(from: 0, to: x.count, by: 3) {
                let saved = x.data[i]
                x.data[i] = saved + eps
                let plus = try net.run(["x": x, "label": label], backward: false).loss
                x.data[i] = saved - eps
                let minus = try net.run(["x": x, "label": label], backward: false).loss
                x.data[i] = saved
                let numeric = (Double(plus) - Double(minus)) / Double(2 * eps)
                worst = max(worst, abs(Double(dx[i]) - numeric) / max(1e-2, abs(numeric)))
            }
            #expect(worst < 2e-2, "\(c.name): worst relative error \(worst)")
        }
    }

    @Test("weight_by_label_freqs with a class_weighting count other than the classes is refused when the net is built, naming the layer and both counts")
    func wrongWeightCount() throws {
        var c = Self.cases[0]
        c.lossParam = "weight_by_label_freqs: true class_weighting: 1 class_weighting: 2 class_weighting: 3"
        let definition = try CaffeFiles.parseNet(text: Self.net(c, forceBackward: false))
        #expect {
            _ = try GraphBuilder(phase: .test).build(definition)
        } throws: { error in
            let text = "\(error)"
            return text.contains("'loss'") && text.contains("3 given") && text.contains("4 classes") && text.contains("class_weighting")
        }
        // Without the switch the forks never read the list, so neither does SwiftJIT.
        c.lossParam = "class_weighting: 1 class_weighting: 2 class_weighting: 3"
        _ = try GraphBuilder(phase: .test).build(try CaffeFiles.parseNet(text: Self.net(c, forceBackward: false)))
    }

    @Test("the forks' field names parse by name; weight_by_label_freqs lives at 5003 (BVLC's normalization is 3), class_weighting at the forks' 4")
    func fieldNumbers() throws {
        let definition = try CaffeFiles.parseNet(text: Self.net(Self.cases[1], forceBackward: false))
        let lossParam = try #require(definition.net.layer.last?.lossParam)
        #expect(lossParam.weightByLabelFreqs && lossParam.classWeighting == [0.25, 1.5, 3, 0.8] && lossParam.ignoreLabel == 2)
        #expect(!lossParam.hasNormalization, "the forks' switch must not set BVLC's normalization")
        // A fork caffemodel's loss_param (field 3 = true, field 4 = the weights): 3 reads as VALID,
        // the forks' own default, and the weights survive.
        let forkBytes: [UInt8] = [0x18, 0x01] + [0x25] + Array(withUnsafeBytes(of: Float(0.5).bitPattern.littleEndian, Array.init))
        let decoded = try Caffe_LossParameter(serializedBytes: forkBytes)
        #expect(decoded.normalization == .valid && decoded.classWeighting == [0.5] && !decoded.weightByLabelFreqs)
    }
}
