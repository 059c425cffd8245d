import Foundation

/// What `swiftjit compile` reports about a net: one row per layer (tops, parameter shapes, FLOPs),
/// totals; when weights were given, which layers they initialize; when the net was JIT-compiled
/// for inference, how long that took and where its kernels came from (or why it was not).
///
/// The same value renders as a table for people (`table`) and as one JSON document for scripts
/// (`json`). Caffe's automatic Split layers are counted but not listed; they only copy blobs.
public struct NetSummary: Codable, Sendable {
    public struct Top: Codable, Sendable {
        public var name: String
        /// Extents; `null` where unknown until data is read.
        public var shape: [Int?]
    }

    public struct Layer: Codable, Sendable {
        public var name: String
        public var type: String
        public var tops: [Top]
        public var params: [[Int?]]
        public var flops: Int
        /// `file:line:column` of the layer's definition, when known.
        public var source: String?
    }

    public struct Totals: Codable, Sendable {
        public var layers: Int
        public var splits: Int
        public var params: Int
        public var flops: Int
        /// Bytes to hold every blob separately, as Caffe does (float32).
        public var naive_activation_bytes: Int
        /// True when some blob or parameter size is unknown (an extent learned only from data, e.g.
        /// a Data layer's image size): `params`, `flops` and `naive_activation_bytes` then count
        /// only what is known and are lower bounds.
        public var partial: Bool
        /// The blobs and parameters (`layer/index`) whose size is unknown, in net order.
        public var unknown: [String]
    }

    public struct Weights: Codable, Sendable {
        public var file: String
        public var initialized: [String]
        public var not_initialized: [String]
        public var ignored: [String]
    }

    /// A JIT compilation of the net for inference, or why there was none.
    public struct Compilation: Codable, Sendable {
        /// Graph to executable (graph passes, lowering, kernels, arena and weights), seconds.
        public var seconds: Double?
        /// Distinct kernels, and how many were compiled from IR, came from the disk kernel cache,
        /// or were already in the process.
        public var kernels: Int?
        public var compiled_kernels: Int?
        public var cached_kernels: Int?
        public var reused_kernels: Int?
        /// The activation arena with memory reuse, bytes.
        public var planned_activation_bytes: Int?
        /// The kernel cache directory, or nil when it was not used.
        public var kernel_cache: String?
        /// Why the net was not compiled (an unsupported layer, unknown shapes, …).
        public var not_compiled: String?

        public init(seconds: Double, kernels: KernelStatistics, plannedActivationBytes: Int, kernelCache: String?) {
            self.seconds = seconds
            self.kernels = kernels.kernels
            compiled_kernels = kernels.compiled
            cached_kernels = kernels.loaded
            reused_kernels = kernels.reused
            planned_activation_bytes = plannedActivationBytes
            kernel_cache = kernelCache
        }

        public init(notCompiled reason: String) {
            not_compiled = reason
        }
    }

    public var net: String
    public var phase: String
    public var layers: [Layer]
    public var totals: Totals
    public var weights: Weights?
    public var compilation: Compilation?
    public var notes: [String]

    public init(graph: Graph, weights: (file: String, report: WeightBindingReport)? = nil, notes: [String] = []) {
        net = graph.name
        phase = graph.phase.caffeName
        layers = graph.nodes.filter { !$0.isSynthetic }.map { node in
            Layer(name: node.name, type: node.kind.rawValue,
                  tops: node.outputs.map { Top(name: graph.values[$0].name, shape: graph.values[$0].shape.jsonDims) },
                  params: node.parameters.map { $0.shape.jsonDims },
                  flops: node.flops,
                  source: node.location?.description)
        }
        let distinctValues = graph.values.filter { !$0.isInPlace }
        let unknown = distinctValues.filter { $0.shape.count == nil }.map(\.name) + graph.nodes.flatMap { node in
            node.parameters.enumerated().filter { $0.element.shape.count == nil }.map { "\(node.name)/\($0.offset)" }
        }
        totals = Totals(layers: layers.count, splits: graph.nodes.count - layers.count,
                        params: graph.parameterCount, flops: graph.totalFlops,
                        naive_activation_bytes: distinctValues.reduce(0) { $0 + 4 * ($1.shape.count ?? 0) },
                        partial: !unknown.isEmpty, unknown: unknown)
        self.weights = weights.map {
            Weights(file: $0.file, initialized: $0.report.initialized, not_initialized: $0.report.notInitialized, ignored: $0.report.ignored)
        }
        self.notes = notes
    }

