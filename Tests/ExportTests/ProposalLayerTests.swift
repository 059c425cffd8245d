import Foundation
import Testing
import SwiftJIT

/// Faster R-CNN's Proposal layer: the native `Proposal` type against OpenCV DNN (which implements
/// it), and py-faster-rcnn's `rpn.proposal_layer` Python layer — run natively, without Python —
/// against a NumPy port of `proposal_layer.py` (`generate_anchors`, `bbox_transform_inv`,
/// `clip_boxes`, `_filter_boxes`, `py_cpu_nms`), including the minimum-size filter OpenCV skips.
@Suite("Faster R-CNN Proposal")
struct ProposalLayerTests {
    /// `directory`: inputs.npz (cls, bbox, im_info), ours.npz (rois, scores), settings.json. Prints
    /// the row counts and the largest differences against OpenCV (for the native form) and NumPy.
    static let script = """
        import json
        import cv2
        directory = sys.argv[1]
        given = dict(np.load(directory + '/inputs.npz'))
        ours = dict(np.load(directory + '/ours.npz'))
        settings = json.load(open(directory + '/settings.json'))
        def generate_anchors(base_size, ratios, scales):
            ratios = np.array(ratios, np.float64); scales = np.array(scales, np.float64)
            def whctrs(a):
                w = a[2] - a[0] + 1; h = a[3] - a[1] + 1
                return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)
            def mk(ws, hs, x, y):
                ws = ws[:, None]; hs = hs[:, None]
                return np.hstack((x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1)))
            base = np.array([1, 1, base_size, base_size], np.float64) - 1
            w, h, x, y = whctrs(base)
            ws = np.round(np.sqrt(w * h / ratios)); hs = np.round(ws * ratios)
            ra = mk(ws, hs, x, y)
            out = []
            for i in range(ra.shape[0]):
                w, h, x, y = whctrs(ra[i]); out.append(mk(w * scales, h * scales, x, y))
            return np.vstack(out)
        def nms(dets, thresh):
            x1, y1, x2, y2, s = [dets[:, i] for i in range(5)]
            areas = (x2 - x1 + 1) * (y2 - y1 + 1)
            order = s.argsort(kind='stable')[::-1]; keep = []
            while order.size > 0:
                i = order[0]; keep.append(i)
                xx1 = np.maximum(x1[i], x1[order[1:]]); yy1 = np.maximum(y1[i], y1[order[1:]])
                xx2 = np.minimum(x2[i], x2[order[1:]]); yy2 = np.minimum(y2[i], y2[order[1:]])
                w = np.maximum(np.float32(0), xx2 - xx1 + 1); h = np.maximum(np.float32(0), yy2 - yy1 + 1)
                inter = w * h
                ovr = inter / (areas[i] + areas[order[1:]] - inter)
                order = order[np.where(ovr <= np.float32(thresh))[0] + 1]
            return keep
        def proposal(cls_prob, bbox_deltas, im_info, s):
            anchors0 = generate_anchors(s['base_size'], s['ratios'], s['scales']); A = anchors0.shape[0]
            scores = cls_prob[:, A:, :, :]; im = im_info[0, :]
            H, W = scores.shape[-2:]
            sx, sy = np.meshgrid(np.arange(W) * s['feat_stride'], np.arange(H) * s['feat_stride'])
            shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).transpose()
            K = shifts.shape[0]
            anchors = (anchors0.reshape((1, A, 4)) + shifts.reshape((1, K, 4)).transpose((1, 0, 2))).reshape((K * A, 4))
            d = bbox_deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
            scores = scores.transpose((0, 2, 3, 1)).reshape((-1, 1))
            boxes = anchors.astype(np.float32)
            widths = boxes[:, 2] - boxes[:, 0] + np.float32(1.0); heights = boxes[:, 3] - boxes[:, 1] + np.float32(1.0)
            cx = boxes[:, 0] + np.float32(0.5) * widths; cy = boxes[:, 1] + np.float32(0.5) * heights
            pcx = d[:, 0] * widths + cx; pcy = d[:, 1] * heights + cy
            pw = np.exp(d[:, 2]) * widths; ph = np.exp(d[:, 3]) * heights
            p = np.stack([pcx - np.float32(0.5) * pw, pcy - np.float32(0.5) * ph, pcx + np.float32(0.5) * pw, pcy + np.float32(0.5) * ph], 1)
            p[:, 0::2] = np.maximum(np.minimum(p[:, 0::2], im[1] - np.float32(1)), np.float32(0))
            p[:, 1::2] = np.maximum(np.minimum(p[:, 1::2], im[0] - np.float32(1)), np.float32(0))
            ms = np.float32(s['min_size']) * im[2]
            keep = np.where(((p[:, 2] - p[:, 0] + 1) >= ms) & ((p[:, 3] - p[:, 1] + 1) >= ms))[0]
            p = p[keep]; scores = scores[keep]
            order = scores.ravel().argsort(kind='stable')[::-1]
            if s['pre'] > 0: order = order[:s['pre']]
            p = p[order]; scores = scores[order]
            keep = nms(np.hstack((p, scores)), s['nms'])
            if s['post'] > 0: keep = keep[:s['post']]
            p = p[keep]; scores = scores[keep]
            return np.hstack((np.zeros((p.shape[0], 1), np.float32), p)), scores
        rois, scores = proposal(given['cls'], given['bbox'], given['im_info'], settings)
        report = {'rows': int(ours['rois'].shape[0]), 'numpy_rows': int(rois.shape[0]),
                  'numpy': float(np.abs(ours['rois'] - rois).max()) if ours['rois'].shape == rois.shape else 1e9,
                  'numpy_scores': float(np.abs(ours['scores'] - scores).max()) if ours['scores'].shape == scores.shape else 1e9}
        if settings['opencv']:
            net = cv2.dnn.readNetFromCaffe(directory + '/opencv.prototxt')
            for name in ('cls', 'bbox', 'im_info'): net.setInput(given[name], name)
            padded = net.forward('proposal')
            # OpenCV pads its post_nms_topn rows with zeros after the boxes it keeps.
            kept = int((np.abs(padded).sum(axis=1) > 0).sum())
            report['opencv_rows'] = kept
            report['opencv'] = float(np.abs(ours['rois'] - padded[:kept]).max()) if kept == ours['rois'].shape[0] else 1e9
        print(json.dumps(report))
        """

