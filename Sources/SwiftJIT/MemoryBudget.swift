import Foundation
import Graph

/// What a net will need in memory, computed from its graph alone — before a single parameter or
/// activation is allocated — and the check `run`, `time`, `train` and `Model` make with it.
///
/// Parameters count 4 bytes per value (each shared blob once); activations are the peak, over the
/// layers in net order, of the blobs alive at that layer (from the layer producing a blob to the
/// last layer reading it; the net's inputs and outputs stay alive throughout; a blob rewritten in
/// place shares its input's), which is what the memory planner's arena approaches. Training keeps a diff beside every parameter and activation
/// and up to two solver histories per parameter, so it counts parameters four times and
/// activations twice. A net that does not fit fails with one line that names the sizes, the
/// memory available and the layer with the most parameters, instead of dying in the allocator:
///
///     try MemoryBudget(graph).check()   // throws "the net needs 402.3 GB ... (fc6, InnerProduct ...)"
public struct MemoryBudget: Sendable {
    /// What will be allocated: inference keeps parameters and activations, training also their
    /// diffs and solver history, `parametersOnly` (writing a caffemodel) only the parameters.
    public enum Use: Sendable {
        case inference, training, parametersOnly
    }

    /// Bytes of parameters (4 per value, shared blobs once), saturating rather than overflowing.
    public private(set) var parameterBytes = 0
    /// Bytes of the activations alive together at the busiest layer, saturating.
    public private(set) var activationBytes = 0
    /// The layer holding the most parameter bytes: its name, type, parameter shapes and bytes.
    public private(set) var largestLayer: (name: String, type: String, shapes: [TensorShape], bytes: Int)?
    public let use: Use

    public init(_ graph: Graph, use: Use = .inference) {
        self.use = use
        var seen = Set<String>()
        for node in graph.nodes where !node.parameters.isEmpty {
            var bytes = 0
            for (index, parameter) in node.parameters.enumerated() {
                let key = parameter.shareName.map { "shared:\($0)" } ?? "\(node.name)/\(index)"
                guard seen.insert(key).inserted else { continue }
                bytes = Self.adding(bytes, Self.bytes(of: parameter.shape))
            }
            parameterBytes = Self.adding(parameterBytes, bytes)
            if bytes > (largestLayer?.bytes ?? 0) {
                largestLayer = (node.name, node.kind.rawValue, node.parameters.map(\.shape), bytes)
            }
        }
        guard use != .parametersOnly, !graph.nodes.isEmpty else { return }
        // Live ranges in node order: a difference array of bytes entering and leaving.
        let last = graph.nodes.count - 1
        var delta = Array(repeating: 0, count: graph.nodes.count + 1)
        // A value a layer rewrote in place lives in its input's buffer: it adds no bytes but keeps
        // that buffer alive until its own last reader.
        var end = graph.values.map { value in
            value.consumers.isEmpty || value.producer == nil ? last : min(last, max(value.producer!, value.consumers.max()!))
        }
        var root = Array(graph.values.indices)
        for value in graph.values where value.isInPlace {
            if let producer = value.producer,
               let input = graph.nodes[producer].inputs.first(where: { graph.values[$0].name == value.name }) {
                root[value.id] = root[input]
                end[root[value.id]] = max(end[root[value.id]], end[value.id])
            }
        }
        for value in graph.values where root[value.id] == value.id {
            let start = min(value.producer ?? 0, last)
            let size = Self.bytes(of: value.shape)
            delta[start] = Self.adding(delta[start], size)
            delta[end[value.id] + 1] = Self.adding(delta[end[value.id] + 1], -size)
        }
        var live = 0
        for change in delta.dropLast() {
            live = max(0, Self.adding(live, change))
            activationBytes = max(activationBytes, live)
        }
    }

    /// The bytes this use allocates: parameters (×4 in training: data, diff, two histories) plus
    /// activations (×2 in training: data and diff).
    public var totalBytes: Int {
        switch use {
        case .inference: return Self.adding(parameterBytes, activationBytes)
        case .training: return Self.adding(Self.multiplying(parameterBytes, 4), Self.multiplying(activationBytes, 2))
        case .parametersOnly: return parameterBytes
        }
    }

    /// Throws a one-line `Diagnostic` when `totalBytes` exceeds `available` (by default the
    /// kernel's `MemAvailable`; no check where that cannot be read).
    public func check(available: Int? = MemoryBudget.availableBytes()) throws {
        guard let available, totalBytes > available else { return }
        var message = "the net needs \(Self.gigabytes(totalBytes)) (\(NetSummary.grouped(totalBytes)) bytes): \(Self.gigabytes(parameterBytes)) of parameters"
        switch use {
        case .inference: message += " + \(Self.gigabytes(activationBytes)) of activations"
        case .training: message += " ×4 (diffs, solver history) + \(Self.gigabytes(activationBytes)) of activations ×2 (diffs)"
        case .parametersOnly: break
        }
        message += ", more than the \(Self.gigabytes(available)) of memory available"
        if let largestLayer {
            let shapes = largestLayer.shapes.map { $0.dims.map(String.init).joined(separator: " × ") }.joined(separator: " and ")
            message += "; the largest layer is '\(largestLayer.name)' (\(largestLayer.type), parameters \(shapes): \(Self.gigabytes(largestLayer.bytes)))"
        }
        // One line, as the brief for this check asks: the sizes, the layer, and that nothing was allocated.
        throw Diagnostic(message + "; nothing was allocated (check the strides and kernel sizes feeding it, or give a smaller --input)")
    }

    /// `MemAvailable` from /proc/meminfo, in bytes; nil where there is no such file.
    public static func availableBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kilobytes = Int(fields[1]) else { return nil }
            return multiplying(kilobytes, 1024)
        }
        return nil
    }

    /// `402.3 GB`: decimal gigabytes, as memory is sold and `free -g` rounds.
    static func gigabytes(_ bytes: Int) -> String {
        String(format: "%.1f GB", Double(bytes) / 1e9)
    }

    /// 4 bytes per value of a fully known shape (0 otherwise), saturating.
    static func bytes(of shape: TensorShape) -> Int {
        guard shape.isFullyKnown else { return 0 }
        return shape.dims.reduce(4) { multiplying($0, max($1, 0)) }
    }

    static func adding(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? Int.max : Int.min) : sum
    }

    static func multiplying(_ a: Int, _ b: Int) -> Int {
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? Int.max : product
    }
}
