import Foundation
import Testing
import SwiftJIT

/// SSD's layers (weiliu89/caffe, branch ssd) that run: Permute, Flatten with an axis, PriorBox
/// and Normalize, against OpenCV DNN on the same random weights, plus a NumPy port of the fork's
/// Normalize for the variants OpenCV cannot load; and the shape rules that let SSD's train and
/// test nets (AnnotatedData, MultiBoxLoss, DetectionOutput) explain.
@Suite("SSD layers against OpenCV DNN")
struct SSDLayerTests {
    static let net = """
        name: "ssd-shaped"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 60 dim: 80 } } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3 stride: 4 pad: 1 } }
        layer { name: "perm" type: "Permute" bottom: "conv" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
        layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" flatten_param { axis: 1 } }
        layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior"
                prior_box_param { min_size: 20 max_size: 45 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false
                                  variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
        layer { name: "prior_step" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior_step"
                prior_box_param { min_size: 30 aspect_ratio: 2 flip: false clip: true step: 8 offset: 0.25 variance: 0.1 } }
        layer { name: "norm" type: "Normalize" bottom: "conv" top: "norm"
                norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
        """

    /// Variants OpenCV does not load (a partial Permute order, a 0-D shared scale, across_spatial
    /// with a per-channel scale).
    static let numpyOnly = """
        layer { name: "perm2" type: "Permute" bottom: "conv" top: "perm2" permute_param { order: 3 order: 1 } }
        layer { name: "norm_across" type: "Normalize" bottom: "conv" top: "norm_across" norm_param { across_spatial: true channel_shared: false } }
        layer { name: "norm_shared" type: "Normalize" bottom: "conv" top: "norm_shared" norm_param { across_spatial: false channel_shared: true eps: 0.001 } }
        """

    static let script = """
        import json
        import cv2
        directory = sys.argv[1]
        ours = np.load(directory + '/ours.npz')
        x = np.load(directory + '/input.npy')
        net = cv2.dnn.readNetFromCaffe(directory + '/opencv.prototxt', directory + '/weights.caffemodel')
        net.setInput(x, 'data')
        names = ['conv', 'perm', 'flat', 'prior', 'prior_step', 'norm']
        report = {}
        for name, value in zip(names, net.forward(names)):
            mine = ours[name]
            same = value.size == mine.size
            report[name] = {'shape': list(mine.shape), 'opencv_shape': list(value.shape),
                            'error': float(np.abs(value.reshape(mine.shape) - mine).max() / max(1e-12, np.abs(value).max())) if same else 1e9}
        # NumPy ports of the fork's Normalize (normalize_layer.cpp) for the OpenCV-less variants.
        conv = ours['conv'].astype(np.float64)
        scales = json.load(open(directory + '/scales.json'))
        n, c = conv.shape[:2]
        across = conv / np.sqrt((conv ** 2).reshape(n, -1).sum(axis=1) + 1e-10).reshape(n, 1, 1, 1)
        across = across * np.array(scales['norm_across']).reshape(1, c, 1, 1)
        shared = conv / np.sqrt((conv ** 2).sum(axis=1, keepdims=True) + 1e-3) * scales['norm_shared'][0]
        # Permute with order 3, 1: the unnamed axes 0 and 2 follow in order.
        permuted = np.transpose(conv, (3, 1, 0, 2))
        for name, ref in [('norm_across', across), ('norm_shared', shared), ('perm2', permuted)]:
            report[name] = {'shape': list(ours[name].shape), 'opencv_shape': list(ref.shape),
                            'error': float(np.abs(ours[name] - ref).max() / np.abs(ref).max())}
        print(json.dumps(report))
        """

