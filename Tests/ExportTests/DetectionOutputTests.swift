import Foundation
import Testing
import SwiftJIT

/// SSD's DetectionOutput (weiliu89/caffe `detection_output_layer.cpp`, `bbox_util.cpp`) on the same
/// random locations, confidences and priors as OpenCV DNN (which runs the layer) and as a NumPy
/// port of the fork's C++ (for what OpenCV does not cover: CORNER_SIZE, `eta`, Caffe's fake rows
/// when nothing is detected), in several configurations; and the row re-specialization the
/// data-dependent detection count needs (axis 2 of the `1×1×R×7` top).
@Suite("DetectionOutput against OpenCV DNN and the fork's C++")
struct DetectionOutputTests {
    static let priors = 60, classes = 4

    /// A net of three Input layers (batch `images`) and one DetectionOutput with `param`.
    static func net(_ param: String, images: Int = 2, shareLocation: Bool = true) -> String {
        let locClasses = shareLocation ? 1 : classes
        return """
            name: "detection"
            layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: \(images) dim: \(priors * locClasses * 4) } } }
            layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: \(images) dim: \(priors * classes) } } }
            layer { name: "prior" type: "Input" top: "prior" input_param { shape { dim: 1 dim: 2 dim: \(priors * 4) } } }
            layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det"
                    detection_output_param { num_classes: \(classes) share_location: \(shareLocation) \(param) } }
            """
    }

    /// Random inputs: location offsets around 0, scores in (0, 1), and valid prior boxes (centers in
    /// 0.2…0.8, sides 0.1…0.5, so neighbours overlap and NMS has work) with SSD's variances.
    static func inputs(images: Int = 2, shareLocation: Bool = true, seed: UInt64) -> [String: NDArray] {
        var generator = SplitMix64(seed: seed)
        func uniform(_ count: Int, _ low: Float, _ high: Float) -> [Float] {
            (0..<count).map { _ in Float.random(in: low..<high, using: &generator) }
        }
        let locClasses = shareLocation ? 1 : classes
        var boxes: [Float] = []
        for _ in 0..<priors {
            let center = uniform(2, 0.2, 0.8), side = uniform(2, 0.1, 0.5)
            boxes += [center[0] - side[0] / 2, center[1] - side[1] / 2, center[0] + side[0] / 2, center[1] + side[1] / 2]
        }
        let variances: [Float] = (0..<priors).flatMap { _ -> [Float] in [0.1, 0.1, 0.2, 0.2] }
        return ["loc": NDArray(shape: [images, priors * locClasses * 4], data: uniform(images * priors * locClasses * 4, -0.6, 0.6)),
                "conf": NDArray(shape: [images, priors * classes], data: uniform(images * priors * classes, 0, 1)),
                "prior": NDArray(shape: [1, 2, priors * 4], data: boxes + variances)]
    }

