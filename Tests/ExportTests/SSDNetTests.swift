import Foundation
import Testing
import SwiftJIT

/// Whole SSD nets as published (Tests/peers/nets, sources in SOURCE.txt): SSD300 VGG16
/// (weiliu89/caffe) and MobileNet-SSD (chuanqi305), run by `Model` and by OpenCV DNN on the same
/// seeded random weights and input. The heads (`mbox_loc`, `mbox_conf_flatten`, `mbox_priorbox`)
/// must agree to 1e-3 of their magnitude and `detection_out` row for row (in Caffe's order) to
/// 1e-3; OpenCV's DetectionOutput is also run alone on *our* heads, where its rows must equal ours
/// to 1e-5 (the layer itself, without the convolutions' rounding in front of it).
@Suite("SSD300 and MobileNet-SSD against OpenCV DNN")
struct SSDNetTests {
    static let nets = ExportFixtures.packageRoot.appendingPathComponent("Tests/peers/nets")

    static let script = """
        import json, re
        import cv2
        directory, prototxt = sys.argv[1], sys.argv[2]
        ours = np.load(directory + '/ours.npz')
        x = np.load(directory + '/input.npy')
        net = cv2.dnn.readNetFromCaffe(prototxt, directory + '/weights.caffemodel')
        net.setInput(x, 'data')
        names = ['mbox_loc', 'mbox_conf_flatten', 'mbox_priorbox', 'detection_out']
        report = {}

        def caffe_order(rows):
            rows = rows.reshape(-1, 7)
            return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]

        def rows_error(theirs, mine):
            # OpenCV pads its output with all-zero rows (to keep_top_k per image) and writes no row
            # when nothing is detected; Caffe writes one [i, -1, ...] row per image then.
            theirs, mine = theirs.reshape(-1, 7), mine.reshape(-1, 7)
            theirs, mine = caffe_order(theirs[np.abs(theirs).sum(axis=1) != 0]), caffe_order(mine[mine[:, 1] != -1])
            if theirs.shape != mine.shape:
                return {'rows': int(theirs.shape[0]), 'ours': int(mine.shape[0]), 'error': 1e9}
            return {'rows': int(theirs.shape[0]), 'ours': int(mine.shape[0]), 'error': float(np.abs(theirs - mine).max(initial=0))}

        for name, value in zip(names, net.forward(names)):
            mine = ours[name]
            if name == 'detection_out':
                report[name] = rows_error(value, mine)
            else:
                same = value.size == mine.size
                report[name] = {'error': float(np.abs(value.reshape(mine.shape) - mine).max() / max(1e-12, np.abs(value).max())) if same else 1e9}
        # OpenCV's DetectionOutput alone, on our heads.
        text = open(prototxt).read()
        layer = text[text.rindex('layer {', 0, text.index('type: "DetectionOutput"')):]
        heads = ''.join('layer {{ name: "{0}" type: "Input" top: "{0}" input_param {{ shape {{ {1} }} }} }}\\n'.format(
            n, ' '.join('dim: %d' % d for d in ours[n].shape)) for n in names[:3])
        open(directory + '/alone.prototxt', 'w').write('name: "alone"\\n' + heads + layer)
        alone = cv2.dnn.readNetFromCaffe(directory + '/alone.prototxt')
        for n in names[:3]:
            alone.setInput(ours[n], n)
        report['detection_out (OpenCV layer on our heads)'] = rows_error(alone.forward('detection_out'), ours['detection_out'])
        print(json.dumps(report))
        """

    /// The nets, and the DetectionOutput confidence threshold to use instead of the published one
    /// (nil: as published). MobileNet-SSD's 0.25 keeps nothing of random weights' near-uniform
    /// scores, which checks Caffe's no-detection rows; at 0.02 it keeps a hundred rows.
    static let cases: [(String, String?)] = [("ssd300_vgg16_voc0712_deploy.prototxt", nil), ("mobilenet_ssd_deploy.prototxt", nil),
                                             ("mobilenet_ssd_deploy.prototxt", "0.02")]