    @Test("Permute, Flatten(axis), PriorBox (sizes, ratios, flip, clip, step, offset, variances) and Normalize equal OpenCV DNN's outputs")
    func againstOpenCV() throws {
        try ExportFixtures.withTempDir { dir in
            let full = dir.appendingPathComponent("net.prototxt")
            try (Self.net + "\n" + Self.numpyOnly).write(to: full, atomically: true, encoding: .utf8)
            try Self.net.write(to: dir.appendingPathComponent("opencv.prototxt"), atomically: true, encoding: .utf8)
            let weights = dir.appendingPathComponent("weights.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: full, seed: 7), to: weights.path)
            var generator = SplitMix64(seed: 3)
            let x = NDArray(shape: [2, 3, 60, 80], data: (0..<(2 * 3 * 60 * 80)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let model = try Model(prototxt: full.path, weights: weights.path)
            let outputs = try model.forward(["data": x], blobs: .all)
            #expect(outputs["prior"]?.shape == [1, 2, 15 * 20 * 6 * 4])
            #expect(outputs["perm2"]?.shape == [20, 8, 2, 15])
            try NumPyFile.write(x, to: dir.appendingPathComponent("input.npy").path)
            try NumPyFile.write(archive: outputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: dir.appendingPathComponent("ours.npz").path)
            let scales = ["norm_across": model.params["norm_across"]?.first?.data ?? [], "norm_shared": model.params["norm_shared"]?.first?.data ?? []]
            try JSONSerialization.data(withJSONObject: scales).write(to: dir.appendingPathComponent("scales.json"))
            let report = try ExportFixtures.pythonJSON(Self.script, [dir.path])
            #expect(report.count == 9)
            for (name, entry) in report {
                let values = entry as? [String: Any] ?? [:]
                #expect((values["error"] as? Double ?? 1) < 1e-5, "\(name): \(values)")
            }
        }
    }

    @Test("SSD's train and test layers explain: AnnotatedData's resized images and box labels, MultiBoxLoss, DetectionOutput's setup shape")
    func shapes() throws {
        let text = """
            layer { name: "data" type: "AnnotatedData" top: "data" top: "label"
                    transform_param { mirror: true mean_value: 104 mean_value: 117 mean_value: 123
                      resize_param { prob: 1 resize_mode: WARP height: 300 width: 300 interp_mode: LINEAR interp_mode: AREA }
                      emit_constraint { emit_type: CENTER }
                      distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5 contrast_upper: 1.5 }
                      expand_param { prob: 0.5 max_expand_ratio: 4 } }
                    data_param { source: "trainval_lmdb" batch_size: 32 backend: LMDB }
                    annotated_data_param { batch_sampler { max_sample: 1 max_trials: 1 }
                      batch_sampler { sampler { min_scale: 0.3 max_scale: 1 min_aspect_ratio: 0.5 max_aspect_ratio: 2 }
                                      sample_constraint { min_jaccard_overlap: 0.1 } max_sample: 1 max_trials: 50 }
                      label_map_file: "labelmap_voc.prototxt" } }
            layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 12 kernel_size: 3 stride: 16 pad: 1 } }
            layer { name: "loc" type: "Convolution" bottom: "conv" top: "loc" convolution_param { num_output: 16 kernel_size: 1 } }
            layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
            layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" flatten_param { axis: 1 } }
            layer { name: "conf" type: "Convolution" bottom: "conv" top: "conf" convolution_param { num_output: 84 kernel_size: 1 } }
            layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
            layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" flatten_param { axis: 1 } }
            layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior"
                    prior_box_param { min_size: 60 max_size: 111 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 } }
            layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc_flat" bottom: "conf_flat" bottom: "prior" bottom: "label" top: "mbox_loss"
                    include { phase: TRAIN } propagate_down: true propagate_down: true propagate_down: false propagate_down: false
                    loss_param { normalization: VALID }
                    multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: 21 share_location: true
                      match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true background_label_id: 0
                      use_difficult_gt: true neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE ignore_cross_boundary_bbox: false mining_type: MAX_NEGATIVE } }
            layer { name: "detection_out" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_flat" bottom: "prior" top: "detection_out"
                    include { phase: TEST }
                    detection_output_param { num_classes: 21 share_location: true background_label_id: 0
                      nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: 0.01
                      save_output_param { output_directory: "out" output_name_prefix: "comp4_det_test_" output_format: "VOC" } } }
            """
        let definition = try CaffeFiles.parseNet(text: text)
        let train = try GraphBuilder(phase: .train).build(definition)
        #expect(train.value(named: "data")?.shape.dims == [32, 3, 300, 300])
        #expect(train.value(named: "label")?.shape.dims == [1, 1, TensorShape.unknown, 8])
        // 300 → 19×19 cells, 4 priors per cell (min, sqrt(min·max), 2, 1/2).
        #expect(train.value(named: "prior")?.shape.dims == [1, 2, 19 * 19 * 4 * 4])
        #expect(train.value(named: "mbox_loss")?.shape.dims == [])
        #expect(train.node(named: "mbox_loss")?.lossWeights == [1])
        let test = try GraphBuilder(phase: .test, inputShapes: ["data": TensorShape([1, 3, 300, 300])]).build(definition)
        #expect(test.value(named: "detection_out")?.shape.dims == [1, 1, 1, 7])
        // Caffe's checks: the confidences must match priors × classes.
        let wrong = text.replacingOccurrences(of: "num_classes: 21 share_location: true background_label_id: 0\n", with: "num_classes: 20 share_location: true background_label_id: 0\n")
        do {
            _ = try GraphBuilder(phase: .test, inputShapes: ["data": TensorShape([1, 3, 300, 300])]).build(try CaffeFiles.parseNet(text: wrong))
            Issue.record("20 classes cannot read 21 confidences per prior")
        } catch {
            #expect("\(error)".contains("need 28880 values per image (1444 priors × 20 classes)"), "\(error)")
        }
    }
}