    static let inputs = """
        layer { name: "cls" type: "Input" top: "cls" input_param { shape { dim: 1 dim: 18 dim: 7 dim: 9 } } }
        layer { name: "bbox" type: "Input" top: "bbox" input_param { shape { dim: 1 dim: 36 dim: 7 dim: 9 } } }
        layer { name: "im_info" type: "Input" top: "im_info" input_param { shape { dim: 1 dim: 3 } } }
        """

    /// Random RPN outputs for a 7×9 map: foreground probabilities in [0, 1), deltas ~ N(0, 0.3²).
    static func rpnOutputs(seed: UInt64, imInfo: [Float]) -> [String: NDArray] {
        var generator = SplitMix64(seed: seed)
        func normal() -> Float {
            let u = Float.random(in: Float.ulpOfOne..<1, using: &generator), v = Float.random(in: 0..<1, using: &generator)
            return (-2 * logf(u)).squareRoot() * cosf(2 * .pi * v)
        }
        return ["cls": NDArray(shape: [1, 18, 7, 9], data: (0..<(18 * 63)).map { _ in Float.random(in: 0..<1, using: &generator) }),
                "bbox": NDArray(shape: [1, 36, 7, 9], data: (0..<(36 * 63)).map { _ in 0.3 * normal() }),
                "im_info": NDArray(shape: [1, 3], data: imInfo)]
    }

