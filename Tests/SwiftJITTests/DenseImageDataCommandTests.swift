import Foundation
import Testing
import SwiftJIT

/// SegNet's and ENet's DenseImageData through every command, by the one `DataSources` rule: the
/// list is found beside the prototxt when the working directory does not hold it, the top shapes
/// come from the first image when the layer sets no size, and `run` feeds the first batch.
/// The net has the published segnet_inference.prototxt's shape (DenseImageData, convolution +
/// BN + ReLU, MAX pooling with its mask, Upsample, classifier, Softmax), small; the published
/// files are CC BY-NC and are not part of the repository.
@Suite("DenseImageData in compile, run, time, test and train", .serialized)
struct DenseImageDataCommandTests {
    static let (height, width, classes) = (12, 16, 3)

    static let net = """
        name: "segnet-shaped"
        layer { name: "data" type: "DenseImageData" top: "data" top: "label"
                dense_image_data_param { source: "pairs.txt" batch_size: 2 } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
        layer { name: "conv1_bn" type: "BN" bottom: "conv1" top: "conv1" bn_param { scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } } }
        layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "upsample1" type: "Upsample" bottom: "pool1" bottom: "pool1_mask" top: "upsample1" upsample_param { scale: 2 } }
        layer { name: "conv_classifier" type: "Convolution" bottom: "upsample1" top: "conv_classifier"
                convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "msra" } } }
        layer { name: "prob" type: "Softmax" bottom: "conv_classifier" top: "prob" include { phase: TEST } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv_classifier" bottom: "label" top: "loss" loss_param { ignore_label: 2 } }
        layer { name: "accuracy" type: "Accuracy" bottom: "conv_classifier" bottom: "label" top: "accuracy" include { phase: TEST } }
        """

    /// Colour images and label images (classes 0…2) in img/ and lab/, listed in pairs.txt.
    static func writePairs(in folder: URL) throws -> (images: [[UInt8]], labels: [[UInt8]]) {
        var generator = SystemRandomNumberGenerator()
        var images: [[UInt8]] = [], labels: [[UInt8]] = [], lines: [String] = []
        for sub in ["img", "lab"] { try FileManager.default.createDirectory(at: folder.appendingPathComponent(sub), withIntermediateDirectories: true) }
        for i in 0..<3 {
            let image = (0..<(height * width * 3)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let label = (0..<(height * width)).map { _ in UInt8.random(in: 0...2, using: &generator) }
            try ImageEncoder.png(DecodedImage(channels: 3, height: height, width: width, pixels: image)).write(to: folder.appendingPathComponent("img/\(i).png"))
            try ImageEncoder.png(DecodedImage(channels: 1, height: height, width: width, pixels: label)).write(to: folder.appendingPathComponent("lab/\(i).png"))
            images.append(image)
            labels.append(label)
            lines.append("img/\(i).png lab/\(i).png")
        }
        try (lines.joined(separator: "\n") + "\n").write(to: folder.appendingPathComponent("pairs.txt"), atomically: true, encoding: .utf8)
        return (images, labels)
    }

    @Test("the list beside the prototxt (images relative to it too) is read from another working directory: compile learns 2×3×12×16, run feeds the first two pairs, time, test and train run")
    func everyCommand() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-dense-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let (images, labels) = try Self.writePairs(in: folder)
        let prototxt = folder.appendingPathComponent("segnet.prototxt").path
        try Self.net.write(toFile: prototxt, atomically: true, encoding: .utf8)

        let compiled = try CompileCommandTests.run(["compile", "--json", "--no-jit", prototxt])
        #expect(compiled.status == 0, "\(compiled.err)")
        let document = try JSONSerialization.jsonObject(with: Data(compiled.out.utf8)) as? [String: Any]
        #expect((document?["totals"] as? [String: Any])?["partial"] as? Bool == false, "\(compiled.out.prefix(2000))")
        let table = try CompileCommandTests.run(["compile", "--no-jit", prototxt])
        #expect(table.out.contains("2×3×12×16") && table.out.contains("2×1×12×16"), "\(table.out.prefix(3000))")

        let weights = folder.appendingPathComponent("init.caffemodel").path
        let initialized = try CompileCommandTests.run(["init", prototxt, "--output", weights, "--seed", "3"])
        #expect(initialized.status == 0, "\(initialized.err)")
        let archive = folder.appendingPathComponent("blobs.npz").path
        let ran = try CompileCommandTests.run(["run", prototxt, "--weights", weights, "--output", archive, "--blobs", "all"])
        #expect(ran.status == 0, "\(ran.err)")
        let blobs = try NumPyFile.readArchive(path: archive)
        let data = try #require(blobs["data"]), label = try #require(blobs["label"])
        #expect(data.shape == [2, 3, Self.height, Self.width] && label.shape == [2, 1, Self.height, Self.width])
        let plane = Self.height * Self.width
        for n in 0..<2 {
            // The images are read as OpenCV reads them (BGR), planar; the labels as grey values.
            let expected = (0..<3).flatMap { c in (0..<plane).map { Float(images[n][$0 * 3 + c]) } }
            #expect(Array(data.data[(n * 3 * plane)..<((n + 1) * 3 * plane)]) == expected, "image \(n)")
            #expect(Array(label.data[(n * plane)..<((n + 1) * plane)]) == labels[n].map(Float.init), "label \(n)")
        }
        #expect(blobs["prob"]?.shape == [2, Self.classes, Self.height, Self.width])

        let tested = try CompileCommandTests.run(["test", "--model", prototxt, "--weights", weights, "--iterations", "1"])
        #expect(tested.status == 0, "\(tested.err)")
        let loss = tested.out.split(separator: "\n").first { $0.hasPrefix("Batch 0, loss = ") }.flatMap { Float($0.split(separator: " ").last!) }
        #expect(loss != nil && abs((blobs["loss"]?.data.first ?? .nan) - (loss ?? .nan)) <= 1e-5 * max(1, abs(loss ?? 1)),
                "run's loss \(String(describing: blobs["loss"]?.data)), test's \(String(describing: loss))")

        let timed = try CompileCommandTests.run(["time", prototxt, "--iterations", "1"])
        #expect(timed.status == 0, "\(timed.err)")

        let solver = folder.appendingPathComponent("solver.prototxt").path
        try """
            net: "segnet.prototxt"
            base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: 3 display: 1 snapshot_prefix: "\(folder.appendingPathComponent("snap").path)" random_seed: 1 type: "SGD"
            """.write(toFile: solver, atomically: true, encoding: .utf8)
        let trained = try CompileCommandTests.run(["train", "--solver", solver])
        #expect(trained.status == 0, "\(trained.out)\(trained.err)")
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("snap_iter_3.caffemodel").path), "\(trained.out)\(trained.err)")
    }
}
