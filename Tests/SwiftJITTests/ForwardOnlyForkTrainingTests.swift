import Foundation
import Testing
import SwiftJIT

/// Train nets that carry the forks' inference-side layers (issue 14): YOLOv2's Reorg on the loss
/// path (it trains), and py-faster-rcnn's proposal layer, YOLOv2's Region and SSD's
/// DetectionOutput on side branches, which run forward every iteration and stop gradients.
@Suite("forward-only fork layers in train nets", .serialized)
struct ForwardOnlyForkTrainingTests {
    /// conv1 → Reorg → conv2 → EuclideanLoss; beside it an RPN (scores, deltas, im_info →
    /// py-faster-rcnn's Python proposal layer → ROIPooling → a loss-weighted Reduction, so the
    /// proposals' bottoms ask for a diff), a Region head on conv2 and a DetectionOutput head.
    static let trainNet = """
        name: "fork-side-branches"
        layer { name: "data" type: "DummyData" top: "data" top: "target" top: "im_size" top: "im_scale" top: "priors"
                dummy_data_param { shape { dim: 1 dim: 4 dim: 8 dim: 8 } shape { dim: 1 dim: 16 dim: 4 dim: 4 } shape { dim: 1 dim: 2 } shape { dim: 1 dim: 1 } shape { dim: 1 dim: 2 dim: 64 }
                                   data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 0.2 }
                                   data_filler { type: "constant" value: 128 } data_filler { type: "constant" value: 1 }
                                   data_filler { type: "uniform" min: 0 max: 1 } } }
        layer { name: "im_info" type: "Concat" bottom: "im_size" bottom: "im_scale" top: "im_info" concat_param { axis: 1 } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.2 } } }
        layer { name: "reorg" type: "Reorg" bottom: "conv1" top: "reorg" reorg_param { stride: 2 } }
        layer { name: "conv2" type: "Convolution" bottom: "reorg" top: "conv2"
                convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "gaussian" std: 0.2 } } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "conv2" bottom: "target" top: "loss" }
        layer { name: "rpn_cls_prob" type: "Convolution" bottom: "conv1" top: "rpn_cls_prob"
                convolution_param { num_output: 18 kernel_size: 1 weight_filler { type: "gaussian" std: 0.2 } } }
        layer { name: "rpn_bbox_pred" type: "Convolution" bottom: "conv1" top: "rpn_bbox_pred"
                convolution_param { num_output: 36 kernel_size: 1 weight_filler { type: "gaussian" std: 0.01 } } }
        layer { name: "proposal" type: "Python" bottom: "rpn_cls_prob" bottom: "rpn_bbox_pred" bottom: "im_info" top: "rois"
                python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 16" } }
        layer { name: "roi_pool" type: "ROIPooling" bottom: "conv1" bottom: "rois" top: "roi_pool"
                roi_pooling_param { pooled_w: 2 pooled_h: 2 spatial_scale: 0.0625 } }
        layer { name: "roi_sum" type: "Reduction" bottom: "roi_pool" top: "roi_sum" loss_weight: 0.000001 }
        layer { name: "region" type: "Region" bottom: "conv2" top: "region"
                region_param { classes: 3 boxes_of_each_grid: 2 anchors: 1 anchors: 1 anchors: 2 anchors: 2 } }
        layer { name: "det_loc" type: "Convolution" bottom: "reorg" top: "det_loc" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "det_loc_flat" type: "Flatten" bottom: "det_loc" top: "det_loc_flat" }
        layer { name: "det_conf" type: "Convolution" bottom: "reorg" top: "det_conf" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "det_conf_flat" type: "Flatten" bottom: "det_conf" top: "det_conf_flat" }
        layer { name: "detections" type: "DetectionOutput" bottom: "det_loc_flat" bottom: "det_conf_flat" bottom: "priors" top: "detections"
                detection_output_param { num_classes: 3 nms_param { nms_threshold: 0.45 } keep_top_k: 10 confidence_threshold: 0.01 } }
        """

