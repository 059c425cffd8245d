import Foundation
import Testing
@testable import DataPipeline
import SwiftJIT

/// SSD's AnnotatedData (issue 14): AnnotatedDatum records from an LMDB, resized and mirrored with
/// their boxes, as the `1×1×rows×8` label blob MultiBoxLoss reads; a tiny SSD train net trains
/// from such an LMDB through `Trainer` (what `swiftjit train` runs).
@Suite("SSD AnnotatedData", .serialized)
struct AnnotatedDataTests {
    /// Three 10×12 RGB records: a bright box per annotation; record 1 has three boxes (one
    /// difficult, one reaching past the border), the others one each.
    static let annotations: [[AnnotatedBox]] = [
        [AnnotatedBox(label: 1, instance: 0, xmin: 0.1, ymin: 0.2, xmax: 0.5, ymax: 0.7, difficult: false)],
        [AnnotatedBox(label: 2, instance: 0, xmin: 0.5, ymin: 0.1, xmax: 0.9, ymax: 0.6, difficult: false),
         AnnotatedBox(label: 1, instance: 1, xmin: 0.05, ymin: 0.5, xmax: 0.4, ymax: 0.95, difficult: true),
         AnnotatedBox(label: 2, instance: 2, xmin: 0.7, ymin: 0.6, xmax: 1.2, ymax: 0.9, difficult: false)],
        [AnnotatedBox(label: 1, instance: 0, xmin: 0.3, ymin: 0.3, xmax: 0.8, ymax: 0.8, difficult: false)],
    ]

    static func makeLMDB(_ folder: URL, height: Int = 10, width: Int = 12) throws -> URL {
        let path = folder.appendingPathComponent("annotated_lmdb")
        let writer = try LMDBWriter(path: path.path)
        for (i, boxes) in annotations.enumerated() {
            var pixels = [UInt8](repeating: 40, count: 3 * height * width)
            for box in boxes {
                for y in Int(box.ymin * Float(height))..<min(height, Int(box.ymax * Float(height))) {
                    for x in Int(box.xmin * Float(width))..<min(width, Int(box.xmax * Float(width))) {
                        pixels[(Int(box.label) * height + y) * width + x] = 220
                        pixels[(0 * height + y) * width + x] = UInt8((x * 20) % 256)
                    }
                }
            }
            var datum = Caffe_Datum()
            (datum.channels, datum.height, datum.width) = (3, Int32(height), Int32(width))
            datum.data = Data(pixels)
            let record = AnnotatedDatumRecord(datum: try datum.serializedData(), boxes: boxes)
            try writer.put(key: String(format: "%08d", i), value: record.encoded())
        }
        try writer.finish()
        return path
    }

    static func layer(_ source: String, mirror: Bool, extra: String = "") throws -> Caffe_LayerParameter {
        let text = """
            layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
                    transform_param { mirror: \(mirror) mean_value: 127 scale: 0.01 emit_constraint { emit_type: CENTER }
                                      resize_param { prob: 1 resize_mode: WARP height: 16 width: 16 interp_mode: LINEAR } \(extra) }
                    data_param { source: "\(source)" batch_size: 2 backend: LMDB }
                    annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 } label_map_file: "labelmap.prototxt" } }
            """
        return try CaffeFiles.parseNet(text: text).net.layer[0]
    }

    @Test("records decode, resize to 16×16 and give padded box rows; mirroring flips images and boxes together")
    func reader() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-annotated-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.makeLMDB(folder).path
        let plain = try AnnotatedDataReader(layer: Self.layer(source, mirror: false), phase: .train, seed: 3, baseDirectory: nil)
        #expect(plain.batchShape == [2, 3, 16, 16])
        #expect(plain.labelRows == 6, "batch 2 × the most boxes of a record (3)")
        var first = DataBatch(shape: plain.batchShape)
        try plain.fill(&first)
        // Rows follow the record's annotation groups (label 2's boxes, then label 1's); the box
        // reaching past the border is clipped to 1.
        let expected: [[Float]] = [[0, 1, 0, 0.1, 0.2, 0.5, 0.7, 0], [1, 2, 0, 0.5, 0.1, 0.9, 0.6, 0], [1, 2, 2, 0.7, 0.6, 1, 0.9, 0],
                                   [1, 1, 1, 0.05, 0.5, 0.4, 0.95, 1], [-1, 0, 0, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0, 0, 0]]
        #expect(first.labels == expected.flatMap { $0 })
        // Mean 127 and scale 0.01 over the background's 40.
        #expect(abs(first.data[0] - (40 - 127) * 0.01) < 1e-6)
        var second = DataBatch(shape: plain.batchShape)
        try plain.fill(&second)
        #expect(Array(second.labels.prefix(16)) == [0, 1, 0, 0.3, 0.3, 0.8, 0.8, 0] + [1, 1, 0, 0.1, 0.2, 0.5, 0.7, 0], "wraps to record 0")

