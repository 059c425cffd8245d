import Foundation
import Testing
import SwiftJIT

/// YOLOv2's Reorg (the passthrough layer, Intel Caffe's `reorg_param`) against OpenCV DNN, and its
/// `reverse` form against a NumPy port of darknet's `reorg_cpu` as the Caffe forks call it.
@Suite("YOLOv2 Reorg")
struct ReorgLayerTests {
    static let script = """
        import json
        import cv2
        directory = sys.argv[1]
        x = np.load(directory + '/input.npy')
        ours = np.load(directory + '/ours.npz')
        net = cv2.dnn.readNetFromCaffe(directory + '/opencv.prototxt')
        net.setInput(x, 'x')
        opencv = net.forward('reorg')
        def reorg(x, s, reverse):
            n, c, h, w = x.shape
            flat, out, g = x.reshape(-1), np.zeros(x.size, np.float32), c // (s * s)
            for b in range(n):
                for k in range(c):
                    for j in range(h):
                        for i in range(w):
                            p = i + w * (j + h * (k + c * b))
                            o = k // g
                            q = (i * s + o % s) + w * s * ((j * s + o // s) + h * s * (k % g + g * b))
                            if reverse:
                                out[q] = flat[p]
                            else:
                                out[p] = flat[q]
            return out
        print(json.dumps({
            'shape': list(ours['y'].shape), 'opencv_shape': list(opencv.shape),
            'opencv': float(np.abs(ours['y'] - opencv).max()) if ours['y'].shape == opencv.shape else 1e9,
            'numpy': float(np.abs(ours['y'].reshape(-1) - reorg(x, 2, False)).max()),
            'reverse_shape': list(ours['back'].shape),
            'reverse': float(np.abs(ours['back'].reshape(-1) - reorg(x, 2, True)).max())}))
        """

    @Test("Reorg stride 2 equals OpenCV DNN's (darknet's index shuffle, not space-to-depth); reverse equals darknet's inverse direction")
    func againstOpenCV() throws {
        let input = #"layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 dim: 6 dim: 4 } } }"#
        let reorg = #"layer { name: "reorg" type: "Reorg" bottom: "x" top: "y" reorg_param { stride: 2 } }"#
        let reverse = #"layer { name: "back" type: "Reorg" bottom: "x" top: "back" reorg_param { stride: 2 reverse: true } }"#
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try [input, reorg, reverse].joined(separator: "\n").write(to: net, atomically: true, encoding: .utf8)
            try [input, reorg].joined(separator: "\n").write(to: dir.appendingPathComponent("opencv.prototxt"), atomically: true, encoding: .utf8)
            var generator = SplitMix64(seed: 9)
            let x = NDArray(shape: [2, 8, 6, 4], data: (0..<384).map { _ in Float.random(in: -1..<1, using: &generator) })
            let outputs = try Model(prototxt: net.path).forward(["x": x])
            #expect(outputs["y"]?.shape == [2, 32, 3, 2])
            #expect(outputs["back"]?.shape == [2, 2, 12, 8])
            try NumPyFile.write(x, to: dir.appendingPathComponent("input.npy").path)
            try NumPyFile.write(archive: outputs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: dir.appendingPathComponent("ours.npz").path)
            let report = try ExportFixtures.pythonJSON(Self.script, [dir.path])
            #expect(report["shape"] as? [Int] == report["opencv_shape"] as? [Int], "\(report)")
            #expect(report["opencv"] as? Double == 0, "\(report)")
            #expect(report["numpy"] as? Double == 0, "\(report)")
            #expect(report["reverse"] as? Double == 0, "\(report)")
        }
        // Caffe's checks: the stride is required and must divide the map.
        for (fields, message) in [("", "needs reorg_param { stride }"), ("reorg_param { stride: 4 }", "must divide the height and width")] {
            do {
                _ = try GraphBuilder().build(try CaffeFiles.parseNet(text: input + "\n" + #"layer { name: "r" type: "Reorg" bottom: "x" top: "r" \#(fields) }"#))
                Issue.record("\(fields) must be refused")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }
}
