import Foundation
import Testing
@testable import DataPipeline
import SwiftJIT

/// SSD300's published training data layer (weiliu89/caffe `examples/ssd/ssd_pascal.py`: seven
/// batch samplers, distort_param, expand_param, emit_constraint CENTER, a 300×300 WARP resize
/// over five interpolations, mirror, VGG mean) run as written: its boxes stay on the objects'
/// pixels through every augmentation, batches repeat for a seed, and a small SSD-shaped net trains
/// from it through `Trainer` (what `swiftjit train` runs).
@Suite("SSD published augmentation", .serialized)
struct SSDAugmentedTrainingTests {
    /// The `batch_sampler`s of ssd_pascal.py, as its generated train.prototxt writes them.
    static let publishedSamplers: String = {
        var text = "batch_sampler { sampler { min_scale: 1 max_scale: 1 min_aspect_ratio: 1 max_aspect_ratio: 1 } max_sample: 1 max_trials: 1 }\n"
        for constraint in ["min_jaccard_overlap: 0.1", "min_jaccard_overlap: 0.3", "min_jaccard_overlap: 0.5",
                           "min_jaccard_overlap: 0.7", "min_jaccard_overlap: 0.9", "max_jaccard_overlap: 1.0"] {
            text += """
                batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 }
                                sample_constraint { \(constraint) } max_sample: 1 max_trials: 50 }

                """
        }
        return text
    }()

