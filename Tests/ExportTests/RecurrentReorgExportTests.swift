import Foundation
import Testing
import SwiftJIT

/// CTPN's Lstm exported as ONNX `LSTM` and YOLOv2's Reorg as Reshape/Transpose/Reshape: each net
/// gets seeded random weights and inputs, `swiftjit run --blobs all` computes every blob, and ONNX
/// Runtime runs the exported model (after `onnx.checker` with `full_check`) on the same inputs.
@Suite("Lstm and Reorg ONNX export")
struct RecurrentReorgExportTests {
    /// Writes `net`, random weights (Lstm blobs uniform in ±`lstmScale`, so the gates leave their
    /// linear range), runs `swiftjit run` and the exported model on `inputs`, and returns ONNX
    /// Runtime's report with the model. `alsoCheck` gets the folder holding `net.prototxt`,
    /// `weights.caffemodel`, `inputs.npz` and the exported `net.onnx`.
    static func compare(net text: String, inputs: [(String, NDArray)], seed: UInt64, lstmScale: Float = 0.6, opset: Int = 13,
                        alsoCheck: (URL) throws -> Void = { _ in }) throws -> (report: [String: Any], model: ONNXModel) {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try text.write(to: net, atomically: true, encoding: .utf8)
            var parameters = try ExportFixtures.randomWeights(for: net, seed: seed)
            var generator = SplitMix64(seed: seed &+ 1)
            for l in parameters.layer.indices where parameters.layer[l].type == "Lstm" {
                for b in parameters.layer[l].blobs.indices {
                    parameters.layer[l].blobs[b].data = parameters.layer[l].blobs[b].data.map { _ in Float.random(in: -lstmScale..<lstmScale, using: &generator) }
                }
            }
            let weights = dir.appendingPathComponent("weights.caffemodel")
            try CaffeFiles.write(parameters, to: weights.path)
            let inputPath = dir.appendingPathComponent("inputs.npz"), blobs = dir.appendingPathComponent("blobs.npz")
            try NumPyFile.write(archive: inputs, to: inputPath.path)
            let run = try ExportFixtures.swiftjit(["run", net.path, "--weights", weights.path, "--input", inputPath.path,
                                                   "--output", blobs.path, "--blobs", "all"])
            try #require(run.status == 0, "swiftjit run failed: \(run.err)")
            let result = try ONNXExportTests.exportAndRun(net: net, weights: weights, inputs: inputPath.path, expected: blobs.path, opset: opset)
            try result.model.write(to: dir.appendingPathComponent("net.onnx").path)
            try alsoCheck(dir)
            return result
        }
    }

    static func random(_ shape: [Int], seed: UInt64) -> NDArray {
        var generator = SplitMix64(seed: seed)
        return NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1..<1, using: &generator) })
    }

    /// Every compared blob within `tolerance` of its max |value|, and the named ones among them.
    static func expectMatches(_ report: [String: Any], _ names: [String], tolerance: Double) {
        let compared = ONNXExportTests.blobs(report)
        #expect(Set(compared.map(\.name)).isSuperset(of: names), "compared \(compared.map(\.name)); missing \(report["missing"] ?? "")")
        for blob in compared {
            #expect(blob.rel <= tolerance, "\(blob.name): ONNX Runtime and swiftjit run differ by \(blob.rel) of its max")
        }
        let worst = compared.max { $0.rel < $1.rel }
        print("\(compared.count) blobs, ONNX Runtime vs swiftjit run max relative difference \(String(format: "%.1e", worst?.rel ?? 0)) (\(worst?.name ?? "-"))")
    }

    @Test("Lstm (T 5, N 3, 4-D and 3-D bottoms, with and without clipping_threshold) → ONNX LSTM equals swiftjit run at 1e-4, at the first and last opset",
          arguments: [ONNXExporter.supportedOpsets.lowerBound, ONNXExporter.supportedOpsets.upperBound])
    func lstm(opset: Int) throws {
        let net = """
            name: "lstms"
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 dim: 2 dim: 3 } } }
            layer { name: "z" type: "Input" top: "z" input_param { shape { dim: 5 dim: 3 dim: 7 } } }
            layer { name: "lstm_clip" type: "Lstm" bottom: "x" top: "lstm_clip" lstm_param { num_output: 4 clipping_threshold: 1 } }
            layer { name: "lstm" type: "Lstm" bottom: "z" top: "lstm" lstm_param { num_output: 6 } }
            """
        let (report, model) = try Self.compare(net: net, inputs: [("x", Self.random([5, 3, 2, 3], seed: 3)), ("z", Self.random([5, 3, 7], seed: 4))], seed: 7, opset: opset)
        #expect(report["outputs"] as? [String: [Int]] == ["lstm_clip": [5, 3, 4], "lstm": [5, 3, 6]], "\(report["outputs"] ?? "")")
        Self.expectMatches(report, ["lstm_clip", "lstm"], tolerance: 1e-4)
        let nodes = model.proto.graph.node
        #expect(nodes.filter { $0.opType == "LSTM" }.count == 2)
        // clipping_threshold bounds gradients only: ONNX's forward `clip` must not be set.
        #expect(nodes.filter { $0.opType == "LSTM" }.allSatisfy { node in node.attribute.map(\.name) == ["hidden_size"] })
        let initializers = Set(model.proto.graph.initializer.map(\.name))
        #expect(initializers.isSuperset(of: ["lstm/0[iofc]", "lstm/1[iofc]", "lstm/2[iofc]"]), "\(initializers.sorted())")
        #expect(model.batchIsDynamic, "the time axis stays symbolic: \(model.notes)")
    }

    /// CTPN's recurrent head (models/deploy.prototxt of tianzhi0549/CTPN) on a 6×10 map, with a 3×3
    /// convolution where CTPN has Im2col: the map's columns become time steps and its rows streams
    /// (T 10, N 6), a forward and a reversed Lstm, their Concat, and the Reshape/Transpose back to
    /// N×C×H×W for the 1×1 convolutions and the two-class Softmax.
    static let ctpnShaped = """
        name: "ctpn-shaped"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 10 } } }
        layer { name: "conv5_3" type: "Convolution" bottom: "data" top: "conv5_3" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
        layer { name: "relu5_3" type: "ReLU" bottom: "conv5_3" top: "conv5_3" }
        layer { name: "im2col_transpose" type: "Transpose" bottom: "conv5_3" top: "im2col_transpose" transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
        layer { name: "lstm_input" type: "Reshape" bottom: "im2col_transpose" top: "lstm_input" reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }
        layer { name: "lstm" type: "Lstm" bottom: "lstm_input" top: "lstm" lstm_param { num_output: 5 clipping_threshold: 1 } }
        layer { name: "lstm-reverse1" type: "Reverse" bottom: "lstm_input" top: "rlstm_input" reverse_param { axis: 0 } }
        layer { name: "rlstm" type: "Lstm" bottom: "rlstm_input" top: "rlstm-output" lstm_param { num_output: 5 } }
        layer { name: "lstm-reverse2" type: "Reverse" bottom: "rlstm-output" top: "rlstm" reverse_param { axis: 0 } }
        layer { name: "merge_lstm_rlstm" type: "Concat" bottom: "lstm" bottom: "rlstm" top: "merge_lstm_rlstm" concat_param { axis: 2 } }
        layer { name: "lstm_output_reshape" type: "Reshape" bottom: "merge_lstm_rlstm" top: "lstm_output_reshape" reshape_param { shape { dim: -1 dim: 1 } axis: 1 num_axes: 1 } }
        layer { name: "lstm_output" type: "Transpose" bottom: "lstm_output_reshape" top: "lstm_output" transpose_param { dim: 2 dim: 3 dim: 1 dim: 0 } }
        layer { name: "fc" type: "Convolution" bottom: "lstm_output" top: "fc" convolution_param { num_output: 12 kernel_size: 1 } }
        layer { name: "relu_fc" type: "ReLU" bottom: "fc" top: "fc" }
        layer { name: "rpn_cls_score" type: "Convolution" bottom: "fc" top: "rpn_cls_score" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "rpn_cls_score_reshape" type: "Reshape" bottom: "rpn_cls_score" top: "rpn_cls_score_reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }
        layer { name: "rpn_cls_prob" type: "Softmax" bottom: "rpn_cls_score_reshape" top: "rpn_cls_prob" }
        layer { name: "rpn_bbox_pred" type: "Convolution" bottom: "fc" top: "rpn_bbox_pred" convolution_param { num_output: 4 kernel_size: 1 } }
        """

    @Test("a CTPN-shaped net (conv → Transpose → Reshape → Lstm and reversed Lstm → Concat → Transpose → convs) equals swiftjit run on every blob at 1e-4")
    func ctpn() throws {
        let (report, model) = try Self.compare(net: Self.ctpnShaped, inputs: [("data", Self.random([1, 3, 6, 10], seed: 21))], seed: 13)
        #expect(report["outputs"] as? [String: [Int]] == ["rpn_cls_prob": [1, 2, 12, 10], "rpn_bbox_pred": [1, 4, 6, 10]], "\(report["outputs"] ?? "")")
        Self.expectMatches(report, ["lstm_input", "lstm", "rlstm-output", "rlstm", "merge_lstm_rlstm", "lstm_output", "fc", "rpn_cls_prob", "rpn_bbox_pred"],
                           tolerance: 1e-4)
        #expect(model.proto.graph.node.filter { $0.opType == "LSTM" }.count == 2)
    }

    @Test("Reorg stride 2 on 8×6×4 and its reverse → Reshape/Transpose/Reshape, exactly swiftjit run's values; the batch stays dynamic")
    func reorg() throws {
        let net = """
            name: "reorgs"
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 dim: 6 dim: 4 } } }
            layer { name: "reorg" type: "Reorg" bottom: "x" top: "y" reorg_param { stride: 2 } }
            layer { name: "back" type: "Reorg" bottom: "x" top: "back" reorg_param { stride: 2 reverse: true } }
            layer { name: "round" type: "Reorg" bottom: "y" top: "round" reorg_param { stride: 2 reverse: true } }
            layer { name: "w" type: "Input" top: "w" input_param { shape { dim: 2 dim: 18 dim: 6 dim: 9 } } }
            layer { name: "reorg3" type: "Reorg" bottom: "w" top: "y3" reorg_param { stride: 3 } }
            """
        let x = Self.random([2, 8, 6, 4], seed: 5)
        let (report, model) = try Self.compare(net: net, inputs: [("x", x), ("w", Self.random([2, 18, 6, 9], seed: 6))], seed: 1)
        #expect(report["outputs"] as? [String: [Int]] == ["back": [2, 2, 12, 8], "round": [2, 8, 6, 4], "y3": [2, 162, 2, 3]], "\(report["outputs"] ?? "")")
        // A permutation of the values: exact, not merely close.
        Self.expectMatches(report, ["y", "back", "round", "y3"], tolerance: 0)
        let ops = Set(model.proto.graph.node.map(\.opType))
        #expect(ops == ["Reshape", "Transpose"], "\(ops)")
        #expect(model.batchIsDynamic, "\(model.notes)")
        // Batch 3, which the prototxt does not say: the reshapes copy the batch extent.
        let batch3 = try ExportFixtures.withTempDir { dir -> [String: Any] in
            let path = dir.appendingPathComponent("net.onnx").path
            try model.write(to: path)
            return try ExportFixtures.pythonJSON(PythonScripts.runONNX, [path, "-", "-", "3"])
        }
        #expect(batch3["outputs"] as? [String: [Int]] == ["back": [3, 2, 12, 8], "round": [3, 8, 6, 4], "y3": [3, 162, 2, 3]], "\(batch3)")
    }

    /// YOLOv2's passthrough: a 1×1 convolution of the 12×8 map, Reorg'd to 16×6×4 and concatenated
    /// with the pooled path's 16×6×4 before the detection convolution.
    @Test("a YOLOv2-shaped passthrough (conv → Reorg → Concat with the pooled path) equals swiftjit run on every blob at 1e-4, and OpenCV DNN at 1e-5")
    func yolo() throws {
        let net = """
            name: "yolov2-shaped"
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 8 } } }
            layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
            layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
            layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
            layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
            layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" relu_param { negative_slope: 0.1 } }
            layer { name: "conv_pt" type: "Convolution" bottom: "conv1" top: "conv_pt" convolution_param { num_output: 4 kernel_size: 1 } }
            layer { name: "reorg" type: "Reorg" bottom: "conv_pt" top: "reorg" reorg_param { stride: 2 } }
            layer { name: "concat" type: "Concat" bottom: "reorg" bottom: "conv2" top: "concat" }
            layer { name: "conv_det" type: "Convolution" bottom: "concat" top: "conv_det" convolution_param { num_output: 10 kernel_size: 1 } }
            """
        var opencv: [String: Any] = [:]
        let (report, model) = try Self.compare(net: net, inputs: [("data", Self.random([2, 3, 12, 8], seed: 8))], seed: 17) { dir in
            opencv = try ExportFixtures.pythonJSON(Self.opencvScript, [dir.path])
        }
        #expect(report["outputs"] as? [String: [Int]] == ["conv_det": [2, 10, 6, 4]], "\(report["outputs"] ?? "")")
        // A second reference: OpenCV DNN runs the Caffe net with its own ReorgLayer, and reads the .onnx too.
        #expect((opencv["caffe"] as? Double ?? 1) <= 1e-5 && (opencv["onnx"] as? Double ?? 1) <= 1e-5, "\(opencv)")
        print("YOLOv2-shaped: ONNX Runtime vs OpenCV DNN (relative to max): Caffe files \(opencv["caffe"] ?? "-"), the .onnx \(opencv["onnx"] ?? "-")")
        Self.expectMatches(report, ["conv_pt", "reorg", "concat", "conv_det"], tolerance: 1e-4)
        #expect(model.batchIsDynamic, "\(model.notes)")
    }

    /// `folder`: ONNX Runtime's conv_det against OpenCV DNN's on the Caffe files and on the .onnx
    /// (relative to the largest |value|).
    static let opencvScript = """
        import json
        import cv2
        d = sys.argv[1]
        x = np.load(d + '/inputs.npz')['data']
        session = ort.InferenceSession(d + '/net.onnx', providers=['CPUExecutionProvider'])
        ours = session.run(['conv_det'], {'data': x})[0]
        def opencv(net):
            net.setInput(x, 'data')
            return net.forward('conv_det')
        caffe = opencv(cv2.dnn.readNetFromCaffe(d + '/net.prototxt', d + '/weights.caffemodel'))
        onnx_net = opencv(cv2.dnn.readNetFromONNX(d + '/net.onnx'))
        scale = float(np.abs(ours).max())
        print(json.dumps({'caffe': float(np.abs(ours - caffe).max()) / scale, 'onnx': float(np.abs(ours - onnx_net).max()) / scale}))
        """

    @Test("what ONNX cannot express is refused by layer name with the reason, nothing written",
          arguments: [
            (#"""
             layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
             layer { name: "clip" type: "Input" top: "clip" input_param { shape { dim: 4 dim: 2 } } }
             layer { name: "lstm" type: "Lstm" bottom: "x" bottom: "clip" top: "h" lstm_param { num_output: 3 } }
             """#, ["layer 'lstm'", "clip bottom carries h and c over", "cannot reset"]),
            (#"""
             layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 dim: 3 } } }
             layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 4 dim: 2 } } }
             layer { name: "caffe_lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 3 } }
             """#, ["layer 'caffe_lstm'", "cont bottom", "no per-step reset", "CTPN's Lstm"]),
            (#"""
             layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 6 dim: 4 dim: 4 } } }
             layer { name: "reorg" type: "Reorg" bottom: "x" top: "y" reorg_param { stride: 2 } }
             """#, ["layer 'reorg'", "6 channels are not a multiple of stride² (4)"]),
          ])
    func refusals(net text: String, fragments: [String]) throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try text.write(to: net, atomically: true, encoding: .utf8)
            let weights = dir.appendingPathComponent("weights.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: net, seed: 2), to: weights.path)
            #expect {
                _ = try ONNXExporter().export(try ExportSource(netPath: net.path, weightsPath: weights.path))
            } throws: { error in
                let message = "\(error)"
                return fragments.allSatisfy { message.contains($0) }
            }
        }
    }
}
