import CaffeFormat
import Foundation
import Graph

/// A picture of a net as Graphviz DOT: one box per layer with its type, main attributes and top
/// shapes; edges labelled with the blob names they carry. The work behind `swiftjit draw`.
///
/// Layers that rewrite their bottom in place (ReLU, BatchNorm, Scale, Dropout…) are folded into the
/// box of the layer that produced that bottom, as extra `+ Type name` lines, so a ResNet block reads
/// as conv → conv → conv rather than a ladder of activations. Caffe's automatic Split layers are not
/// drawn (the graph is built without them); a Split the prototxt declares is.
///
///     let drawing = NetDrawing(graph: try GraphBuilder(insertsSplits: false).build(definition))
///     try GraphvizRenderer.write(drawing.dot(), to: "net.svg")
public struct NetDrawing: Sendable {
    /// One drawn box: a layer and the in-place layers folded into it.
    public struct Box: Sendable {
        public var node: NodeID
        public var folded: [NodeID] = []
    }

    public let graph: Graph
    /// Graphviz `rankdir`: `TB` (top to bottom, default) or `LR`.
    public var rankDirection: String
    public private(set) var boxes: [Box] = []
    /// The box that shows each node (a folded node maps to its host's box).
    private var boxOfNode: [NodeID: Int] = [:]

    public init(graph: Graph, rankDirection: String = "TB") {
        self.graph = graph
        self.rankDirection = rankDirection
        for node in graph.nodes where !node.isSynthetic {
            if let host = foldHost(node) {
                boxes[host].folded.append(node.id)
                boxOfNode[node.id] = host
            } else {
                boxOfNode[node.id] = boxes.count
                boxes.append(Box(node: node.id))
            }
        }
    }

    /// The box an in-place, single-bottom layer folds into: its bottom's producer's.
    private func foldHost(_ node: Node) -> Int? {
        guard node.inputs.count == 1, node.outputs.count == 1, graph.values[node.outputs[0]].isInPlace,
              let producer = graph.values[node.inputs[0]].producer else { return nil }
        return boxOfNode[producer]
    }

