import Foundation
import Testing
import SwiftJIT

/// The detection heads ONNX has no operator for — Proposal (also in its py-faster-rcnn Python
/// form), Region, PSROIPooling — refuse export with the layer's name and location, and `draw`
/// shows each with its settings.
@Suite("Proposal, Region and PSROIPooling in export and draw")
struct RCNNLayerExportTests {
    static let nets: [(String, String, String)] = [
        ("""
         layer { name: "cls" type: "Input" top: "cls" input_param { shape { dim: 1 dim: 18 dim: 4 dim: 5 } } }
         layer { name: "bbox" type: "Input" top: "bbox" input_param { shape { dim: 1 dim: 36 dim: 4 dim: 5 } } }
         layer { name: "im_info" type: "Input" top: "im_info" input_param { shape { dim: 1 dim: 3 } } }
         layer { name: "proposal" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" top: "rois"
                 python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' param_str: "'feat_stride': 16" } }
         """, "layer 'proposal': cannot export this Proposal layer to ONNX: ONNX has no operator for Faster R-CNN's proposals",
         "proposal (Proposal)\\nstride 16, 9 anchors, NMS 0.7 → ≤300\\nrois: 180×5"),
        ("""
         layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 50 dim: 3 dim: 3 } } }
         layer { name: "region" type: "Region" bottom: "x" top: "y"
                 region_param { classes: 5 boxes_of_each_grid: 5 softmax: true anchors: 1 anchors: 1 anchors: 2 anchors: 2 anchors: 3 anchors: 3 anchors: 4 anchors: 4 anchors: 5 anchors: 5 } }
         """, "layer 'region': cannot export this Region layer to ONNX: ONNX has no operator for YOLOv2's region decoding",
         "region (Region)\\n5 boxes × 5 classes, softmax, NMS 0.4\\ny: 45×10"),
        ("""
         layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 dim: 6 dim: 6 } } }
         layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 3 dim: 5 } } }
         layer { name: "psroi" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "y" psroi_pooling_param { spatial_scale: 0.25 output_dim: 2 group_size: 2 } }
         """, "layer 'psroi': cannot export this PSROIPooling layer to ONNX: ONNX has no position-sensitive ROI pooling",
         "psroi (PSROIPooling)\\n2 out, 2×2 bins, scale 0.25\\ny: 3×2×2×2"),
    ]

    @Test("ONNX export refuses the layer by name; draw labels it with its settings and top shapes", arguments: nets.indices)
    func exportAndDraw(_ index: Int) throws {
        let (text, message, label) = Self.nets[index]
        try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try text.write(to: net, atomically: true, encoding: .utf8)
            #expect {
                _ = try ONNXExporter().export(try ExportSource(netPath: net.path, weightsPath: nil))
            } throws: { error in
                (error as? Diagnostic)?.headline.contains(message) == true && (error as? Diagnostic)?.location != nil
            }
            let dot = NetDrawing(graph: try GraphBuilder().build(try CaffeFiles.loadNet(path: net.path))).dot()
            #expect(dot.contains(label), "\(dot)")
        }
    }
}
