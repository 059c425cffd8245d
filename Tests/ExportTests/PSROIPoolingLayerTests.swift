import Foundation
import Testing
import SwiftJIT

/// R-FCN's PSROIPooling forward against a NumPy port of daijifeng001/caffe-rfcn's
/// `PSROIPoolingForward` (`psroi_pooling_layer.cu`; the fork has no CPU version and OpenCV DNN's
/// follows it), in float32, with the fork's rounding and bin arithmetic.
@Suite("R-FCN PSROIPooling")
struct PSROIPoolingLayerTests {
    static let script = """
        import json
        directory = sys.argv[1]
        given = dict(np.load(directory + '/inputs.npz')); ours = np.load(directory + '/ours.npz')['y']
        x, rois = given['x'], given['rois']
        scale, D, G = np.float32(0.5), 2, 3
        N, C, H, W = x.shape
        out = np.zeros((rois.shape[0], D, G, G), np.float32)
        def cround(v): return np.float32(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)))  # C round(): half away from zero
        for n in range(rois.shape[0]):
            r = rois[n]; b = int(r[0])
            sw = cround(r[1]) * scale; sh = cround(r[2]) * scale
            ew = np.float32(cround(r[3]) + 1) * scale; eh = np.float32(cround(r[4]) + 1) * scale
            rw = max(ew - sw, np.float32(0.1)); rh = max(eh - sh, np.float32(0.1))
            bh = rh / np.float32(G); bw = rw / np.float32(G)
            for d in range(D):
                for ph in range(G):
                    for pw in range(G):
                        hs = min(max(int(np.floor(np.float32(ph) * bh + sh)), 0), H); he = min(max(int(np.ceil(np.float32(ph + 1) * bh + sh)), 0), H)
                        ws = min(max(int(np.floor(np.float32(pw) * bw + sw)), 0), W); we = min(max(int(np.ceil(np.float32(pw + 1) * bw + sw)), 0), W)
                        if he <= hs or we <= ws: continue
                        c = (d * G + ph) * G + pw
                        s = np.float32(0)
                        for h in range(hs, he):
                            for w in range(ws, we): s = np.float32(s + x[b, c, h, w])
                        out[n, d, ph, pw] = s / np.float32((he - hs) * (we - ws))
        print(json.dumps({'shape': list(ours.shape), 'numpy': float(np.abs(out - ours).max()), 'nonzero': int((out != 0).sum())}))
        """

    @Test("PSROIPooling equals caffe-rfcn's forward (rounded corners, exclusive ends, clipped bins, empty bins 0)")
    func againstNumPy() throws {
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try """
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 18 dim: 7 dim: 8 } } }
                layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 5 dim: 5 } } }
                layer { name: "psroi" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "y"
                        psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }
                """.write(to: net, atomically: true, encoding: .utf8)
            var generator = SplitMix64(seed: 12)
            let x = NDArray(shape: [2, 18, 7, 8], data: (0..<(2 * 18 * 56)).map { _ in Float.random(in: -1..<1, using: &generator) })
            // Whole map, fractional corners (rounded half away from zero), past the edge, a sliver, image 1.
            let rois = NDArray(shape: [5, 5], data: [0, 0, 0, 15, 13,
                                                     1, 2.5, 3.49, 9.5, 8.6,
                                                     0, 10, 8, 40, 30,
                                                     1, 5, 5, 5, 5,
                                                     1, 30, 30, 35, 35])
            let y = try #require(try Model(prototxt: net.path).forward(["x": x, "rois": rois])["y"])
            #expect(y.shape == [5, 2, 3, 3])
            try NumPyFile.write(archive: [("rois", rois), ("x", x)], to: dir.appendingPathComponent("inputs.npz").path)
            try NumPyFile.write(archive: [("y", y)], to: dir.appendingPathComponent("ours.npz").path)
            let report = try ExportFixtures.pythonJSON(Self.script, [dir.path])
            #expect((report["numpy"] as? Double ?? 1) <= 1e-6, "\(report)")
            #expect((report["nonzero"] as? Int ?? 0) > 40, "\(report)")
        }
    }

    @Test("PSROIPooling's checks: all three fields, channels = output_dim × group_size²")
    func refusals() throws {
        let inputs = """
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 18 dim: 7 dim: 8 } } }
            layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 3 dim: 5 } } }
            """
        for (fields, message) in [("psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 }", "needs psroi_pooling_param"),
                                  ("psroi_pooling_param { spatial_scale: 0.5 output_dim: 3 group_size: 3 }", "need output_dim × group_size² = 3 × 9 = 27 channels"),
                                  ("psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 0 }", "group_size must be > 0")] {
            do {
                _ = try GraphBuilder().build(try CaffeFiles.parseNet(text: inputs + #"layer { name: "p" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "p" \#(fields) }"#))
                Issue.record("\(fields) must be refused")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }
}