    /// The DOT text.
    public func dot() -> String {
        var lines = ["digraph \(Self.quote(graph.name.isEmpty ? "net" : graph.name)) {",
                     "  rankdir=\(rankDirection);",
                     "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];",
                     "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#555555\"];"]
        for id in graph.externalInputs {
            let value = graph.values[id]
            lines.append("  v\(id) [shape=ellipse, fillcolor=\"#eeeeee\", label=\(Self.quote("\(value.name)\n\(value.shape)"))];")
        }
        for (index, box) in boxes.enumerated() {
            lines.append("  b\(index) [fillcolor=\"\(Self.color(graph.nodes[box.node].kind))\", label=\(Self.quote(label(box)))];")
        }
        for (index, box) in boxes.enumerated() {
            for input in graph.nodes[box.node].inputs {
                let value = graph.values[input]
                let source = value.producer.flatMap { boxOfNode[$0] }.map { "b\($0)" } ?? "v\(input)"
                lines.append("  \(source) -> b\(index) [label=\(Self.quote(" \(value.name) "))];")
            }
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// `conv1 (Convolution)`, its attributes, its tops with shapes, then `+ ReLU relu1` lines.
    func label(_ box: Box) -> String {
        let node = graph.nodes[box.node]
        var lines = ["\(node.name) (\(node.kind.rawValue))"]
        if let attributes = Self.attributes(node, input: node.inputs.first.map { graph.values[$0].shape }) { lines.append(attributes) }
        for output in node.outputs {
            let value = graph.values[output]
            lines.append(node.outputs.count == 1 && value.name == node.name ? "\(value.shape)" : "\(value.name): \(value.shape)")
        }
        for id in box.folded {
            let folded = graph.nodes[id]
            lines.append("+ \(folded.kind.rawValue) \(folded.name)")
        }
        return lines.joined(separator: "\n")
    }

    static func attributes(_ node: Node, input: TensorShape?) -> String? {
        switch node.kind {
        case .convolution, .deconvolution:
            guard case .convolution(let g) = node.attributes else { return nil }
            return "\(g.numOutput) out, \(g.summary)"
        case .pooling:
            guard case .pooling(let p) = node.attributes else { return nil }
            let method = p.method == .max ? "MAX" : p.method == .ave ? "AVE" : "STOCHASTIC"
            let g = p.geometry
            if g.isGlobal { return "\(method) global" }
            return "\(method) \(g.kernel.map(String.init).joined(separator: "×"))" + (g.stride.contains { $0 != 1 } ? " stride \(g.stride.map(String.init).joined(separator: "×"))" : "")
                + (g.pad.contains { $0 != 0 } ? " pad \(g.pad.map(String.init).joined(separator: "×"))" : "")
        case .innerProduct: return (try? node.innerProductAttributes()).map { "\($0.numOutput) out" }
        case .multiBoxLoss: return multiBoxLossAttributes(node.layer)
        case .proposal:
            guard let p = try? ProposalSettings(node.layer) else { return nil }
            return "stride \(p.featStride), \(p.anchorCount) anchors, NMS \(p.nmsThreshold) → ≤\(p.postNMSTopN)"
        case .region:
            guard let p = try? RegionSettings(node.layer) else { return nil }
            return "\(p.boxes) boxes × \(p.classes) classes\(p.softmax ? ", softmax" : ""), NMS \(p.nmsThreshold)"
        case .psroiPooling:
            guard let p = try? PSROIPoolingSettings(node.layer) else { return nil }
            return "\(p.outputDim) out, \(p.groupSize)×\(p.groupSize) bins, scale \(p.spatialScale)"
        case .eltwise:
            switch node.layer.eltwiseParam.operation {
            case .sum: return "SUM"
            case .prod: return "PROD"
            case .max: return "MAX"
            }
        case .bn: return node.layer.bnParam.bnMode == .learn ? "LEARN (batch statistics)" : "INFERENCE"
        case .spatialDropout:
            return (try? SpatialDropoutSettings(node.layer, phase: .test)).map { "spatial, p \($0.ratio)" }
        case .transpose: return "dims \(node.layer.transposeParam.dim.map(String.init).joined(separator: ","))"
        case .reverse: return "axis \(node.layer.reverseParam.axis)"
        case .ctpnLSTM: return "\(node.layer.lstmParam.numOutput) out" + (node.inputs.count > 1 ? ", clip" : "")
        case .permute, .priorBox, .detectionOutput, .normalize, .flatten, .upsample, .reorg:
            return detectionAttributes(node)
        case .denseImageData:
            let factor = node.layer.denseImageDataParam.labelDivideFactor
            return "image + label-image pairs from \(node.layer.denseImageDataParam.source)" + (factor > 1 ? ", labels 1/\(factor) size" : "")
        case .softmaxWithLoss where node.layer.lossParam.weightByLabelFreqs:
            return "class-weighted (\(node.layer.lossParam.classWeighting.map { String($0) }.joined(separator: ", ")))"
        default: return nil
        }
    }

    /// The SSD, SegNet and YOLOv2 layers' lines: what a reader checks against the prototxt.
    ///
    ///     order 0,2,3,1                                   Permute
    ///     min 30 max 60, ratios 1,2,0.5, step 8           PriorBox
    ///     21 classes, NMS 0.45 top 400, keep 200, score ≥ 0.01, CENTER_SIZE
    ///     across spatial, per-channel scale               Normalize
    ///     axes 1…-1                                       Flatten
    ///     ×2 by the mask / to 45×60 by the mask           Upsample
    static func detectionAttributes(_ node: Node) -> String? {
        let layer = node.layer
        switch node.kind {
        case .permute: return "order \(layer.permuteParam.order.map(String.init).joined(separator: ","))"
        case .priorBox:
            guard let g = try? PriorBoxGeometry(layer.priorBoxParam) else { return nil }
            var text = "min \(g.minSizes.map(number).joined(separator: ","))"
            if !g.maxSizes.isEmpty { text += " max \(g.maxSizes.map(number).joined(separator: ","))" }
            text += ", ratios \(g.aspectRatios.map(number).joined(separator: ","))"
            if let step = g.step { text += step.height == step.width ? ", step \(number(step.height))" : ", step \(number(step.height))×\(number(step.width))" }
            return text + (g.clip ? ", clipped" : "")
        case .detectionOutput:
            let p = layer.detectionOutputParam
            let code = p.codeType == .centerSize ? "CENTER_SIZE" : p.codeType == .cornerSize ? "CORNER_SIZE" : "CORNER"
            var text = "\(p.numClasses) classes, NMS \(number(p.nmsParam.nmsThreshold))"
            if p.nmsParam.hasTopK { text += " top \(p.nmsParam.topK)" }
            if p.keepTopK >= 0 { text += ", keep \(p.keepTopK)" }
            if p.hasConfidenceThreshold { text += ", score ≥ \(number(p.confidenceThreshold))" }
            return text + ", \(code)" + (p.shareLocation ? "" : ", per-class boxes")
        case .normalize:
            let p = layer.normParam
            return "\(p.acrossSpatial ? "across spatial" : "per position"), \(p.channelShared ? "one scale" : "per-channel scale")"
        case .flatten: return "axes \(layer.flattenParam.axis)…\(layer.flattenParam.endAxis)"
        case .upsample:
            guard let g = try? UpsampleGeometry(layer.upsampleParam) else { return nil }
            if let exact = g.exact { return "to \(exact.height)×\(exact.width) by the mask" }
            return (g.scale.height == g.scale.width ? "×\(g.scale.height)" : "×\(g.scale.height)×\(g.scale.width)") + " by the mask"
        case .reorg: return "stride \(layer.reorgParam.stride)" + (layer.reorgParam.reverse ? ", reverse" : "")
        default: return nil
        }
    }

    /// `30` for 30.0, `0.45` for 0.449999988, `0.333333` for 1/3: six significant digits, as C's `%g`.
    static func number(_ value: Float) -> String { String(format: "%g", Double(value)) }

    static func color(_ kind: OpKind) -> String {
        switch kind {
        case .convolution, .deconvolution: return "#cfe2f3"
        case .pooling, .roiPooling, .psroiPooling, .spp: return "#d9ead3"
        case .innerProduct: return "#fce5cd"
        case .concat, .eltwise, .split, .slice, .reshape, .flatten: return "#fff2cc"
        case .batchNorm, .scale, .lrn, .mvn, .normalize, .l2Norm, .bn: return "#ead1dc"
        default: return kind.isDataSource ? "#eeeeee" : kind.isLoss ? "#f4cccc" : "#ffffff"
        }
    }

    /// A DOT double-quoted string (newlines become `\n` line breaks).
    static func quote(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}

/// Writes DOT text as `.dot`, or renders it with Graphviz's `dot` (`.svg`, `.png`, `.pdf`).
public enum GraphvizRenderer {
    /// Output formats by file extension; `dot`/`gv` are written as text.
    public static let formats = ["dot", "gv", "svg", "png", "pdf"]

    /// Writes `dot` to `path` in the format its extension names, atomically.
    public static func write(_ dot: String, to path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let format = URL(fileURLWithPath: path).pathExtension.lowercased()
        guard formats.contains(format) else {
            throw Diagnostic("cannot tell the picture format from '.\(format)'", file: path,
                             hint: "name the output .dot (Graphviz text), .svg, .png or .pdf")
        }
        var files = StagedFiles()
        files.add(format == "dot" || format == "gv" ? Data(dot.utf8) : try render(dot, format: format, environment: environment), at: path)
        try files.commit()
    }

    /// Runs `dot -T<format>` on the text and returns its output.
    public static func render(_ dot: String, format: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Data {
        guard let executable = findDot(environment: environment) else {
            throw Diagnostic("Graphviz's 'dot' program is not on PATH, so the net cannot be rendered as \(format.uppercased())",
                             hint: "install Graphviz (Debian: apt-get install graphviz, or run tools/install-deps.sh), or write --output net.dot and render it elsewhere")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-T\(format)"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch { throw Diagnostic("cannot start \(executable): \(error)") }
        // Feed stdin and drain stderr on other threads so a large picture cannot deadlock on full
        // pipes. The group orders their writes before our reads (polling Thread.isFinished does
        // not: ThreadSanitizer reported `message` read here while the reader wrote it).
        let helpers = DispatchGroup()
        helpers.enter()
        Thread {
            input.fileHandleForWriting.write(Data(dot.utf8))
            try? input.fileHandleForWriting.close()
            helpers.leave()
        }.start()
        nonisolated(unsafe) var message = Data()
        helpers.enter()
        Thread {
            message = errors.fileHandleForReading.readDataToEndOfFile()
            helpers.leave()
        }.start()
        let rendered = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        helpers.wait()
        guard process.terminationStatus == 0 else {
            throw Diagnostic("Graphviz's dot failed (exit \(process.terminationStatus)): \(String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return rendered
    }

    static func findDot(environment: [String: String]) -> String? {
        for folder in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(folder)/dot"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
