import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit draw`: a picture of a net, like Caffe's draw_net.py.
struct DrawCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "draw",
        abstract: "Draw a net as Graphviz DOT or, through Graphviz's dot, as SVG/PNG/PDF.",
        discussion: """
        One box per layer shows its name, type, main attributes and top shapes; edges carry the blob names. Layers that rewrite their bottom in place (ReLU, BatchNorm, Scale, Dropout...) are folded into the box of the layer that produced it, as '+ Type name' lines. Caffe's automatic Split layers are not drawn.

        The format follows the output's extension: .dot (text, no Graphviz needed), .svg, .png or .pdf (these need Graphviz's dot on PATH; Debian: apt-get install graphviz).
        """
    )

    @Argument(help: "The net definition (.prototxt).")
    var net: String

    @Option(name: .shortAndLong, help: "Where to write the picture: .dot, .svg, .png or .pdf.")
    var output: String

    @Option(name: .long, help: "The phase to build: test or train.")
    var phase: PhaseOption = .test

    @Option(name: .long, help: "Layout direction: TB (top to bottom) or LR (left to right).")
    var rankdir: String = "TB"

    func validate() throws {
        guard ["TB", "LR", "BT", "RL"].contains(rankdir) else { throw ValidationError("--rankdir is TB, LR, BT or RL") }
    }

    func run() throws {
        do {
            let definition = try CaffeFiles.loadNet(path: net)
            let graph = try GraphBuilder(phase: phase.caffePhase, insertsSplits: false, enablesMissingStages: true).build(definition)
            let drawing = NetDrawing(graph: graph, rankDirection: rankdir)
            try GraphvizRenderer.write(drawing.dot(), to: output)
            let folded = drawing.boxes.reduce(0) { $0 + $1.folded.count }
            print("wrote \(output) (\(drawing.boxes.count) boxes, \(folded) in-place layers folded into them)")
        } catch {
            throw fail(error)
        }
    }
}
