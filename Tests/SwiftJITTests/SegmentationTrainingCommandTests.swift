import Foundation
import Testing
import SwiftJIT

/// `swiftjit train` on nets in the shape of SegNet's and ENet's published training prototxts
/// (alexgkendall/SegNet-Tutorial Models/segnet_train.prototxt, TimoSaemann/ENet
/// prototxts/enet_train_encoder.prototxt): DenseImageData (ENet's encoder with
/// `label_divide_factor`, its labels a quarter of the image's size here), convolution + BN +
/// ReLU, MAX pooling with its mask, Upsample, a 1×1 classifier, and SoftmaxWithLoss with the forks'
/// `weight_by_label_freqs`/`class_weighting` and `ignore_label: 255`. Images are generated so the
/// classes can be learnt (each 4×4 block one class colour plus noise, some label pixels 255); the
/// loss must fall over ten SGD iterations. The published files carry no licence that allows
/// copying them here, so the nets are written in their shape.
@Suite("SegNet- and ENet-shaped training nets through swiftjit train", .serialized)
struct SegmentationTrainingCommandTests {
    static let (height, width) = (16, 24)

    /// `factor` is the label_divide_factor; the net pools twice and upsamples once, so its
    /// classifier is H/2 × W/2 for factor 2 (ENet's encoder shape) and upsamples again to H × W
    /// for factor 1 (SegNet's decoder shape); a 3×3 decoder convolution follows the last upsample.
    static func net(factor: Int) -> String {
        let decoder = factor == 1 ? """
            layer { name: "upsample1" type: "Upsample" bottom: "up2" bottom: "pool1_mask" top: "up1" upsample_param { scale: 2 } }
            """ : ""
        let classifierInput = factor == 1 ? "up1" : "up2"
        return """
            name: "\(factor == 1 ? "segnet" : "enet-encoder")-shaped"
            layer { name: "data" type: "DenseImageData" top: "data" top: "label"
                    dense_image_data_param { source: "pairs.txt" batch_size: 4 shuffle: true new_height: \(height) new_width: \(width) label_divide_factor: \(factor) } }
            layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                    convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
            layer { name: "conv1_bn" type: "BN" bottom: "conv1" top: "conv1" bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } } }
            layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
            layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
            layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
                    convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
            layer { name: "conv2_bn" type: "BN" bottom: "conv2" top: "conv2" bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } } }
            layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
            layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" top: "pool2_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
            layer { name: "upsample2" type: "Upsample" bottom: "pool2" bottom: "pool2_mask" top: "up2" upsample_param { scale: 2 } }
            \(decoder)
            layer { name: "conv_decoder" type: "Convolution" bottom: "\(classifierInput)" top: "conv_decoder"
                    convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
            layer { name: "relu_decoder" type: "ReLU" bottom: "conv_decoder" top: "conv_decoder" }
            layer { name: "conv_classifier" type: "Convolution" bottom: "conv_decoder" top: "conv_classifier"
                    convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "msra" } } }
            layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv_classifier" bottom: "label" top: "loss"
                    loss_param { ignore_label: 255 weight_by_label_freqs: true class_weighting: 0.6 class_weighting: 1.4 class_weighting: 2.5 } }
            """
    }

    /// Eight colour images whose 4×4 blocks each take one of three class colours (plus noise), and
    /// full-size label PNGs of those classes with a few 255 (ignored) pixels, listed in pairs.txt.
    static func writePairs(in folder: URL) throws {
        var generator = SplitMix64(state: 2026)
        let colours: [[Int]] = [[200, 40, 40], [40, 200, 40], [40, 40, 200]]
        var lines: [String] = []
        for sub in ["img", "lab"] { try FileManager.default.createDirectory(at: folder.appendingPathComponent(sub), withIntermediateDirectories: true) }
        for i in 0..<8 {
            let blocks = (0..<((height / 4) * (width / 4))).map { _ in Int.random(in: 0...2, using: &generator) }
            var image = [UInt8](repeating: 0, count: height * width * 3), label = [UInt8](repeating: 0, count: height * width)
            for y in 0..<height {
                for x in 0..<width {
                    let c = blocks[(y / 4) * (width / 4) + x / 4]
                    label[y * width + x] = Int.random(in: 0..<40, using: &generator) == 0 ? 255 : UInt8(c)
                    for k in 0..<3 { image[(y * width + x) * 3 + k] = UInt8(max(0, min(255, colours[c][k] + Int.random(in: -30...30, using: &generator)))) }
                }
            }
            try ImageEncoder.png(DecodedImage(channels: 3, height: height, width: width, pixels: image)).write(to: folder.appendingPathComponent("img/\(i).png"))
            try ImageEncoder.png(DecodedImage(channels: 1, height: height, width: width, pixels: label)).write(to: folder.appendingPathComponent("lab/\(i).png"))
            lines.append("img/\(i).png lab/\(i).png")
        }
        try (lines.joined(separator: "\n") + "\n").write(to: folder.appendingPathComponent("pairs.txt"), atomically: true, encoding: .utf8)
    }

