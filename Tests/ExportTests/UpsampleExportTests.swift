import Foundation
import Testing
import SwiftJIT

/// SegNet's Upsample exported to ONNX as MaxUnpool, fed by MAX pooling's mask top (ONNX MaxPool's
/// `Indices`, brought back to Caffe's index within the plane), checked by ONNX Runtime blob by blob.
@Suite("Upsample ONNX export")
struct UpsampleExportTests {
    /// A SegNet-shaped encoder–decoder on a 22×29 image: BN and ReLU after each convolution, MAX
    /// pooling with mask tops (ceil rounding makes 29 → 15), and Upsample in its three forms:
    /// `upsample_h`/`upsample_w`, `scale` with `pad_out_w` (back to the odd 29), and plain `scale`
    /// on a branch whose output (22×30) is wider than the pooled input (22×29).
    static let net = """
        name: "segnet-shaped"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 22 dim: 29 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "conv1_bn" type: "BN" bottom: "conv1" top: "conv1" bn_param { bn_mode: INFERENCE } }
        layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "conv2_bn" type: "BN" bottom: "conv2" top: "conv2" bn_param { bn_mode: INFERENCE } }
        layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
        layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" top: "pool2_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "conv2_D" type: "Convolution" bottom: "pool2" top: "conv2_D" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "upsample2" type: "Upsample" bottom: "conv2_D" bottom: "pool2_mask" top: "upsample2" upsample_param { upsample_h: 11 upsample_w: 15 } }
        layer { name: "conv1_D" type: "Convolution" bottom: "upsample2" top: "conv1_D" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "upsample1" type: "Upsample" bottom: "conv1_D" bottom: "pool1_mask" top: "upsample1" upsample_param { scale: 2 pad_out_w: true } }
        layer { name: "classifier" type: "Convolution" bottom: "upsample1" top: "classifier" convolution_param { num_output: 5 kernel_size: 1 } }
        layer { name: "pool_b" type: "Pooling" bottom: "data" top: "pool_b" top: "pool_b_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "upsample_b" type: "Upsample" bottom: "pool_b" bottom: "pool_b_mask" top: "upsample_b" upsample_param { scale: 2 } }
        """

    @Test("a SegNet-shaped net exports (MaxPool Indices → mask, Upsample → MaxUnpool) and ONNX Runtime equals Model on every blob at 1e-5, masks exactly")
    func segnetShaped() throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try Self.net.write(to: net, atomically: true, encoding: .utf8)
            let weights = dir.appendingPathComponent("weights.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: net, seed: 5), to: weights.path)
            var generator = SplitMix64(seed: 9)
            let x = NDArray(shape: [2, 3, 22, 29], data: (0..<(2 * 3 * 22 * 29)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let outputs = try Model(prototxt: net.path, weights: weights.path).forward(["data": x], blobs: .all)
            #expect(outputs["upsample1"]?.shape == [2, 4, 22, 29] && outputs["upsample2"]?.shape == [2, 4, 11, 15] && outputs["upsample_b"]?.shape == [2, 3, 22, 30])
            let inputs = dir.appendingPathComponent("inputs.npz"), blobs = dir.appendingPathComponent("blobs.npz")
            try NumPyFile.write(archive: [("data", x)], to: inputs.path)
            try NumPyFile.write(archive: outputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: blobs.path)
            let (report, model) = try ONNXExportTests.exportAndRun(net: net, weights: weights, inputs: inputs.path, expected: blobs.path)
            let compared = ONNXExportTests.blobs(report)
            let names = ["pool1", "pool1_mask", "pool2", "pool2_mask", "upsample2", "conv1_D", "upsample1", "classifier", "pool_b_mask", "upsample_b"]
            #expect(Set(compared.map(\.name)).isSuperset(of: names), "\(compared.map(\.name)); missing \(report["missing"] ?? "")")
            for blob in compared {
                #expect(blob.rel <= (blob.name.hasSuffix("_mask") ? 0 : 1e-5), "\(blob.name): ONNX Runtime and Model differ by \(blob.rel) of its max")
            }
            let ops = model.proto.graph.node.map(\.opType)
            #expect(ops.filter { $0 == "MaxUnpool" }.count == 3 && ops.contains("Mod"))
            #expect(!model.batchIsDynamic, "the per-plane index offsets fix the batch")
        }
    }

    @Test("an Upsample whose mask does not come straight from MAX pooling is refused by name, nothing written")
    func maskFromElsewhere() throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try """
                layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
                layer { name: "mask" type: "Input" top: "mask" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
                layer { name: "up" type: "Upsample" bottom: "data" bottom: "mask" top: "up" upsample_param { scale: 2 } }
                """.write(to: net, atomically: true, encoding: .utf8)
            #expect {
                _ = try ONNXExporter().export(try ExportSource(netPath: net.path, weightsPath: nil))
            } throws: { error in
                let text = "\(error)"
                return text.contains("layer 'up'") && text.contains("MAX Pooling layer's second top")
            }
        }
    }
}
