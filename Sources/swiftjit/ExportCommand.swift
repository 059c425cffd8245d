import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit export`: a net's trained parameters in another framework's layout, and/or the whole
/// net as an ONNX model.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export trained parameters (.npz in any weight layout) and/or the net as ONNX.",
        discussion: """
        --output params.npz writes one float32 array per parameter blob, keyed <layer>/<index> (conv1/0 weights, conv1/1 bias), and params.json beside it naming each key's layer, type, role, layout and shape.

        Layout rule (--layout): the letters order the axes of convolution weights: O = num_output, I = input channels per group, HW = the kernel's spatial axes (DHW in 3-D). Caffe stores oihw; TensorFlow wants hwio; ohwi suits NHWC runtimes. Deconvolution weights use the same letters although Caffe stores them input-first (in × out/group × kh × kw): with group 1 that order is iohw (PyTorch's ConvTranspose). InnerProduct weights are out × in for oihw and ohwi, in × out for hwio and iohw. BatchNorm mean and variance are divided by Caffe's scale factor (blob 2, exported as 1; a factor of 0 gives zeros, as in Caffe). Other blobs are copied as Caffe stores them.

        --onnx net.onnx writes an ONNX model (opset 13 by default) whose inputs and outputs carry the Caffe blob names and whose batch axis is the symbol N. Caffe's ceil-rounded pooling and its padded-average divisor are expressed exactly; a BatchNorm followed by a Scale becomes one BatchNormalization. A layer without an exact ONNX equivalent stops the export with its name and type.

        Every file is written to a temporary first and moved into place only when all of them are complete: a failed export writes nothing.
        """
    )

    @Argument(help: "The net definition (.prototxt), usually a deploy net.")
    var net: String

    @Option(name: .long, help: "The trained weights (.caffemodel); needed when the net has parameters.")
    var weights: String?

    @Option(name: .long, help: "Where to write the parameters (.npz); the JSON sidecar goes beside it.")
    var output: String?

    @Option(name: .long, help: "Weight layout for --output: oihw (Caffe's), hwio, ohwi or iohw.")
    var layout: WeightLayout = .oihw

    @Option(name: .long, help: "Where to write the ONNX model (.onnx).")
    var onnx: String?

    @Option(name: .long, help: "ONNX opset for --onnx (13 to 21).")
    var opset: Int = 13

    @Option(name: .long, help: "Override an input's shape: NAME=d0,d1,... (repeatable), for weights made for another input size.")
    var input: [InputShape] = []

    @Option(name: .long, help: "The phase to build: test or train.")
    var phase: PhaseOption = .test

    func validate() throws {
        guard output != nil || onnx != nil else {
            throw ValidationError("nothing to export: give --output params.npz, --onnx net.onnx, or both")
        }
        if let output, output.hasSuffix(".json") {
            throw ValidationError("--output names the .npz archive; its .json sidecar is written beside it")
        }
    }

    func run() throws {
        do {
            // Data layers' shapes come from their LMDBs, by the rule every command shares (DataSources).
            let given = Dictionary(input.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 })
            let data = try DataSources.shapes(try CaffeFiles.loadNet(path: net), phase: phase.caffePhase, given: given, required: false)
            let source = try ExportSource(netPath: net, weightsPath: weights, phase: phase.caffePhase,
                                          inputShapes: data.shapes.merging(given) { $1 })
            var files = StagedFiles()
            var report: [String] = []
            if let output {
                let parameters = try ParameterExport(graph: source.graph, weights: source.weights, layout: layout)
                try parameters.stage(into: &files, archive: output, sources: ["net": net, "weights": weights ?? ""])
                report.append("wrote \(output) (\(parameters.entries.count) arrays, layout \(layout.rawValue)) and \(ParameterExport.sidecarPath(for: output))")
            }
            if let onnx {
                let model = try ONNXExporter(opset: opset).export(source)
                try model.stage(into: &files, path: onnx)
                report.append("wrote \(onnx) (opset \(opset), \(model.proto.graph.node.count) nodes, \(model.proto.graph.initializer.count) initializers)")
                report.append("  inputs:  \(model.describe(model.proto.graph.input))")
                report.append("  outputs: \(model.describe(model.proto.graph.output))")
                report += model.notes.map { "  note: \($0)" }
            }
            try files.commit()
            for line in report { print(line) }
        } catch {
            throw fail(error)
        }
    }
}

extension WeightLayout: ExpressibleByArgument {}
