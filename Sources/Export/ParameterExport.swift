import CaffeFormat
import Foundation
import Graph
import NumPy

/// A net's trained parameters as one `.npz` array per blob in a chosen layout, plus a JSON sidecar
/// that says what each array is: the work behind `swiftjit export --output params.npz`.
///
/// Keys are `<layer>/<index>` in Caffe's blob order (`conv1/0` weights, `conv1/1` bias). What changes
/// from the caffemodel:
/// - Convolution and Deconvolution weights are permuted to `layout` (see `WeightLayout`);
///   InnerProduct weights become `out × in` or `in × out` by the same choice.
/// - BatchNorm's mean and variance are divided by its stored scale factor (blob 2), as Caffe does
///   before using them (a factor of 0 gives zeros, as in Caffe), and blob 2 is exported as `[1]`,
///   so the three arrays still mean the same thing to anyone who reapplies Caffe's rule.
/// - Everything else (biases, Scale, PReLU, …) is copied unchanged (`"layout": "caffe"`).
///
///     let export = try ParameterExport(graph: graph, weights: weights, layout: .hwio)
///     try export.write(to: "params.npz")   // and params.json beside it
public struct ParameterExport: Sendable {
    /// What one exported array is, as written to the JSON sidecar.
    public struct Entry: Sendable, Codable, Equatable {
        public var key: String
        public var layer: String
        public var type: String
        /// `weights`, `bias`, `mean`, `variance`, `scale factor`, `scale`, … (from the graph).
        public var role: String
        /// Axis names of the array (`hwio`, `oi`, `io`), or `vector` / `caffe` when unchanged.
        public var layout: String
        public var shape: [Int]
        /// The blob's shape as Caffe stores it.
        public var caffeShape: [Int]
        /// For grouped (de)convolutions: `I` in the layout is per group.
        public var group: Int?
        /// For BatchNorm statistics: the factor they were divided by (0 means Caffe zeroes them).
        public var dividedByScaleFactor: Float?
        /// A shared parameter's name (`param { name }`); every sharing layer gets its own copy.
        public var sharedName: String?
    }

    public let layout: WeightLayout
    public private(set) var entries: [Entry] = []
    public private(set) var arrays: [NDArray] = []
    public let netName: String

    public init(graph: Graph, weights: TrainedWeights, layout: WeightLayout) throws {
        self.layout = layout
        netName = graph.name
        for node in graph.nodes where !node.parameters.isEmpty {
            var blobs = try weights.blobs(of: node)
            var factor: Float?
            if node.kind == .batchNorm, blobs.count == 3, let stored = blobs[2].data.first {
                factor = stored
                let multiplier: Float = stored == 0 ? 0 : 1 / stored
                for i in 0..<2 { blobs[i].data = blobs[i].data.map { $0 * multiplier } }
                blobs[2].data = [1]
            }
            for (index, caffe) in blobs.enumerated() {
                let parameter = node.parameters[index]
                var entry = Entry(key: "\(node.name)/\(index)", layer: node.name, type: node.kind.rawValue, role: parameter.role,
                                  layout: caffe.rank == 1 ? "vector" : "caffe", shape: caffe.shape, caffeShape: caffe.shape,
                                  sharedName: parameter.shareName)
                var array = caffe
                if let kind = Self.weightKind(node), index == 0 {
                    do {
                        array = try layout.arrange(caffe, as: kind)
                    } catch let diagnostic as Diagnostic {
                        throw diagnostic.inLayer(node.name)
                    }
                    entry.layout = layout.axisNames(rank: caffe.rank, kind: kind)
                    entry.shape = array.shape
                    if case .convolution(let g) = node.attributes, g.group > 1 { entry.group = g.group }
                }
                if node.kind == .batchNorm, index < 2 { entry.dividedByScaleFactor = factor }
                entries.append(entry)
                arrays.append(array)
            }
        }
    }

    /// Which weights get a layout: blob 0 of Convolution, Deconvolution and InnerProduct.
    static func weightKind(_ node: Node) -> WeightLayout.WeightKind? {
        switch (node.kind, node.attributes) {
        case (.convolution, _): return .convolution
        case (.deconvolution, .convolution(let g)?): return .deconvolution(group: g.group)
        case (.innerProduct, .innerProduct(let p)?): return .innerProduct(transposed: p.transpose)
        default: return nil
        }
    }

    /// The sidecar's path: the archive's with `.json` for its extension (`params.npz` → `params.json`).
    public static func sidecarPath(for archive: String) -> String {
        let url = URL(fileURLWithPath: archive)
        return url.pathExtension.isEmpty ? archive + ".json" : url.deletingPathExtension().appendingPathExtension("json").path
    }

    /// The sidecar document: the layout rule, then one entry per key in archive order.
    public func sidecar(sources: [String: String] = [:]) throws -> Data {
        struct Document: Codable {
            var net: String
            var layout: String
            var rule: String
            var sources: [String: String]
            var parameters: [Entry]
        }
        let rule = "convolution weights: \(layout.rawValue) (O num_output, I input channels per group, spatial kernel axes), also for Deconvolution; InnerProduct weights: \(layout.outputFirst ? "out×in" : "in×out"); BatchNorm mean and variance divided by Caffe's scale factor (blob 2, exported as 1); other blobs as Caffe stores them"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return try encoder.encode(Document(net: netName, layout: layout.rawValue, rule: rule, sources: sources, parameters: entries))
    }

    /// Writes the archive and its sidecar together; neither appears unless both were written.
    public func write(to archive: String, sources: [String: String] = [:]) throws {
        var files = StagedFiles()
        try stage(into: &files, archive: archive, sources: sources)
        try files.commit()
    }

    /// Queues the archive and its sidecar, to be written with other files in one commit.
    public func stage(into files: inout StagedFiles, archive: String, sources: [String: String] = [:]) throws {
        let bytes: Data
        do {
            bytes = try NumPyFile.encode(archive: zip(entries.map(\.key), arrays).map { ($0, $1) })
        } catch {
            throw Diagnostic("cannot encode the arrays: \(error)", file: archive)
        }
        files.add(bytes, at: archive)
        files.add(try sidecar(sources: sources), at: Self.sidecarPath(for: archive))
    }
}