    /// The JSON document for scripts (keys sorted, pretty-printed).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// The table for people.
    public var table: String {
        func shapeText(_ dims: [Int?]) -> String {
            dims.isEmpty ? "scalar" : dims.map { $0.map(String.init) ?? "?" }.joined(separator: "×")
        }
        let header = ["layer", "type", "tops", "params", "FLOPs"]
        var rows: [[String]] = layers.map { layer in
            [layer.name, layer.type,
             layer.tops.map { "\($0.name) \(shapeText($0.shape))" }.joined(separator: ", "),
             layer.params.map(shapeText).joined(separator: ", "),
             layer.flops > 0 ? NetSummary.humanCount(layer.flops) : "-"]
        }
        rows.insert(header, at: 0)
        let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? String(repeating: " ", count: widths[column] - cell.count) + cell
                                        : cell + String(repeating: " ", count: widths[column] - cell.count)
            }.joined(separator: "  ")
        }
        lines.insert(String(repeating: "-", count: lines[0].count), at: 1)
        lines.append("")
        var total = "\(totals.layers) layers"
        if totals.splits > 0 { total += " (+\(totals.splits) automatic splits)" }
        total += ", \(NetSummary.grouped(totals.params)) parameters (\(NetSummary.humanBytes(4 * totals.params)))"
        total += ", \(NetSummary.humanCount(totals.flops))FLOPs per forward pass"
        lines.append(total)
        lines.append("activations if every blob has its own buffer (as Caffe): \(NetSummary.humanBytes(totals.naive_activation_bytes))")
        if totals.partial {
            let named = totals.unknown.prefix(5).joined(separator: ", ") + (totals.unknown.count > 5 ? ", …" : "")
            lines.append("partial totals: the sizes of \(totals.unknown.count) blob\(totals.unknown.count == 1 ? "" : "s")/parameter\(totals.unknown.count == 1 ? "" : "s") are unknown (\(named)); the counts above leave them out — give the inputs' shapes with --input")
        }
        if let weights {
            lines.append("weights \(weights.file): initialized \(weights.initialized.count) layer\(weights.initialized.count == 1 ? "" : "s")" +
                         (weights.initialized.isEmpty ? "" : " (\(weights.initialized.joined(separator: ", ")))"))
            lines.append("  not initialized (filled by their fillers): " + (weights.not_initialized.isEmpty ? "none" : weights.not_initialized.joined(separator: ", ")))
            if !weights.ignored.isEmpty {
                lines.append("  in the caffemodel but not in this net (ignored): " + weights.ignored.joined(separator: ", "))
            }
        }
        if let compilation {
            if let seconds = compilation.seconds {
                lines.append(String(format: "compile: %.3f s (graph → executable; %d kernels: %d compiled, %d from the kernel cache, %d already in this process)",
                                    seconds, compilation.kernels ?? 0, compilation.compiled_kernels ?? 0, compilation.cached_kernels ?? 0,
                                    compilation.reused_kernels ?? 0)
                             + ", activations \(NetSummary.humanBytes(compilation.planned_activation_bytes ?? 0)) planned")
                lines.append("  kernel cache: " + (compilation.kernel_cache ?? "off"))
            } else if let reason = compilation.not_compiled {
                lines.append("not JIT-compiled: " + reason)
            }
        }
        for note in notes { lines.append("note: " + note) }
        return lines.joined(separator: "\n")
    }

    /// `1.45 G`, `96.3 M`, `512`.
    public static func humanCount(_ value: Int) -> String {
        let v = Double(value)
        switch v {
        case 1e9...: return String(format: "%.2f G", v / 1e9)
        case 1e6...: return String(format: "%.1f M", v / 1e6)
        case 1e3...: return String(format: "%.1f K", v / 1e3)
        default: return "\(value) "
        }
    }

    public static func humanBytes(_ bytes: Int) -> String {
        let v = Double(bytes)
        switch v {
        case Double(1 << 30)...: return String(format: "%.2f GiB", v / Double(1 << 30))
        case Double(1 << 20)...: return String(format: "%.1f MiB", v / Double(1 << 20))
        case Double(1 << 10)...: return String(format: "%.1f KiB", v / Double(1 << 10))
        default: return "\(bytes) B"
        }
    }

    /// `60,965,224`.
    public static func grouped(_ value: Int) -> String {
        let digits = String(value)
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return out
    }
}
