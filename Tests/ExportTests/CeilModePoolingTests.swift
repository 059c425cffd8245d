import Foundation
import Testing
import SwiftJIT

/// Pooling with the forks' `ceil_mode: false` (DenseNet, ResNeXt, DPN) and BVLC's
/// `round_mode: FLOOR`: `swiftjit run`'s outputs against OpenCV DNN (which reads `ceil_mode` from
/// the prototxt), against a NumPy port of Caffe's pooling with floor rounding, and against ONNX
/// Runtime on our ONNX export.
@Suite("pooling that rounds down: ceil_mode and round_mode")
struct CeilModePoolingTests {
    static let script = """
        import json
        import cv2
        directory = sys.argv[1]
        configs = json.load(open(directory + '/configs.json'))
        x = np.load(directory + '/input.npy')
        ours = np.load(directory + '/ours.npz')
        def caffe_pool(x, pool, k, s, p, ceil):
            N, C, H, W = x.shape
            def size(n):
                span = n + 2 * p - k
                out = (-(-span // s) if ceil else span // s) + 1
                if p > 0 and (out - 1) * s >= n + p:
                    out -= 1
                return out
            oh, ow = size(H), size(W)
            y = np.zeros((N, C, oh, ow), np.float64)
            for i in range(oh):
                for j in range(ow):
                    h0, w0 = i * s - p, j * s - p
                    h1, w1 = min(h0 + k, H + p), min(w0 + k, W + p)
                    area = (h1 - h0) * (w1 - w0)
                    window = x[:, :, max(h0, 0):min(h1, H), max(w0, 0):min(w1, W)].astype(np.float64)
                    y[:, :, i, j] = window.max(axis=(2, 3)) if pool == 'MAX' else window.sum(axis=(2, 3)) / area
            return y
        opencv = cv2.dnn.readNetFromCaffe(directory + '/opencv.prototxt')
        opencv.setInput(x, 'x')
        names = [c['output'] for c in configs if c['opencv']]
        cv_outputs = dict(zip(names, opencv.forward(names)))
        session = ort.InferenceSession(directory + '/pools.onnx', providers=['CPUExecutionProvider'])
        ort_outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {'x': x})))
        report = []
        for c in configs:
            name, y = c['output'], ours[c['output']]
            ref = caffe_pool(x, c['pool'], c['kernel'], c['stride'], c['pad'], False)
            entry = {'name': name, 'shape': list(y.shape), 'numpy_shape': list(ref.shape),
                     'numpy': float(np.abs(y - ref).max()) if y.shape == ref.shape else 1e9,
                     'onnx': float(np.abs(y - ort_outputs[name]).max()) if y.shape == ort_outputs[name].shape else 1e9}
            if c['opencv']:
                cv = cv_outputs[name]
                entry['opencv_shape'] = list(cv.shape)
                entry['opencv'] = float(np.abs(y - cv).max()) if y.shape == cv.shape else 1e9
            report.append(entry)
        print(json.dumps({'pools': report}))
        """

    @Test("ceil_mode: false agrees with OpenCV DNN, ONNX Runtime and NumPy; round_mode: FLOOR with ONNX Runtime and NumPy")
    func floorRounding() throws {
        var layers = [#"layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 12 } } }"#]
        var opencvLayers = layers
        var configs: [[String: Any]] = []
        for k in [2, 3] { for s in [1, 2, 3] { for p in [0, 1] where p < k { for pool in ["MAX", "AVE"] {
            for field in ["ceil_mode: false", "round_mode: FLOOR"] {
                let name = "\(pool.lowercased())_k\(k)_s\(s)_p\(p)_\(field.hasPrefix("ceil") ? "ceil_mode" : "round_mode")"
                let layer = #"layer { name: "\#(name)" type: "Pooling" bottom: "x" top: "\#(name)" pooling_param { pool: \#(pool) kernel_size: \#(k) stride: \#(s) pad: \#(p) \#(field) } }"#
                layers.append(layer)
                let opencv = field.hasPrefix("ceil")
                if opencv { opencvLayers.append(layer) }
                configs.append(["output": name, "pool": pool, "kernel": k, "stride": s, "pad": p, "opencv": opencv])
            }
        } } } }
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("pools.prototxt")
            try layers.joined(separator: "\n").write(to: net, atomically: true, encoding: .utf8)
            try opencvLayers.joined(separator: "\n").write(to: dir.appendingPathComponent("opencv.prototxt"), atomically: true, encoding: .utf8)
            var state: UInt64 = 17
            let x = NDArray(shape: [2, 3, 9, 12], data: (0..<648).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(state >> 40) / Float(1 << 24) * 4 - 2
            })
            let outputs = try Model(prototxt: net.path).forward(["x": x])
            try NumPyFile.write(x, to: dir.appendingPathComponent("input.npy").path)
            try NumPyFile.write(archive: outputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: dir.appendingPathComponent("ours.npz").path)
            try ONNXExporter().export(try ExportSource(netPath: net.path, weightsPath: nil)).write(to: dir.appendingPathComponent("pools.onnx").path)
            try JSONSerialization.data(withJSONObject: configs).write(to: dir.appendingPathComponent("configs.json"))
            let report = try ExportFixtures.pythonJSON(Self.script, [dir.path])
            let pools = report["pools"] as? [[String: Any]] ?? []
            #expect(pools.count == configs.count && configs.count == 48)
            // The grid includes windows that floor rounding drops: some outputs are smaller than ceil's.
            #expect(pools.contains { ($0["name"] as? String)?.hasPrefix("max_k2_s3_p0") == true && ($0["shape"] as? [Int]) == [2, 3, 3, 4] })
            for entry in pools {
                #expect(entry["shape"] as? [Int] == entry["numpy_shape"] as? [Int], "\(entry)")
                #expect((entry["numpy"] as? Double ?? 1) < 1e-6, "\(entry)")
                #expect((entry["onnx"] as? Double ?? 1) < 1e-6, "\(entry)")
                if entry["opencv_shape"] != nil {
                    #expect(entry["shape"] as? [Int] == entry["opencv_shape"] as? [Int], "\(entry)")
                    #expect((entry["opencv"] as? Double ?? 1) < 1e-5, "\(entry)")
                }
            }
        }
    }
}