    static func folder(_ name: String) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    static func trainer(_ net: String, in folder: URL, iterations: Int) throws -> Trainer {
        try net.write(to: folder.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        let solver = folder.appendingPathComponent("solver.prototxt")
        try """
            net: "net.prototxt"
            base_lr: 0.002 momentum: 0.9 lr_policy: "fixed" max_iter: \(iterations) random_seed: 3 type: "SGD"
            """.write(to: solver, atomically: true, encoding: .utf8)
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .quiet
        return try Trainer(solverPath: solver.path, options: options, compiler: try Compiler())
    }

    @Test("SGD trains through Reorg while Proposal, ROIPooling, Region and DetectionOutput run forward on side branches; Proposal's bottoms get no gradient from it")
    func sideBranches() throws {
        let folder = try Self.folder("fork-side-branches")
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = try Self.trainer(Self.trainNet, in: folder, iterations: 20)
        let result = try trainer.train()
        let losses = result.losses.map(\.loss)
        #expect(losses.count == 20)
        #expect(losses.last! < 0.5 * losses.first!, "losses \(losses)")
        // One more pass with every blob kept, from the trained weights.
        let graph = try GraphBuilder(phase: .train).build(try CaffeFiles.parseNet(text: Self.trainNet))
        let net = try Compiler(threads: 1).compileTraining(graph: graph, parameters: trainer.net.parameterArrays(), keepingAllBlobs: true)
        net.zeroParameterDiffs()
        var generator = SystemRandomNumberGenerator()
        let feeds = ["data": NDArray(shape: [1, 4, 8, 8], repeating: 0.5), "target": NDArray(shape: [1, 16, 4, 4], repeating: 0.2),
                     "im_size": NDArray(shape: [1, 2], repeating: 128), "im_scale": NDArray(shape: [1, 1], repeating: 1),
                     "priors": NDArray(shape: [1, 2, 64], data: (0..<128).map { _ in Float.random(in: 0..<1, using: &generator) })]
        _ = try net.run(feeds, backward: true)
        let rois = try #require(net.blob("rois"))
        #expect(rois.shape.count == 2 && rois.shape[1] == 5 && rois.shape[0] >= 1, "\(rois.shape)")
        #expect(rois.data.enumerated().allSatisfy { $0.offset % 5 != 0 || $0.element == 0 }, "every ROI is on image 0")
        #expect(net.blob("region")?.shape == [32, 8], "one row per cell and box: 4 coordinates, objectness, 3 class scores")
        let detections = try #require(net.blob("detections"))
        #expect(detections.shape.count == 4 && detections.shape[3] == 7 && detections.shape[2] <= 10, "\(detections.shape)")
        // The RPN's convolutions learn nothing from the proposals: py-faster-rcnn's backward is `pass`.
        let diffs = net.parameterDiffs()
        #expect(diffs["rpn_bbox_pred"]?.allSatisfy { $0.data.allSatisfy { $0 == 0 } } == true)
        #expect(diffs["conv1"]?[0].data.contains { $0 != 0 } == true)
    }

    @Test("a loss that needs DetectionOutput's or Region's gradient stops training with a message naming the layer")
    func lossBelowInferenceLayer() throws {
        for (layer, head) in [("detections", "layer { name: \"bad\" type: \"Reduction\" bottom: \"detections\" top: \"bad\" loss_weight: 1 }"),
                              ("region", "layer { name: \"bad\" type: \"Reduction\" bottom: \"region\" top: \"bad\" loss_weight: 1 }")] {
            let folder = try Self.folder("fork-bad-\(layer)")
            defer { try? FileManager.default.removeItem(at: folder) }
            do {
                _ = try Self.trainer(Self.trainNet + "\n" + head, in: folder, iterations: 2).train()
                Issue.record("training through \(layer) should fail")
            } catch {
                let text = "\(error)"
                #expect(text.contains("'\(layer)'") && text.contains("runs forward only") && text.contains("NOT_IMPLEMENTED"), "\(text)")
            }
        }
    }

    @Test("Reorg's backward moves every top diff back to the bottom element it came from (both directions)", arguments: [false, true])
    func reorgBackward(reverse: Bool) throws {
        let shape = reverse ? [2, 8, 2, 3] : [2, 4, 4, 6]
        let count = shape.reduce(1, *)
        let graph = try GraphBuilder(phase: .train).build(try CaffeFiles.parseNet(text: """
            force_backward: true
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(shape[0]) dim: \(shape[1]) dim: \(shape[2]) dim: \(shape[3]) } } }
            layer { name: "reorg" type: "Reorg" bottom: "x" top: "y" reorg_param { stride: 2 reverse: \(reverse) } }
            """))
        let net = try Compiler(threads: 1).compileTraining(graph: graph, parameters: [:], keepingAllBlobs: true)
        // x holds its own indices, so y says where each element went.
        let x = NDArray(shape: shape, data: (0..<count).map(Float.init))
        let seeds = (0..<count).map { Float($0 * 7 % 31) - 15 }
        let y = try #require(try net.run(["x": x], backward: false).outputs["y"])
        net.setTopDiffs(["y": NDArray(shape: y.shape, data: seeds)])
        _ = try net.run(["x": x], backward: true)
        let dx = try #require(net.blobDiff("x"))
        var expected = [Float](repeating: .nan, count: count)
        for (position, source) in y.data.enumerated() { expected[Int(source)] = seeds[position] }
        #expect(dx.data == expected)
    }
}