        let mirrored = try AnnotatedDataReader(layer: Self.layer(source, mirror: true), phase: .train, seed: 3, baseDirectory: nil)
        var flips = 0
        let reference = try AnnotatedDataReader(layer: Self.layer(source, mirror: false), phase: .train, seed: 3, baseDirectory: nil)
        for _ in 0..<4 {
            var a = DataBatch(shape: mirrored.batchShape), b = DataBatch(shape: reference.batchShape)
            try mirrored.fill(&a)
            try reference.fill(&b)
            for item in 0..<2 {
                let plane = 3 * 16 * 16, image = Array(a.data[(item * plane)..<((item + 1) * plane)])
                let original = Array(b.data[(item * plane)..<((item + 1) * plane)])
                var flipped = original
                for row in 0..<(3 * 16) { flipped[(row * 16)..<(row * 16 + 16)].reverse() }
                let rowsA = stride(from: 0, to: a.labels.count, by: 8).map { Array(a.labels[$0..<($0 + 8)]) }.filter { $0[0] == Float(item) }
                let rowsB = stride(from: 0, to: b.labels.count, by: 8).map { Array(b.labels[$0..<($0 + 8)]) }.filter { $0[0] == Float(item) }
                if image == flipped, image != original {
                    flips += 1
                    #expect(rowsA == rowsB.map { r in [r[0], r[1], r[2], 1 - r[5], r[4], 1 - r[3], r[6], r[7]] })
                } else {
                    #expect(image == original)
                    #expect(rowsA == rowsB)
                }
            }
        }
        #expect(flips > 0 && flips < 8, "about half the images are mirrored: \(flips) of 8")
    }

    @Test("what is still not run (noise_param, crop_size, expand_param with a mean_file) is refused naming the field")
    func refusals() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-annotated-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.makeLMDB(folder).path
        for (extra, field) in [("noise_param { prob: 0.5 hist_eq: true }", "noise_param"),
                               ("crop_size: 8", "crop_size"),
                               ("expand_param { prob: 0.5 max_expand_ratio: 1 }", "max_expand_ratio")] {
            do {
                _ = try AnnotatedDataReader(layer: Self.layer(source, mirror: false, extra: extra), phase: .train, seed: 1, baseDirectory: nil)
                Issue.record("expected \(field) to be refused")
            } catch let error as Diagnostic {
                #expect(error.message.contains(field) && error.layer == "data", "\(error)")
            }
        }
        // distort_param and expand_param are run now.
        _ = try AnnotatedDataReader(layer: Self.layer(source, mirror: false, extra: "distort_param { brightness_prob: 0.5 brightness_delta: 32 } expand_param { prob: 0.5 max_expand_ratio: 4 }"),
                                    phase: .train, seed: 1, baseDirectory: nil)
    }

    @Test("a tiny SSD train net trains from an annotated LMDB (AnnotatedData → MultiBoxLoss)")
    func trains() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-annotated-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try Self.makeLMDB(folder, height: 32, width: 32)
        let net = """
            name: "tiny_ssd_train"
            layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
                    transform_param { mirror: true mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.02
                                      resize_param { prob: 1 resize_mode: WARP height: 32 width: 32 interp_mode: LINEAR } emit_constraint { emit_type: CENTER } }
                    data_param { source: "annotated_lmdb" batch_size: 2 backend: LMDB }
                    annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 } } }
            layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
            layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
            layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
            layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
            layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
            layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
            \(TinySSDTraining.heads((8, 16), (16, 28)))
            """
        let losses = try TinySSDTraining.train(net, in: folder, iterations: 24)
        print("AnnotatedData tiny SSD losses: \(losses)")
        #expect(losses.count == 24)
        #expect(losses.allSatisfy { $0.isFinite && $0 > 0 })
        let early = losses.prefix(6).reduce(0, +) / 6, late = losses.suffix(6).reduce(0, +) / 6
        #expect(late < 0.8 * early, "loss went from \(early) to \(late)")
    }
}
