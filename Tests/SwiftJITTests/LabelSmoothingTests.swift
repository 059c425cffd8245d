import Foundation
import Testing
import SwiftJIT

/// The label-smoothing recipe users run without regenerating their dataset: a DummyData layer draws
/// uniform noise every iteration, an Eltwise SUM adds it to the integer labels the Data layer reads
/// from the LMDB, and the float labels feed a SigmoidCrossEntropyLoss. It must train end to end.
@Suite("label smoothing on an LMDB", .serialized)
struct LabelSmoothingTests {
    static let net = """
    name: "smooth_binary"
    layer { name: "data" type: "Data" top: "data" top: "label" transform_param { scale: 0.00390625 }
            data_param { source: "train_lmdb" batch_size: 8 backend: LMDB } }
    layer { name: "noise" type: "DummyData" top: "noise"
            dummy_data_param { data_filler { type: "uniform" min: 0 max: 0.1 } shape { dim: 8 } } }
    layer { name: "label_noise" type: "Eltwise" bottom: "label" bottom: "noise" top: "label_noise" eltwise_param { operation: SUM } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 4 kernel_size: 3 stride: 2 weight_filler { type: "xavier" } } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "scores" inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }
    layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "scores" bottom: "label_noise" top: "loss" }
    """

    /// 64 8×8 images: label 1 images are bright in the left half, label 0 in the right half.
    static func makeDataset(_ folder: URL) throws {
        let writer = try LMDBWriter(path: folder.appendingPathComponent("train_lmdb").path)
        var generator = SeededGenerator(seed: 5, stream: "images")
        for i in 0..<64 {
            let label = i % 2
            var pixels = [UInt8](repeating: 0, count: 64)
            for y in 0..<8 {
                for x in 0..<8 {
                    let bright = (x < 4) == (label == 1)
                    pixels[y * 8 + x] = UInt8(bright ? 160 + generator.uniform(0, 90) : generator.uniform(0, 60))
                }
            }
            var datum = Caffe_Datum()
            (datum.channels, datum.height, datum.width) = (1, 8, 8)
            datum.data = Data(pixels)
            datum.label = Int32(label)
            try writer.put(key: String(format: "%08d", i), datum: datum)
        }
        try writer.finish()
    }

    @Test("a binary classifier trains on integer labels plus uniform noise, and the loss sees exactly that")
    func trainsEndToEnd() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-smooth-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.makeDataset(folder)
        try Self.net.write(to: folder.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        try """
        net: "net.prototxt" base_lr: 0.5 momentum: 0.9 lr_policy: "fixed" max_iter: 60 display: 0 random_seed: 2 type: "SGD"
        """.write(to: folder.appendingPathComponent("solver.prototxt"), atomically: true, encoding: .utf8)

        let compiler = try Compiler()
        var trained: [TrainingNet] = []
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .quiet
        let trainer = try Trainer(solverPath: folder.appendingPathComponent("solver.prototxt").path, options: options) { graph, parameters in
            let net = try compiler.compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: true, seed: 2)
            trained.append(net)
            return net
        }
        let result = try trainer.train()
        let early = result.losses.prefix(8).map(\.loss).reduce(0, +) / 8
        let late = result.losses.suffix(8).map(\.loss).reduce(0, +) / 8
        #expect(late < early * 0.6, "loss went from \(early) to \(late)")

        // What the loss saw in the last pass: integer labels plus noise in [0, 0.1).
        let net = try #require(trained.first)
        let labels = try #require(net.blob("label")).data
        let smoothed = try #require(net.blob("label_noise")).data
        #expect(labels.allSatisfy { $0 == 0 || $0 == 1 })
        #expect(Set(labels).count == 2)
        let noise = zip(smoothed, labels).map { $0 - $1 }
        #expect(noise.allSatisfy { $0 >= 0 && $0 < 0.1 }, "\(noise)")
        #expect(Set(noise).count > 4, "noise must differ per item")
    }
}