    @Test("SSD300 VGG16 and MobileNet-SSD deploy nets match OpenCV DNN", arguments: cases)
    func againstOpenCV(_ file: String, threshold: String?) throws {
        try ExportFixtures.withTempDir { dir in
            var prototxt = Self.nets.appendingPathComponent(file)
            if let threshold {
                let text = try String(contentsOf: prototxt, encoding: .utf8)
                    .replacingOccurrences(of: "confidence_threshold: 0.25", with: "confidence_threshold: \(threshold)")
                prototxt = dir.appendingPathComponent(file)
                try text.write(to: prototxt, atomically: true, encoding: .utf8)
            }
            let weights = dir.appendingPathComponent("weights.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: prototxt, seed: 21), to: weights.path)
            var generator = SplitMix64(seed: 4)
            let x = NDArray(shape: [1, 3, 300, 300], data: (0..<(3 * 300 * 300)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let model = try Model(prototxt: prototxt.path, weights: weights.path)
            let names = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox", "detection_out"]
            let outputs = try model.forward(["data": x], blobs: .named(names))
            let detections = try #require(outputs["detection_out"])
            #expect(detections.shape.count == 4 && detections.shape[3] == 7 && detections.shape[2] >= 1)
            if file.hasPrefix("mobilenet") {
                // As published nothing passes the threshold: Caffe's one fake row. Lowered: real rows.
                #expect(threshold == nil ? detections.data == [0, -1, -1, -1, -1, -1, -1] : detections.shape[2] > 10, "\(detections.shape)")
            }
            try NumPyFile.write(x, to: dir.appendingPathComponent("input.npy").path)
            try NumPyFile.write(archive: outputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: dir.appendingPathComponent("ours.npz").path)
            let report = try ExportFixtures.pythonJSON(Self.script, [dir.path, prototxt.path])
            #expect(report.count == 5)
            for (name, entry) in report {
                let values = entry as? [String: Any] ?? [:]
                let tolerance = name.contains("alone") || name.contains("our heads") ? 1e-5 : 1e-3
                #expect((values["error"] as? Double ?? 1) < tolerance, "\(file), \(name): \(values)")
            }
        }
    }

    @Test("SSD's heads export to ONNX (Permute → Transpose, Flatten(axis), PriorBox → constant, Normalize) and ONNX Runtime equals Model on every blob; DetectionOutput is refused by name")
    func onnxExport() throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try (SSDLayerTests.net + "\n" + SSDLayerTests.numpyOnly).write(to: net, atomically: true, encoding: .utf8)
            let weights = dir.appendingPathComponent("weights.caffemodel")
            try CaffeFiles.write(try ExportFixtures.randomWeights(for: net, seed: 7), to: weights.path)
            var generator = SplitMix64(seed: 3)
            let x = NDArray(shape: [2, 3, 60, 80], data: (0..<(2 * 3 * 60 * 80)).map { _ in Float.random(in: -1..<1, using: &generator) })
            let outputs = try Model(prototxt: net.path, weights: weights.path).forward(["data": x], blobs: .all)
            let inputs = dir.appendingPathComponent("inputs.npz"), blobs = dir.appendingPathComponent("blobs.npz")
            try NumPyFile.write(archive: [("data", x)], to: inputs.path)
            try NumPyFile.write(archive: outputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: blobs.path)
            let (report, _) = try ONNXExportTests.exportAndRun(net: net, weights: weights, inputs: inputs.path, expected: blobs.path)
            let compared = ONNXExportTests.blobs(report)
            #expect(Set(compared.map(\.name)).isSuperset(of: ["perm", "flat", "prior", "prior_step", "norm", "norm_across", "norm_shared", "perm2"]),
                    "\(compared.map(\.name)); missing \(report["missing"] ?? "")")
            for blob in compared { #expect(blob.rel <= 1e-5, "\(blob.name): ONNX Runtime and Model differ by \(blob.rel) of its max") }

            let detection = dir.appendingPathComponent("detection.prototxt")
            try DetectionOutputTests.net("nms_param { nms_threshold: 0.45 } keep_top_k: 10").write(to: detection, atomically: true, encoding: .utf8)
            #expect {
                _ = try ONNXExporter().export(try ExportSource(netPath: detection.path, weightsPath: nil))
            } throws: { error in
                let text = "\(error)"
                return text.contains("layer 'det'") && text.contains("DetectionOutput") && text.contains("NMS")
            }
        }
    }
}