    /// Runs OpenCV (when `opencv`) and the NumPy port on the inputs in `dir`, and reports, for
    /// each, the row count it gives and the largest difference from ours after putting its rows
    /// in Caffe's order (image, then label, then descending score).
    static let script = """
        import json
        directory, use_opencv = sys.argv[1], sys.argv[2] == '1'
        p = json.load(open(directory + '/param.json'))
        ours = np.load(directory + '/ours.npy').reshape(-1, 7)
        loc, conf, prior = (np.load(directory + '/' + n + '.npy') for n in ('loc', 'conf', 'prior'))

        def caffe_order(rows):
            return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]

        def compare(rows):
            rows = caffe_order(rows.reshape(-1, 7))
            if rows.shape != ours.shape:
                return {'rows': int(rows.shape[0]), 'ours': int(ours.shape[0]), 'error': 1e9}
            return {'rows': int(rows.shape[0]), 'ours': int(ours.shape[0]), 'error': float(np.abs(rows - ours).max())}

        f32 = np.float32
        def decode(pb, var, d):
            # DecodeBBox: float arithmetic, halving through double as the C++ '/ 2.' does.
            pw, ph = f32(pb[2] - pb[0]), f32(pb[3] - pb[1])
            v = [f32(1)] * 4 if p['variance_in_target'] else var
            code = p['code_type']
            if code == 'CORNER':
                return [f32(pb[k] + f32(v[k] * d[k])) for k in range(4)]
            if code == 'CORNER_SIZE':
                return [f32(pb[0] + f32(f32(v[0] * d[0]) * pw)), f32(pb[1] + f32(f32(v[1] * d[1]) * ph)),
                        f32(pb[2] + f32(f32(v[2] * d[2]) * pw)), f32(pb[3] + f32(f32(v[3] * d[3]) * ph))]
            cx, cy = f32((float(pb[0]) + float(pb[2])) / 2), f32((float(pb[1]) + float(pb[3])) / 2)
            bx = f32(f32(f32(v[0] * d[0]) * pw) + cx); by = f32(f32(f32(v[1] * d[1]) * ph) + cy)
            bw = f32(np.exp(f32(v[2] * d[2])) * pw); bh = f32(np.exp(f32(v[3] * d[3])) * ph)
            return [f32(float(bx) - float(bw) / 2), f32(float(by) - float(bh) / 2), f32(float(bx) + float(bw) / 2), f32(float(by) + float(bh) / 2)]

        def size(b):
            return f32(0) if b[2] < b[0] or b[3] < b[1] else f32(f32(b[2] - b[0]) * f32(b[3] - b[1]))

        def jaccard(a, b):
            if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
                return f32(0)
            w = f32(min(a[2], b[2]) - max(a[0], b[0])); h = f32(min(a[3], b[3]) - max(a[1], b[1]))
            if not (w > 0 and h > 0):
                return f32(0)
            inter = f32(w * h)
            return f32(inter / f32(f32(size(a) + size(b)) - inter))

        def nms(boxes, scores):
            # ApplyNMSFast: threshold, stable descending sort, top_k, greedy suppression, adaptive eta.
            order = [i for i in range(len(scores)) if scores[i] > p['threshold']]
            order = sorted(order, key=lambda i: -scores[i])
            if p['top_k'] > -1:
                order = order[:p['top_k']]
            kept, adaptive = [], f32(p['nms_threshold'])
            for i in order:
                if all(jaccard(boxes[i], boxes[k]) <= adaptive for k in kept):
                    kept.append(i)
                    if p['eta'] < 1 and adaptive > 0.5:
                        adaptive = f32(adaptive * f32(p['eta']))
            return kept

        def reference():
            n, C, P = loc.shape[0], p['classes'], prior.shape[2] // 4
            L = 1 if p['share'] else C
            pb, pv = prior[0, 0].reshape(P, 4), prior[0, 1].reshape(P, 4)
            rows = []
            for i in range(n):
                l = loc[i].reshape(P, L, 4); s = conf[i].reshape(P, C)
                boxes = {}
                for c in range(L):
                    label = -1 if p['share'] else c
                    if not p['share'] and label == p['background']:
                        continue
                    boxes[label] = [decode(pb[j], pv[j], l[j, c]) for j in range(P)]
                indices = {}
                for c in range(C):
                    if c != p['background']:
                        indices[c] = nms(boxes[-1 if p['share'] else c], s[:, c])
                total = sum(len(v) for v in indices.values())
                if p['keep_top_k'] > -1 and total > p['keep_top_k']:
                    pairs = sorted([(s[j, c], c, j) for c in sorted(indices) for j in indices[c]], key=lambda t: -t[0])[:p['keep_top_k']]
                    indices = {c: [j for (_, cc, j) in pairs if cc == c] for c in sorted(indices)}
                for c in sorted(indices):
                    for j in indices[c]:
                        rows.append([i, c, s[j, c]] + list(boxes[-1 if p['share'] else c][j]))
            if not rows:
                rows = [[i] + [-1] * 6 for i in range(n)]
            return np.array(rows, dtype=np.float32)

        report = {'numpy': compare(reference())}
        if use_opencv:
            import cv2
            net = cv2.dnn.readNetFromCaffe(directory + '/net.prototxt')
            # OpenCV takes the priors without their variances when they are encoded in the target.
            for name, value in (('loc', loc), ('conf', conf), ('prior', prior[:, :1] if p['variance_in_target'] else prior)):
                net.setInput(value, name)
            rows = net.forward('det').reshape(-1, 7)
            # OpenCV pads its output to keep_top_k rows per image with all-zero rows.
            report['opencv'] = compare(rows[np.abs(rows).sum(axis=1) != 0])
        print(json.dumps(report))
        """