    @Test("compile shows the label top at H/f × W/f, and ten SGD iterations lower the class-weighted loss", arguments: [2, 1])
    func trains(factor: Int) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-segtrain-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.writePairs(in: folder)
        let prototxt = folder.appendingPathComponent("train.prototxt").path
        try Self.net(factor: factor).write(toFile: prototxt, atomically: true, encoding: .utf8)

        let table = try CompileCommandTests.run(["compile", "--no-jit", prototxt])
        #expect(table.status == 0, "\(table.err)")
        #expect(table.out.contains("4×3×16×24") && table.out.contains("4×1×\(Self.height / factor)×\(Self.width / factor)"), "\(table.out.prefix(3000))")

        let solver = folder.appendingPathComponent("solver.prototxt").path
        try """
            net: "train.prototxt"
            base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: 10 display: 5 random_seed: 7 type: "SGD"
            snapshot_prefix: "\(folder.appendingPathComponent("snap").path)"
            """.write(toFile: solver, atomically: true, encoding: .utf8)
        let csv = folder.appendingPathComponent("loss.csv").path
        let trained = try CompileCommandTests.run(["train", "--solver", solver, "--loss-csv", csv])
        #expect(trained.status == 0, "\(trained.out)\(trained.err)")
        let losses = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").dropFirst().compactMap { Float($0.split(separator: ",")[1]) }
        #expect(losses.count == 10 && losses.allSatisfy(\.isFinite), "\(losses)")
        let (first, last) = (losses.prefix(3).reduce(0, +) / 3, losses.suffix(3).reduce(0, +) / 3)
        // Measured on data generated like this: about 1.8 → 0.8 (factor 2) and 1.7 → 1.4 (factor 1) in ten iterations.
        #expect(last < 0.9 * first, "the loss should fall: \(losses)")
    }

    @Test("label_divide_factor's checks are diagnostics naming the layer: 0, no new_height/new_width, larger than the image, with a crop")
    func factorChecks() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-segfactor-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.writePairs(in: folder)
        let cases = [
            ("new_height: 16 new_width: 24 label_divide_factor: 0", "label_divide_factor is 0"),
            ("label_divide_factor: 4", "needs new_height and new_width"),
            ("new_height: 16 new_width: 2 label_divide_factor: 4", "exceeds new_height × new_width 16×2"),
            ("new_height: 16 new_width: 24 crop_height: 8 crop_width: 8 label_divide_factor: 2", "cannot crop with label_divide_factor 2"),
        ]
        for (settings, message) in cases {
            let prototxt = folder.appendingPathComponent("net.prototxt").path
            try """
                layer { name: "data" type: "DenseImageData" top: "data" top: "label" dense_image_data_param { source: "pairs.txt" batch_size: 2 \(settings) } }
                """.write(toFile: prototxt, atomically: true, encoding: .utf8)
            let compiled = try CompileCommandTests.run(["compile", "--no-jit", prototxt])
            #expect(compiled.status != 0 && compiled.err.contains(message) && compiled.err.contains("data"), "\(settings): \(compiled.out)\(compiled.err)")
            #expect(!compiled.err.contains("Fatal error"))
        }
    }
}

/// A seeded generator (SplitMix64), so the generated images and the losses they give are the same
/// in every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