    /// Runs `layer` over the inputs of `seeds` one after another in one model (so the row count
    /// changes between runs) and compares each run with the references.
    func check(layer: String, opencvLayer: String?, settings: [String: Any], seeds: [UInt64], imInfo: [Float]) throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try (Self.inputs + "\n" + layer).write(to: net, atomically: true, encoding: .utf8)
            if let opencvLayer {
                try (Self.inputs + "\n" + opencvLayer).write(to: dir.appendingPathComponent("opencv.prototxt"), atomically: true, encoding: .utf8)
            }
            var options = settings
            options["opencv"] = opencvLayer != nil
            try JSONSerialization.data(withJSONObject: options).write(to: dir.appendingPathComponent("settings.json"))
            let model = try Model(prototxt: net.path)
            var counts: Set<Int> = []
            for seed in seeds {
                let given = Self.rpnOutputs(seed: seed, imInfo: imInfo)
                let outputs = try model.forward(given)
                let rois = try #require(outputs["rois"]), scores = try #require(outputs["scores"])
                #expect(rois.shape.count == 2 && rois.shape.last == 5 && scores.shape == [rois.shape[0], 1], "\(rois.shape) \(scores.shape)")
                counts.insert(rois.shape[0])
                try NumPyFile.write(archive: given.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: dir.appendingPathComponent("inputs.npz").path)
                try NumPyFile.write(archive: [("rois", rois), ("scores", scores)], to: dir.appendingPathComponent("ours.npz").path)
                let report = try ExportFixtures.pythonJSON(Self.script, [dir.path])
                #expect(report["rows"] as? Int == report["numpy_rows"] as? Int, "\(report)")
                #expect((report["numpy"] as? Double ?? 1) <= 1e-4, "\(report)")
                #expect(report["numpy_scores"] as? Double == 0, "\(report)")
                if opencvLayer != nil {
                    #expect(report["rows"] as? Int == report["opencv_rows"] as? Int, "\(report)")
                    #expect((report["opencv"] as? Double ?? 1) <= 1e-3, "\(report)")
                }
            }
            // The boxes that survive NMS vary with the values: the runs must not all have kept the same count.
            #expect(counts.count > 1, "row counts \(counts)")
        }
    }

    @Test("the native Proposal equals OpenCV DNN's and py-faster-rcnn's on random RPN outputs, as the kept count changes")
    func nativeAgainstOpenCV() throws {
        let native = #"layer { name: "proposal" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" top: "scores" proposal_param { feat_stride: 16 min_size: 0 pre_nms_topn: 200 post_nms_topn: 60 nms_thresh: 0.6 ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 } }"#
        // OpenCV reads one top and no min_size (it keeps every box): the same settings otherwise.
        let opencv = #"layer { name: "proposal" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" proposal_param { feat_stride: 16 pre_nms_topn: 200 post_nms_topn: 60 nms_thresh: 0.6 ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 } }"#
        let settings: [String: Any] = ["feat_stride": 16, "base_size": 16, "ratios": [0.5, 1, 2], "scales": [8, 16, 32],
                                       "pre": 200, "post": 60, "nms": 0.6, "min_size": 0]
        try check(layer: native, opencvLayer: opencv, settings: settings, seeds: [1, 2, 3], imInfo: [112, 144, 1])
    }

    @Test("py-faster-rcnn's Python proposal layer runs natively, with its TEST cfg and its minimum size scaled by im_info[2]")
    func pythonLayerAgainstNumPy() throws {
        let python = #"layer { name: "proposal" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" top: "scores" python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: "'feat_stride': 16" } }"#
        let settings: [String: Any] = ["feat_stride": 16, "base_size": 16, "ratios": [0.5, 1, 2], "scales": [8, 16, 32],
                                       "pre": 6000, "post": 300, "nms": 0.7, "min_size": 16]
        // Scale 1.6: boxes under 25.6 pixels go.
        try check(layer: python, opencvLayer: nil, settings: settings, seeds: [4, 5], imInfo: [112, 144, 1.6])
        // YAML variants: a braced dict, a tuple of scales.
        let tuple = #"layer { name: "proposal" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" top: "scores" python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: "{'feat_stride': 16, 'scales': !!python/tuple [4, 8, 16]}" } }"#
        var scaled = settings
        scaled["scales"] = [4, 8, 16]
        try check(layer: tuple, opencvLayer: nil, settings: scaled, seeds: [6, 7], imInfo: [112, 144, 1])
    }

    @Test("Proposal's checks: one image, 2A score channels, 4A delta channels, a param_str it reads")
    func refusals() throws {
        let cases: [(String, String)] = [
            (#"type: "Proposal" bottom: "cls2" bottom: "bbox" bottom: "im_info" top: "rois""#, "one image at a time"),
            (#"type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" proposal_param { scale: 8 }"#, "need 2 × 3 channels"),
            (#"type: "Proposal" bottom: "cls" bottom: "cls" bottom: "im_info" top: "rois""#, "must be 1×36×7×9"),
            (#"type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" proposal_param { feat_stride: 0 }"#, "feat_stride must be positive"),
            (#"type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: "'feat_stride': 16, 'num_classes': 21" }"#, "does not read 'num_classes'"),
            (#"type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: "'scales': [8]" }"#, "needs 'feat_stride'"),
            (#"type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois" python_param { module: 'roi_data_layer.layer' layer: 'RoIDataLayer' }"#, "not supported"),
        ]
        let extra = #"layer { name: "cls2" type: "Input" top: "cls2" input_param { shape { dim: 2 dim: 18 dim: 7 dim: 9 } } }"#
        for (fields, message) in cases {
            do {
                _ = try GraphBuilder().build(try CaffeFiles.parseNet(text: Self.inputs + "\n" + extra + "\n" + #"layer { name: "p" \#(fields) }"#))
                Issue.record("\(fields) must be refused")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }

    @Test("the anchors are py-faster-rcnn's generate_anchors()")
    func anchors() throws {
        var layer = Caffe_LayerParameter()
        layer.type = "Proposal"
        let anchors = try ProposalSettings(layer).anchors
        // py-faster-rcnn's generate_anchors.py lists these nine for its defaults.
        let expected: [Float] = [-84, -40, 99, 55, -176, -88, 191, 103, -360, -184, 375, 199,
                                 -56, -56, 71, 71, -120, -120, 135, 135, -248, -248, 263, 263,
                                 -36, -80, 51, 95, -80, -168, 95, 183, -168, -344, 183, 359]
        #expect(anchors == expected)
    }
}