    struct Configuration {
        var name: String
        var param: String
        var shareLocation = true
        var codeType = "CORNER"
        var varianceInTarget = false
        var background = 0
        var threshold: Float = -Float.greatestFiniteMagnitude
        var nmsThreshold: Float = 0.3
        var topK = -1
        var eta: Float = 1
        var keepTopK = -1
        /// Whether OpenCV DNN implements everything the configuration uses.
        var opencv = true
    }

    static let configurations: [Configuration] = [
        Configuration(name: "SSD's: shared locations, CENTER_SIZE, top_k, keep_top_k, threshold",
                      param: "background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 20 } code_type: CENTER_SIZE keep_top_k: 12 confidence_threshold: 0.3",
                      codeType: "CENTER_SIZE", threshold: 0.3, nmsThreshold: 0.45, topK: 20, keepTopK: 12),
        // keep_top_k above any count: OpenCV needs the field and crashes on -1 (Caffe's "keep all").
        Configuration(name: "per-class locations, CORNER, keep_top_k above the count",
                      param: "background_label_id: 0 nms_param { nms_threshold: 0.3 } code_type: CORNER keep_top_k: 5000 confidence_threshold: 0.5",
                      shareLocation: false, threshold: 0.5, keepTopK: 5000),
        Configuration(name: "variance encoded in target, background 2, keep_top_k above the count",
                      param: "background_label_id: 2 nms_param { nms_threshold: 0.5 top_k: 30 } code_type: CENTER_SIZE variance_encoded_in_target: true keep_top_k: 500 confidence_threshold: 0.4",
                      codeType: "CENTER_SIZE", varianceInTarget: true, background: 2, threshold: 0.4, nmsThreshold: 0.5, topK: 30, keepTopK: 500),
        Configuration(name: "per-class CENTER_SIZE with keep_top_k",
                      param: "background_label_id: 1 nms_param { nms_threshold: 0.4 } code_type: CENTER_SIZE keep_top_k: 7 confidence_threshold: 0.2",
                      shareLocation: false, codeType: "CENTER_SIZE", background: 1, threshold: 0.2, nmsThreshold: 0.4, keepTopK: 7),
        Configuration(name: "CORNER_SIZE, adaptive NMS (eta), no threshold",
                      param: "background_label_id: 0 nms_param { nms_threshold: 0.8 eta: 0.7 top_k: 25 } code_type: CORNER_SIZE",
                      codeType: "CORNER_SIZE", nmsThreshold: 0.8, topK: 25, eta: 0.7, opencv: false),
        Configuration(name: "nothing above the threshold: Caffe's one fake row per image",
                      param: "background_label_id: 0 nms_param { nms_threshold: 0.45 } code_type: CENTER_SIZE keep_top_k: 10 confidence_threshold: 1.5",
                      codeType: "CENTER_SIZE", threshold: 1.5, nmsThreshold: 0.45, keepTopK: 10, opencv: false),
    ]

    @Test("rows equal OpenCV DNN's and the fork's (NumPy port) at 1e-5 in every configuration", arguments: configurations.indices)
    func againstReferences(_ index: Int) throws {
        let configuration = Self.configurations[index]
        try ExportFixtures.withTempDir { dir in
            let prototxt = dir.appendingPathComponent("net.prototxt")
            try Self.net(configuration.param, shareLocation: configuration.shareLocation).write(to: prototxt, atomically: true, encoding: .utf8)
            let inputs = Self.inputs(shareLocation: configuration.shareLocation, seed: UInt64(11 + index))
            let model = try Model(prototxt: prototxt.path)
            let det = try #require(try model.forward(inputs)["det"])
            #expect(det.shape.count == 4 && det.shape[0] == 1 && det.shape[1] == 1 && det.shape[3] == 7, "\(det.shape)")
            for (name, array) in inputs { try NumPyFile.write(array, to: dir.appendingPathComponent("\(name).npy").path) }
            try NumPyFile.write(det, to: dir.appendingPathComponent("ours.npy").path)
            let param: [String: Any] = [
                "classes": Self.classes, "share": configuration.shareLocation, "code_type": configuration.codeType,
                "variance_in_target": configuration.varianceInTarget, "background": configuration.background,
                "threshold": Double(max(configuration.threshold, -3e38)), "nms_threshold": Double(configuration.nmsThreshold),
                "top_k": configuration.topK, "eta": Double(configuration.eta), "keep_top_k": configuration.keepTopK,
            ]
            try JSONSerialization.data(withJSONObject: param).write(to: dir.appendingPathComponent("param.json"))
            let report = try ExportFixtures.pythonJSON(Self.script, [dir.path, configuration.opencv ? "1" : "0"])
            #expect(report.count == (configuration.opencv ? 2 : 1))
            for (peer, entry) in report {
                let values = entry as? [String: Any] ?? [:]
                #expect((values["error"] as? Double ?? 1) < 1e-5, "\(configuration.name), \(peer): \(values)")
            }
            if configuration.threshold > 1 {
                #expect(det.shape == [1, 1, 2, 7] && det.data == [0, -1, -1, -1, -1, -1, -1, 1, -1, -1, -1, -1, -1, -1])
            } else {
                #expect(det.shape[2] > 2, "\(configuration.name): a configuration meant to detect found \(det.shape[2]) rows")
            }
        }
    }

