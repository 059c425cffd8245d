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
}
