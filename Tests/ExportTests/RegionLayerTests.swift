import Foundation
import Testing
import SwiftJIT

/// YOLOv2's Region layer against OpenCV DNN's (which reads it from darknet's `[region]`): OpenCV
/// runs a darknet net — a 1×1 convolution into `[region]` — and hands back the convolution's
/// output and the region's; our Caffe `Region` layer gets that convolution output as its input.
@Suite("YOLOv2 Region")
struct RegionLayerTests {
    /// `directory thresh`: writes a darknet cfg and weights from a seeded generator, runs them
    /// in OpenCV DNN and saves the region's input (conv.npy) and output (region.npy).
    static let opencv = """
        import json, struct
        import cv2
        directory, thresh = sys.argv[1], sys.argv[2]
        H = W = 6; num = 5; classes = 20; cell = 25
        cfg = '[net]\\nwidth=%d\\nheight=%d\\nchannels=3\\n\\n[convolutional]\\nfilters=%d\\nsize=1\\nstride=1\\npad=0\\nactivation=linear\\n\\n' % (W, H, num * cell)
        cfg += '[region]\\nanchors = 1.08,1.19,  3.42,4.41,  6.63,11.38,  9.42,5.11,  16.62,10.52\\nbias_match=1\\nclasses=%d\\ncoords=4\\nnum=%d\\nsoftmax=1\\nthresh=%s\\n' % (classes, num, thresh)
        open(directory + '/yolo.cfg', 'w').write(cfg)
        rng = np.random.RandomState(3)
        bias = rng.randn(num * cell).astype(np.float32); weights = (rng.randn(num * cell, 3) * 1.5).astype(np.float32)
        with open(directory + '/yolo.weights', 'wb') as f:
            f.write(struct.pack('<iiiq', 0, 2, 0, 0)); f.write(bias.tobytes()); f.write(weights.tobytes())
        net = cv2.dnn.readNetFromDarknet(directory + '/yolo.cfg', directory + '/yolo.weights')
        net.setInput(rng.rand(1, 3, H, W).astype(np.float32))
        conv, region = net.forward([net.getLayerNames()[0], net.getUnconnectedOutLayersNames()[0]])
        np.save(directory + '/conv.npy', conv); np.save(directory + '/region.npy', region)
        print(json.dumps({'conv': list(conv.shape), 'region': list(region.shape), 'kept': int((region[:, 5:] > 0).sum())}))
        """

    /// OpenCV's darknet reader always sets nms_threshold 0.4 (it reads no NMS setting from the cfg).
    @Test("Region equals OpenCV DNN's darknet region (box decoding, softmax, score threshold, per-class NMS at 0.4)",
          arguments: [0.1, 0.03])
    func againstOpenCV(thresh: Double) throws {
        let nms = 0.4
        try ExportFixtures.withTempDir { dir in
            let report = try ExportFixtures.pythonJSON(Self.opencv, [dir.path, "\(thresh)"])
            #expect(report["conv"] as? [Int] == [1, 125, 6, 6], "\(report)")
            #expect((report["kept"] as? Int ?? 0) > 0, "the thresholds must keep some scores: \(report)")
            let anchors = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52].map { "anchors: \($0)" }.joined(separator: " ")
            let net = dir.appendingPathComponent("net.prototxt")
            try """
                layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 125 dim: 6 dim: 6 } } }
                layer { name: "region" type: "Region" bottom: "x" top: "y"
                        region_param { classes: 20 coords: 4 boxes_of_each_grid: 5 softmax: true \(anchors) thresh: \(thresh) nms_threshold: \(nms) } }
                """.write(to: net, atomically: true, encoding: .utf8)
            let conv = try NumPyFile.readArray(path: dir.appendingPathComponent("conv.npy").path)
            let expected = try NumPyFile.readArray(path: dir.appendingPathComponent("region.npy").path)
            let y = try #require(try Model(prototxt: net.path).forward(["x": conv])["y"])
            #expect(y.shape == expected.shape)
            let difference = zip(y.data, expected.data).map { abs($0 - $1) }.max() ?? .infinity
            #expect(difference <= 1e-5, "max |ours − OpenCV| = \(difference)")
        }
    }

    @Test("Region's checks: 4 coordinates, a width and height per box, channels = boxes × (5 + classes)")
    func refusals() throws {
        let input = #"layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 125 dim: 6 dim: 6 } } }"#
        let anchors = (0..<10).map { _ in "anchors: 1" }.joined(separator: " ")
        for (fields, message) in [("region_param { coords: 4 classes: 20 }", "needs a width and a height per box"),
                                  ("region_param { coords: 5 \(anchors) }", "4 box coordinates"),
                                  ("region_param { classes: 19 \(anchors) }", "needs 5 × 24 = 120 channels")] {
            do {
                _ = try GraphBuilder().build(try CaffeFiles.parseNet(text: input + "\n" + #"layer { name: "r" type: "Region" bottom: "x" top: "r" \#(fields) }"#))
                Issue.record("\(fields) must be refused")
            } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }
}
