import Foundation
import NumPy
import Testing
import SwiftJIT

/// ONNX export checked by onnx's checker and by ONNX Runtime against real Caffe's outputs.
@Suite("ONNX export", .serialized)
struct ONNXExportTests {
    /// Exports `net` (+ `weights`) to a temporary .onnx and runs `PythonScripts.runONNX` on it.
    static func exportAndRun(net: URL, weights: URL?, inputs: String, expected: String, batch: Int? = nil,
                             phase: Caffe_Phase = .test, opset: Int = 13) throws -> (report: [String: Any], model: ONNXModel) {
        try ExportFixtures.withTempDir { dir in
            let source = try ExportSource(netPath: net.path, weightsPath: weights?.path, phase: phase)
            let model = try ONNXExporter(opset: opset).export(source)
            let path = dir.appendingPathComponent("net.onnx").path
            try model.write(to: path)
            let report = try ExportFixtures.pythonJSON(PythonScripts.runONNX, [path, inputs, expected] + (batch.map { [String($0)] } ?? []))
            return (report, model)
        }
    }

    static func blobs(_ report: [String: Any]) -> [(name: String, rel: Double)] {
        (report["blobs"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "?", $0["rel"] as? Double ?? .infinity) }
    }

    @Test("LeNet and CIFAR10-quick: ONNX Runtime reproduces every blob Caffe computed (rtol 1e-4 of max |value|)",
          arguments: ["lenet_deploy", "cifar10_quick"])
    func goldenNet(name: String) throws {
        let folder = try ExportFixtures.require(ExportFixtures.golden.appendingPathComponent("nets/\(name)"))
        let (report, model) = try Self.exportAndRun(net: folder.appendingPathComponent("net.prototxt"),
                                                    weights: folder.appendingPathComponent("weights.caffemodel"),
                                                    inputs: folder.appendingPathComponent("inputs.npz").path,
                                                    expected: folder.appendingPathComponent("outputs.npz").path)
        let blobs = Self.blobs(report)
        #expect(blobs.map(\.name).contains("prob"))
        #expect((report["missing"] as? [String])?.isEmpty == true, "blobs the ONNX graph does not name: \(report["missing"] ?? "")")
        for blob in blobs { #expect(blob.rel <= 1e-4, "\(name) blob \(blob.name) differs from Caffe by \(blob.rel) of its max") }
        print("\(name): max relative difference from Caffe per blob: " + blobs.map { "\($0.name) \(String(format: "%.1e", $0.rel))" }.joined(separator: ", "))
        #expect(model.proto.graph.input.map(\.name) == ["data"])
        #expect(model.proto.graph.output.map(\.name) == ["prob"])
        #expect(model.batchIsDynamic)
    }

    /// Layer cases of ../shared/golden whose layers have an exact ONNX form.
    static let exportableLayerCases = [
        "absval", "bias_1bottom", "bias_2bottom", "bn_test_2d", "bn_test_eps_factor0p5", "bn_test_factor0", "bn_test_global",
        "bn_test_inplace", "bnll", "clip", "concat_axis1", "concat_axis2", "conv3d_5d", "conv_depthwise", "conv_depthwise_mult2",
        "conv_dilation2", "conv_group2", "conv_k1_p1", "conv_k3_basic", "conv_k3_p1_s2", "conv_kh3_kw5_asym", "conv_nobias",
        "conv_two_bottoms", "crop_axis1_single_offset", "crop_axis2", "deconv_k2_s2_nobias", "deconv_s2_p1", "dropout_test",
        "pool_max_mask", "eltwise_max", "eltwise_prod", "eltwise_prod_unstable", "eltwise_sum3", "eltwise_sum_coeff", "elu", "exp", "flatten",
        "ip_axis1", "ip_axis2", "ip_nobias", "ip_shared_params", "ip_transpose", "log", "lrn_across", "lrn_within",
        "mvn_across_channels", "mvn_default", "pool_ave_global", "pool_ave_k2s2_odd", "pool_ave_k2s2p1_clip", "pool_ave_k3s2",
        "pool_ave_k3s2p1", "pool_max_global", "pool_max_k2s2_odd", "pool_max_k2s2p1_clip", "pool_max_k3s2", "pool_max_k3s2p1",
        "pool_max_rect", "power_p0p5", "power_p1_linear", "power_p2", "prelu_channel", "prelu_shared", "reduction_asum_axis1",
        "reduction_mean_axis_m1", "reduction_sum_all", "relu", "relu_inplace", "relu_slope0p1", "reshape_0_2_m1_5", "reshape_0_m1",
        "reshape_5d_pool_5d", "reshape_axis1_numaxes1_5d", "reshape_insert_axis", "roi_pool_scale0p25", "scale_2bottom_axis0_bias",
        "scale_2bottom_axis1", "scale_axis1_bias", "scale_axis1_numaxes2", "scale_numaxes0", "sigmoid", "slice_points_axis1",
        "softmax_axis1", "softmax_axis2", "split_explicit", "split_implicit", "swish", "tanh", "threshold", "tile_axis1",
    ]

    @Test("each exportable Caffe golden layer case matches Caffe in ONNX Runtime (|a-b| ≤ 1e-5·max|b| + 1e-6)",
          arguments: exportableLayerCases)
    func goldenLayer(name: String) throws {
        let folder = try ExportFixtures.require(ExportFixtures.golden.appendingPathComponent("layers/\(name)"))
        let weights = folder.appendingPathComponent("weights.caffemodel")
        let (report, _) = try Self.exportAndRun(net: folder.appendingPathComponent("net.prototxt"),
                                                weights: FileManager.default.fileExists(atPath: weights.path) ? weights : nil,
                                                inputs: folder.appendingPathComponent("inputs.npz").path,
                                                expected: folder.appendingPathComponent("outputs.npz").path)
        let entries = report["blobs"] as? [[String: Any]] ?? []
        #expect(!entries.isEmpty)
        for entry in entries {
            let absolute = entry["max_abs"] as? Double ?? .infinity, relative = entry["rel"] as? Double ?? .infinity
            let scale = relative > 0 ? absolute / relative : 0
            #expect(absolute <= 1e-5 * scale + 1e-6, "\(name) blob \(entry["name"] ?? "?"): \(entry)")
        }
    }

    @Test("layers without an exact ONNX form are refused with the layer's name and type",
          arguments: [("lstm", "layer 'lstm': cannot export this LSTM layer to ONNX: its cont bottom is data that can restart the sequence at any step and stream; ONNX LSTM runs each sequence from one initial state with no per-step reset"),
                      ("softmaxloss_2d", "layer 'loss': ONNX export does not support layer type 'SoftmaxWithLoss'"),
                      ("bn_test_batch_stats", "layer 'bn': cannot export this BatchNorm layer to ONNX: it normalizes with each batch's own statistics (use_global_stats false, or TRAIN phase), which ONNX's BatchNormalization does not")])
    func refusals(name: String, message: String) throws {
        let folder = try ExportFixtures.require(ExportFixtures.golden.appendingPathComponent("layers/\(name)"))
        let weights = folder.appendingPathComponent("weights.caffemodel")
        let source = try ExportSource(netPath: folder.appendingPathComponent("net.prototxt").path,
                                      weightsPath: FileManager.default.fileExists(atPath: weights.path) ? weights.path : nil)
        #expect {
            _ = try ONNXExporter().export(source)
        } throws: { error in
            (error as? Diagnostic)?.headline.hasSuffix(message) == true && (error as? Diagnostic)?.location != nil
        }
    }

