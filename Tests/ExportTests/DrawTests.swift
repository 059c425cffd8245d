import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import SwiftJIT

/// `swiftjit draw`: boxes per layer, folded in-place layers, hidden splits, rendered by Graphviz.
@Suite("drawing nets", .serialized)
struct DrawTests {
    /// Counts `<g class="node">` groups and collects every `<text>` line of an SVG document.
    final class SVGReader: NSObject, XMLParserDelegate {
        var nodes = 0
        var texts: [String] = []
        private var inText = false
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String]) {
            if name == "g", attributes["class"] == "node" { nodes += 1 }
            if name == "text" { inText = true; texts.append("") }
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) {
            if inText { texts[texts.count - 1] += string }
        }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            if name == "text" { inText = false }
        }
    }

    @Test("GoogLeNet and ResNet-50 render to SVG with one box per visible layer, splits hidden and in-place layers folded",
          arguments: [("bvlc_googlenet/deploy.prototxt", 85, "inception_3a/1x1 (Convolution)"),
                      ("resnet/ResNet-50-deploy.prototxt", 74, "res2a_branch2b (Convolution)")])
    func zoo(path: String, boxes: Int, sample: String) throws {
        let net = try ExportFixtures.require(ExportFixtures.zoo.appendingPathComponent(path))
        let graph = try GraphBuilder(insertsSplits: false).build(try CaffeFiles.loadNet(path: net.path))
        let inPlace = graph.nodes.filter { $0.outputs.count == 1 && graph.values[$0.outputs[0]].isInPlace }.count
        #expect(graph.nodes.count - inPlace == boxes)
        try ExportFixtures.withTempDir { dir in
            let svg = dir.appendingPathComponent("net.svg")
            let result = try ExportFixtures.swiftjit(["draw", net.path, "--output", svg.path])
            #expect(result.status == 0, "\(result.err)")
            #expect(result.out == "wrote \(svg.path) (\(boxes) boxes, \(inPlace) in-place layers folded into them)\n")
            let parser = try #require(XMLParser(contentsOf: svg))
            let reader = SVGReader()
            parser.delegate = reader
            #expect(parser.parse(), "the SVG is not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "")")
            #expect(reader.nodes == boxes)
            #expect(reader.texts.contains(sample))
            #expect(reader.texts.contains("+ ReLU \(path.contains("resnet") ? "res2a_branch2b_relu" : "inception_3a/relu_1x1")"))
            #expect(!reader.texts.contains { $0.contains("(Split)") || $0.contains("(ReLU)") })
        }
    }

    @Test("DOT text: a box per layer with type, attributes and top shape; edges carry blob names")
    func lenetDOT() throws {
        let graph = try GraphBuilder(insertsSplits: false).build(try CaffeFiles.loadNet(path: ExportFixtures.packageRoot.appendingPathComponent("Examples/lenet/lenet.prototxt").path))
        let dot = NetDrawing(graph: graph).dot()
        #expect(dot.contains(##"b1 [fillcolor="#cfe2f3", label="conv1 (Convolution)\n20 out, kernel 5×5\n64×20×24×24"];"##))
        #expect(dot.contains(##"b5 [fillcolor="#fce5cd", label="ip1 (InnerProduct)\n500 out\n64×500\n+ ReLU relu1"];"##))
        #expect(dot.contains(##"b4 -> b5 [label=" pool2 "];"##))
        #expect(dot.contains(##"b5 -> b6 [label=" ip1 "];"##))
        #expect(dot.components(separatedBy: " -> ").count - 1 == 7)
    }

    @Test("without Graphviz, SVG output fails with what to install and writes nothing; .dot still works")
    func missingGraphviz() throws {
        let graph = try GraphBuilder(insertsSplits: false).build(try CaffeFiles.loadNet(path: ExportFixtures.packageRoot.appendingPathComponent("Examples/lenet/lenet.prototxt").path))
        try ExportFixtures.withTempDir { dir in
            let svg = dir.appendingPathComponent("net.svg").path
            #expect {
                try GraphvizRenderer.write(NetDrawing(graph: graph).dot(), to: svg, environment: ["PATH": dir.path])
            } throws: { error in
                (error as? Diagnostic)?.description == """
                    Graphviz's 'dot' program is not on PATH, so the net cannot be rendered as SVG
                      hint: install Graphviz (Debian: apt-get install graphviz, or run tools/install-deps.sh), or write --output net.dot and render it elsewhere
                    """
            }
            #expect(!FileManager.default.fileExists(atPath: svg))
            let dot = dir.appendingPathComponent("net.dot").path
            try GraphvizRenderer.write(NetDrawing(graph: graph).dot(), to: dot, environment: ["PATH": dir.path])
            #expect(FileManager.default.fileExists(atPath: dot))
            let unknown = try ExportFixtures.swiftjit(["draw", "Examples/lenet/lenet.prototxt", "--output", dir.appendingPathComponent("net.jpg").path])
            #expect(unknown.status == 1 && unknown.err.contains("cannot tell the picture format from '.jpg'"))
        }
    }

    /// Runs `swiftjit draw` on `net` to a `.dot` file and returns its text.
    static func drawnDOT(_ net: URL) throws -> String {
        try ExportFixtures.withTempDir { dir in
            let dot = dir.appendingPathComponent("net.dot")
            let result = try ExportFixtures.swiftjit(["draw", net.path, "--output", dot.path])
            #expect(result.status == 0, "\(result.err)")
            return try String(contentsOf: dot, encoding: .utf8)
        }
    }

    /// The DOT label of layer `name`: its lines joined by `\n` as Graphviz reads them.
    static func label(of name: String, in dot: String) -> String? {
        guard let start = dot.range(of: "label=\"\(name) (") else { return nil }
        let rest = dot[start.upperBound...]
        guard let end = rest.range(of: "\"];") else { return nil }
        return "\(name) (" + rest[..<end.lowerBound]
    }

    @Test("SSD300 (weiliu89's deploy net): Normalize, Permute, Flatten, PriorBox and DetectionOutput boxes show their attributes and shapes")
    func ssd300() throws {
        let net = ExportFixtures.packageRoot.appendingPathComponent("Tests/peers/nets/ssd300_vgg16_voc0712_deploy.prototxt")
        let dot = try Self.drawnDOT(net)
        let expected = [
            "conv4_3_norm": #"conv4_3_norm (Normalize)\nper position, per-channel scale\n1×512×38×38"#,
            "conv4_3_norm_mbox_loc_perm": #"conv4_3_norm_mbox_loc_perm (Permute)\norder 0,2,3,1\n1×38×38×16"#,
            "conv4_3_norm_mbox_loc_flat": #"conv4_3_norm_mbox_loc_flat (Flatten)\naxes 1…-1\n1×23104"#,
            "conv4_3_norm_mbox_priorbox": #"conv4_3_norm_mbox_priorbox (PriorBox)\nmin 30 max 60, ratios 1,2,0.5, step 8\n1×2×23104"#,
            "fc7_mbox_priorbox": #"fc7_mbox_priorbox (PriorBox)\nmin 60 max 111, ratios 1,2,0.5,3,0.333333, step 16\n1×2×8664"#,
            "detection_out": #"detection_out (DetectionOutput)\n21 classes, NMS 0.45 top 400, keep 200, score ≥ 0.01, CENTER_SIZE\n1×1×1×7"#,
        ]
        for (name, text) in expected { #expect(Self.label(of: name, in: dot) == text) }
        // Every PriorBox and Permute of the six heads is drawn, each with its attributes.
        #expect(dot.components(separatedBy: "(PriorBox)\\nmin ").count - 1 == 6)
        #expect(dot.components(separatedBy: "(Permute)\\norder 0,2,3,1").count - 1 == 12)
        #expect(dot.contains(#"[label=" mbox_priorbox "]"#))
    }

    /// A net in the shape of SegNet, ENet and CTPN: DenseImageData, BN folded into its convolution,
    /// MAX pooling with its mask top, Upsample by scale and by size, ENet's spatial dropout, and
    /// CTPN's Transpose, Reverse and Lstm with its clip bottom; plus YOLOv2's Reorg.
    static let segmentationShapedNet = """
        name: "segnet-enet-ctpn-shaped"
        layer { name: "data" type: "DenseImageData" top: "data" top: "label"
                dense_image_data_param { source: "train.txt" batch_size: 2 new_height: 8 new_width: 12 } }
        layer { name: "clip" type: "Input" top: "clip" input_param { shape { dim: 12 dim: 2 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "conv1_bn" type: "BN" bottom: "conv1" top: "conv1" bn_param { bn_mode: INFERENCE } }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "up_scale" type: "Upsample" bottom: "pool1" bottom: "pool1_mask" top: "up_scale" upsample_param { scale: 2 } }
        layer { name: "up_size" type: "Upsample" bottom: "pool1" bottom: "pool1_mask" top: "up_size" upsample_param { upsample_h: 7 upsample_w: 11 } }
        layer { name: "drop" type: "SpatialDropout" bottom: "up_scale" top: "drop" dropout_param { dropout_ratio: 0.01 } }
        layer { name: "reorg" type: "Reorg" bottom: "drop" top: "reorg" reorg_param { stride: 2 } }
        layer { name: "transpose" type: "Transpose" bottom: "drop" top: "transpose" transpose_param { dim: 3 dim: 0 dim: 1 dim: 2 } }
        layer { name: "reverse" type: "Reverse" bottom: "transpose" top: "reverse" reverse_param { axis: 0 } }
        layer { name: "lstm" type: "Lstm" bottom: "reverse" bottom: "clip" top: "lstm" lstm_param { num_output: 5 } }
        """

    @Test("SegNet/ENet/CTPN-shaped net: DenseImageData, BN (folded), pooling's mask top, Upsample by scale and size, SpatialDropout, Reorg, Transpose, Reverse, Lstm with clip")
    func segmentationShaped() throws {
        let dot = try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try Self.segmentationShapedNet.write(to: net, atomically: true, encoding: .utf8)
            return try Self.drawnDOT(net)
        }
        let expected = [
            "data": #"data (DenseImageData)\nimage + label-image pairs from train.txt\ndata: 2×3×8×12\nlabel: 2×1×8×12"#,
            "conv1": #"conv1 (Convolution)\n4 out, kernel 3×3 pad 1×1\n2×4×8×12\n+ BN conv1_bn"#,
            "pool1": #"pool1 (Pooling)\nMAX 2×2 stride 2×2\npool1: 2×4×4×6\npool1_mask: 2×4×4×6"#,
            "up_scale": #"up_scale (Upsample)\n×2 by the mask\n2×4×8×12"#,
            "up_size": #"up_size (Upsample)\nto 7×11 by the mask\n2×4×7×11"#,
            "drop": #"drop (SpatialDropout)\nspatial, p 0.01\n2×4×8×12"#,
            "reorg": #"reorg (Reorg)\nstride 2\n2×16×4×6"#,
            "transpose": #"transpose (Transpose)\ndims 3,0,1,2\n12×2×4×8"#,
            "reverse": #"reverse (Reverse)\naxis 0\n12×2×4×8"#,
            "lstm": #"lstm (Lstm)\n5 out, clip\n12×2×5"#,
        ]
        for (name, text) in expected { #expect(Self.label(of: name, in: dot) == text) }
        #expect(dot.contains(#"[label=" pool1_mask "];"#))
        #expect(!dot.contains("(BN)"), "BN rewrites conv1 in place, so it is folded into conv1's box")
    }

    @Test("ENet-shaped train net: DenseImageData's label_divide_factor and SoftmaxWithLoss's class weights are drawn")
    func enetTrainingShaped() throws {
        let dot = try ExportFixtures.withTempDir { dir in
            let net = dir.appendingPathComponent("net.prototxt")
            try """
                layer { name: "data" type: "DenseImageData" top: "data" top: "label"
                        dense_image_data_param { source: "train.txt" batch_size: 2 new_height: 16 new_width: 24 label_divide_factor: 4 } }
                layer { name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 2 kernel_size: 4 stride: 4 } }
                layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
                        loss_param { ignore_label: 255 weight_by_label_freqs: true class_weighting: 0.5 class_weighting: 2.5 } }
                """.write(to: net, atomically: true, encoding: .utf8)
            return try Self.drawnDOT(net)
        }
        #expect(Self.label(of: "data", in: dot) == #"data (DenseImageData)\nimage + label-image pairs from train.txt, labels 1/4 size\ndata: 2×3×16×24\nlabel: 2×1×4×6"#)
        #expect(Self.label(of: "loss", in: dot)?.hasPrefix(#"loss (SoftmaxWithLoss)\nclass-weighted (0.5, 2.5)"#) == true, "\(Self.label(of: "loss", in: dot) ?? dot)")
    }

    @Test("Faster R-CNN ZF (py-faster-rcnn's test net): the Python proposal layer is drawn as Proposal with its anchors and NMS; ROIPooling is drawn")
    func fasterRCNN() throws {
        let net = ExportFixtures.packageRoot.appendingPathComponent("Tests/peers/nets/faster_rcnn_zf_test.prototxt")
        let dot = try Self.drawnDOT(net)
        #expect(Self.label(of: "proposal", in: dot) == #"proposal (Proposal)\nstride 16, 9 anchors, NMS 0.7 → ≤300\nrois: 300×5"#)
        #expect(Self.label(of: "roi_pool_conv5", in: dot)?.hasPrefix("roi_pool_conv5 (ROIPooling)") == true)
        #expect(dot.contains(#"[label=" rois "];"#))
    }
}