    @Test("the row count follows the data: each run re-specializes for its count, counts seen before reuse their variant")
    func rowsFollowTheData() throws {
        try ExportFixtures.withTempDir { dir in
            let prototxt = dir.appendingPathComponent("net.prototxt")
            let param = "background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 20 } code_type: CENTER_SIZE keep_top_k: 50 confidence_threshold: 0.5"
            try Self.net(param).write(to: prototxt, atomically: true, encoding: .utf8)
            let model = try Model(prototxt: prototxt.path)
            let first = Self.inputs(seed: 5)
            var sparse = first
            // Scores below the threshold except a few: fewer detections than `first` gives.
            sparse["conf"] = NDArray(shape: first["conf"]!.shape, data: first["conf"]!.data.enumerated().map { $0.offset % 37 == 1 ? 0.9 : 0.1 })
            var counts: [Int] = []
            for inputs in [first, sparse, first, sparse] {
                let det = try #require(try model.forward(inputs)["det"])
                #expect(det.shape.count == 4 && det.data.count == det.shape.reduce(1, *))
                counts.append(det.shape[2])
            }
            #expect(counts[0] == counts[2] && counts[1] == counts[3] && counts[0] != counts[1], "\(counts)")
            #expect(counts[1] < counts[0] && counts[1] > 0, "\(counts)")
        }
    }

    @Test("swiftjit run prints and saves exactly the kept rows (1×1×R×7), as Model returns them")
    func runCommand() throws {
        try ExportFixtures.withTempDir { dir in
            let prototxt = dir.appendingPathComponent("net.prototxt")
            let param = "background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 20 } code_type: CENTER_SIZE keep_top_k: 9 confidence_threshold: 0.3"
            try Self.net(param).write(to: prototxt, atomically: true, encoding: .utf8)
            let inputs = Self.inputs(seed: 17)
            let expected = try #require(try Model(prototxt: prototxt.path).forward(inputs)["det"])
            let archive = dir.appendingPathComponent("inputs.npz"), saved = dir.appendingPathComponent("out.npz")
            try NumPyFile.write(archive: inputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: archive.path)
            let run = try ExportFixtures.swiftjit(["run", prototxt.path, "--input", archive.path, "--output", saved.path])
            #expect(run.status == 0, "\(run.err)")
            #expect(expected.shape == [1, 1, 18, 7], "two images, keep_top_k 9 each: \(expected.shape)")
            #expect(run.out.contains("det  1×1×18×7"), "\(run.out)")
            let first = String(format: "  image 0  label %d  score %.4f", Int(expected.data[1]), expected.data[2])
            #expect(run.out.contains(first) && run.out.split(separator: "\n").filter { $0.hasPrefix("  image ") }.count == 18, "\(run.out)")
            let written = try NumPyFile.readArchive(path: saved.path)
            #expect(written["det"]?.shape == expected.shape && written["det"]?.data == expected.data)
        }
    }

    @Test("Caffe's checks on nms_param: a negative threshold and eta outside (0, 1] are diagnosed")
    func parameterChecks() throws {
        for (param, message) in [("nms_param { nms_threshold: -0.1 }", "nms_threshold } must be non-negative"),
                                 ("nms_param { eta: 1.5 }", "eta } must be in (0, 1]")] {
            do {
                _ = try GraphBuilder(phase: .test).build(try CaffeFiles.parseNet(text: Self.net(param)))
                Issue.record("\(param) should be refused")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }
}