    static let zooNets = [
        ("CaffeNet", "bvlc_reference_caffenet/deploy.prototxt", [2, 1000]),
        ("GoogLeNet", "bvlc_googlenet/deploy.prototxt", [2, 1000]),
        ("ResNet-50", "resnet/ResNet-50-deploy.prototxt", [2, 1000]),
        ("SqueezeNet 1.1", "squeezenet_v1.1/deploy.prototxt", [2, 1000, 1, 1]),
        ("MobileNet v1", "mobilenet/mobilenet_deploy.prototxt", [2, 1000, 1, 1]),
    ]

    @Test("zoo deploy nets with seeded random weights: onnx.checker passes and ONNX Runtime matches swiftjit run on every blob at batch 2",
          arguments: zooNets)
    func zoo(name: String, path: String, outputShape: [Int]) throws {
        let net = try ExportFixtures.require(ExportFixtures.zoo.appendingPathComponent(path))
        try ExportFixtures.withTempDir { dir in
            let weights = dir.appendingPathComponent("random.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: net, seed: 5), to: weights.path)
            // Batch 2 where the prototxt says 10: the ONNX batch axis is symbolic.
            var generator = SplitMix64(seed: 11)
            let side = path.contains("caffenet") || path.contains("squeezenet") ? 227 : 224
            let data = NDArray(shape: [2, 3, side, side], data: (0..<(2 * 3 * side * side)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let inputs = dir.appendingPathComponent("inputs.npz"), blobs = dir.appendingPathComponent("blobs.npz")
            try NumPyFile.write(archive: [("data", data)], to: inputs.path)
            let run = try ExportFixtures.swiftjit(["run", net.path, "--weights", weights.path, "--input", inputs.path,
                                                   "--output", blobs.path, "--blobs", "all"])
            #expect(run.status == 0, "swiftjit run failed: \(run.err)")
            let (report, model) = try Self.exportAndRun(net: net, weights: weights, inputs: inputs.path, expected: blobs.path)
            let outputs = report["outputs"] as? [String: [Int]] ?? [:]
            #expect(outputs == ["prob": outputShape], "\(name): \(report["outputs"] ?? "")")
            #expect(report["finite"] as? Bool == true, "\(name) produced non-finite values")
            #expect(model.batchIsDynamic, "\(name): \(model.notes)")
            #expect(model.proto.graph.input.map(\.name) == ["data"])
            let compared = Self.blobs(report)
            #expect(compared.count > 10, "\(name): only \(compared.count) blobs compared; missing \(report["missing"] ?? "")")
            for blob in compared { #expect(blob.rel <= 1e-4, "\(name) blob \(blob.name): ONNX Runtime and swiftjit run differ by \(blob.rel) of its max") }
            let worst = compared.max { $0.rel < $1.rel }
            print("\(name): \(compared.count) blobs, ONNX Runtime vs swiftjit run max relative difference \(String(format: "%.1e", worst?.rel ?? 0)) (\(worst?.name ?? "-"))")
        }
    }
}