    /// ssd_pascal.py's train data layer; only the source, batch size and (for the pixel check)
    /// the mean and photometric distortion are set by the test.
    static func dataLayer(source: String, batchSize: Int, mean: String = "mean_value: 104 mean_value: 117 mean_value: 123",
                          distort: Bool = true, size: Int = 300) -> String {
        """
        layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: TRAIN }
          transform_param {
            mirror: true
            \(mean)
            resize_param { prob: 1 resize_mode: WARP height: \(size) width: \(size)
                           interp_mode: LINEAR interp_mode: AREA interp_mode: NEAREST interp_mode: CUBIC interp_mode: LANCZOS4 }
            emit_constraint { emit_type: CENTER }
            \(distort ? """
            distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5 contrast_upper: 1.5
                            hue_prob: 0.5 hue_delta: 18 saturation_prob: 0.5 saturation_lower: 0.5 saturation_upper: 1.5 random_order_prob: 0 }
            """ : "")
            expand_param { prob: 0.5 max_expand_ratio: 4.0 }
          }
          data_param { source: "\(source)" batch_size: \(batchSize) backend: LMDB }
          annotated_data_param {
            \(publishedSamplers)
            label_map_file: "data/VOC0712/labelmap_voc.prototxt"
          }
        }
        """
    }

    /// Records of varied sizes on a dark background (value 30), each with one or two solid
    /// bright boxes (value 230 in every channel); the first three JPEG-encoded as the fork's
    /// create_annoset.py stores them (quality loss is kept far from the box edges by the check).
    static func makeLMDB(_ folder: URL) throws -> String {
        let path = folder.appendingPathComponent("voc_like_lmdb").path
        let writer = try LMDBWriter(path: path)
        let records: [(Int, Int, [AnnotatedBox])] = [
            (40, 56, [AnnotatedBox(label: 1, instance: 0, xmin: 0.1, ymin: 0.2, xmax: 0.45, ymax: 0.7, difficult: false)]),
            (48, 48, [AnnotatedBox(label: 2, instance: 0, xmin: 0.5, ymin: 0.1, xmax: 0.9, ymax: 0.5, difficult: false)]),
            (36, 60, [AnnotatedBox(label: 1, instance: 0, xmin: 0.3, ymin: 0.3, xmax: 0.7, ymax: 0.9, difficult: false)]),
            (44, 52, [AnnotatedBox(label: 2, instance: 0, xmin: 0.05, ymin: 0.05, xmax: 0.35, ymax: 0.4, difficult: false),
                      AnnotatedBox(label: 1, instance: 1, xmin: 0.6, ymin: 0.55, xmax: 0.95, ymax: 0.95, difficult: true)]),
            (50, 40, [AnnotatedBox(label: 2, instance: 0, xmin: 0.2, ymin: 0.4, xmax: 0.8, ymax: 0.85, difficult: false)]),
            (32, 64, [AnnotatedBox(label: 1, instance: 0, xmin: 0.55, ymin: 0.15, xmax: 0.85, ymax: 0.75, difficult: false)]),
        ]
        for (index, (height, width, boxes)) in records.enumerated() {
            var planar = [UInt8](repeating: 30, count: 3 * height * width)
            for box in boxes {
                for y in Int((box.ymin * Float(height)).rounded())..<Int((box.ymax * Float(height)).rounded()) {
                    for x in Int((box.xmin * Float(width)).rounded())..<Int((box.xmax * Float(width)).rounded()) {
                        for c in 0..<3 { planar[(c * height + y) * width + x] = 230 }
                    }
                }
            }
            var datum = Caffe_Datum()
            (datum.channels, datum.height, datum.width) = (3, Int32(height), Int32(width))
            if index < 3 {
                var interleaved = [UInt8](repeating: 0, count: planar.count)
                for c in 0..<3 { for p in 0..<(height * width) { interleaved[p * 3 + c] = planar[c * height * width + p] } }
                datum.data = try ImageEncoder.png(DecodedImage(channels: 3, height: height, width: width, pixels: interleaved))
                datum.encoded = true
            } else {
                datum.data = Data(planar)
            }
            let record = AnnotatedDatumRecord(datum: try datum.serializedData(), boxes: boxes)
            try writer.put(key: String(format: "%08d", index), value: record.encoded())
        }
        try writer.finish()
        return path
    }

    static func reader(_ text: String, seed: UInt32) throws -> AnnotatedDataReader {
        try AnnotatedDataReader(layer: try CaffeFiles.parseNet(text: text).net.layer[0], phase: .train, seed: seed, baseDirectory: nil)
    }

    @Test("through samplers, expansion, resize modes and mirror, every label row lies on bright object pixels; batches repeat for a seed")
    func boxesFollowPixels() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-ssdaug-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = try Self.makeLMDB(folder)
        // No mean and no photometric distortion, so object pixels stay bright (≥ 200) and the
        // background dark; the canvas fill is 0. A 64×64 output keeps the check quick.
        let text = Self.dataLayer(source: source, batchSize: 3, mean: "", distort: false, size: 64)
        let reader = try Self.reader(text, seed: 12), again = try Self.reader(text, seed: 12), other = try Self.reader(text, seed: 13)
        #expect(reader.batchShape == [3, 3, 64, 64])
        var (rows, cropped, expanded) = (0, 0, 0)
        var differs = false
        for _ in 0..<16 {
            var batch = DataBatch(shape: reader.batchShape), same = DataBatch(shape: reader.batchShape), third = DataBatch(shape: reader.batchShape)
            try reader.fill(&batch)
            try again.fill(&same)
            try other.fill(&third)
            #expect(batch.data == same.data && batch.labels == same.labels, "the same seed gives the same batch")
            if batch.data != third.data { differs = true }
            for item in 0..<3 {
                let plane = 64 * 64
                let image = Array(batch.data[(item * 3 * plane)..<(item * 3 * plane + plane)])
                if image.contains(0) { expanded += 1 }
                let boxes = stride(from: 0, to: batch.labels.count, by: 8).map { Array(batch.labels[$0..<($0 + 8)]) }.filter { $0[0] == Float(item) }
                for row in boxes {
                    rows += 1
                    let (x0, y0, x1, y1) = (row[3] * 64, row[4] * 64, row[5] * 64, row[6] * 64)
                    #expect(x1 > x0 && y1 > y0 && x0 >= 0 && y0 >= 0 && x1 <= 64 && y1 <= 64)
                    if x1 - x0 < 4 || y1 - y0 < 4 { continue }
                    // The middle of the box (its inner half each way, clear of the resize's blur at
                    // the edges) is object.
                    var bright = 0, total = 0
                    let (mx0, mx1) = (Int((x0 + (x1 - x0) / 4).rounded(.up)), Int((x1 - (x1 - x0) / 4).rounded(.down)))
                    let (my0, my1) = (Int((y0 + (y1 - y0) / 4).rounded(.up)), Int((y1 - (y1 - y0) / 4).rounded(.down)))
                    for y in my0..<max(my0, my1) {
                        for x in mx0..<max(mx0, mx1) {
                            total += 1
                            if image[y * 64 + x] >= 150 { bright += 1 }
                        }
                    }
                    if total > 0 { #expect(Double(bright) >= 0.95 * Double(total), "row \(row): \(bright) of \(total) inner pixels bright") }
                    if row[5] - row[3] > 0.7 { cropped += 1 }
                }
                // And bright pixels outside every box are rare (an object dropped by CENTER may
                // leave a sliver; none may leave a large bright area unlabelled).
                var outside = 0
                for y in 0..<64 {
                    for x in 0..<64 where image[y * 64 + x] >= 150 {
                        let (fx, fy) = ((Float(x) + 0.5) / 64, (Float(y) + 0.5) / 64)
                        if !boxes.contains(where: { fx >= $0[3] - 0.04 && fx <= $0[5] + 0.04 && fy >= $0[4] - 0.04 && fy <= $0[6] + 0.04 }) { outside += 1 }
                    }
                }
                #expect(outside <= 64 * 64 / 4, "item \(item): \(outside) bright pixels lie outside the labelled boxes")
            }
        }
        #expect(differs, "another seed gives other batches")
        #expect(rows >= 30, "boxes survive the augmentations: \(rows) rows in 48 images")
        #expect(expanded >= 5 && expanded <= 43, "expand_param prob 0.5 shows its zero canvas in some images: \(expanded) of 48")
        #expect(cropped >= 1, "random crops zoom in on some objects: \(cropped) boxes wider than 70%")
    }

    @Test("a small SSD-shaped net trains from ssd_pascal.py's data layer as written (300×300, all augmentations)")
    func publishedDataLayerTrains() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-ssdaug-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try Self.makeLMDB(folder)
        // 300×300 in, strided convolutions down to 10×10 and 5×5 feature maps with SSD's heads.
        let net = """
            name: "ssd_shaped_train"
            \(Self.dataLayer(source: "voc_like_lmdb", batchSize: 2))
            layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.02 } }
            layer { name: "conv1" type: "Convolution" bottom: "scaled" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 4 pad: 1 weight_filler { type: "xavier" } } }
            layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
            layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 3 } }
            layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
            layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
            layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "xavier" } } }
            layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
            \(TinySSDTraining.heads((60, 120), (120, 250)))
            """
        let losses = try TinySSDTraining.train(net, in: folder, iterations: 40)
        print("SSD published data layer losses: \(losses)")
        #expect(losses.count == 40)
        #expect(losses.allSatisfy { $0.isFinite && $0 > 0 })
        let early = losses.prefix(10).reduce(0, +) / 10, late = losses.suffix(10).reduce(0, +) / 10
        #expect(late < 0.8 * early, "loss went from \(early) to \(late)")
    }

    /// SSD300 VGG16's train net as ssd_pascal.py writes it: the layers of its deploy net up to the
    /// heads (`Tests/peers/nets/ssd300_vgg16_voc0712_deploy.prototxt`, BSD-2-Clause, see SOURCE.txt)
    /// between the published AnnotatedData layer and the published MultiBoxLoss.
    static func ssd300TrainNet(source: String) throws -> String {
        let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("peers/nets/ssd300_vgg16_voc0712_deploy.prototxt")
        let text = try String(contentsOf: deploy, encoding: .utf8)
        // From the first layer to the heads' concatenations; the deploy tail (softmax, detection) is dropped.
        guard let first = text.range(of: "layer {"), let tail = text.range(of: "layer {\n  name: \"mbox_conf_reshape\"") else {
            throw SharedFixtureMissing(path: deploy.path)
        }
        return """
            name: "VGG_VOC0712_SSD_300x300_train"
            \(dataLayer(source: source, batchSize: 1))
            \(text[first.lowerBound..<tail.lowerBound])
            layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" bottom: "mbox_conf" bottom: "mbox_priorbox" bottom: "label" top: "mbox_loss"
              include { phase: TRAIN } propagate_down: true propagate_down: true propagate_down: false propagate_down: false
              loss_param { normalization: VALID }
              multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1.0 num_classes: 21 share_location: true
                match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true background_label_id: 0 use_difficult_gt: true
                neg_pos_ratio: 3.0 neg_overlap: 0.5 code_type: CENTER_SIZE ignore_cross_boundary_bbox: false mining_type: MAX_NEGATIVE } }
            """
    }

    struct SharedFixtureMissing: Error, CustomStringConvertible {
        var path: String
        var description: String { "\(path) is missing or no longer has SSD300's heads (mbox_conf_reshape)" }
    }

    @Test("SSD300 VGG16's published train net (all augmentations, Normalize, MultiBoxLoss) trains 2 iterations at batch 1")
    func ssd300TrainNetRuns() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-ssd300-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try Self.makeLMDB(folder)
        try Self.ssd300TrainNet(source: "voc_like_lmdb").write(to: folder.appendingPathComponent("train.prototxt"), atomically: true, encoding: .utf8)
        try """
        net: "train.prototxt" base_lr: 0.001 momentum: 0.9 lr_policy: "fixed" max_iter: 2 display: 0 random_seed: 3 type: "SGD" snapshot_after_train: false
        """.write(to: folder.appendingPathComponent("solver.prototxt"), atomically: true, encoding: .utf8)
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .quiet
        let trainer = try Trainer(solverPath: folder.appendingPathComponent("solver.prototxt").path, options: options, compiler: try Compiler())
        let losses = try trainer.train().losses.map(\.loss)
        print("SSD300 published train net losses: \(losses)")
        #expect(losses.count == 2)
        // A crop may hold no object (the last sampler only bounds the overlap from above), and
        // the fork's loss is then 0; some iteration has a box.
        #expect(losses.allSatisfy { $0.isFinite && $0 >= 0 } && losses.contains { $0 > 0 })
    }
}
