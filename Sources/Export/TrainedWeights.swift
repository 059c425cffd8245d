import CaffeFormat
import Graph
import NumPy

/// A caffemodel's parameter blobs, matched to a graph's layers the way Caffe copies them (by layer
/// name, shapes checked by `WeightBinding`) and decoded to float32 arrays in the graph's shapes.
///
/// Legacy 4-D blobs (`1 1 500 800` for an InnerProduct) come back in the shape the net declares
/// (`500×800`); `double_data` is narrowed to float. Every layer of the graph that has parameters
/// must be in the caffemodel: an export of filler values would look valid and be meaningless.
///
///     let weights = try TrainedWeights(graph: graph, weights: try CaffeFiles.loadWeights(path: w), file: w)
///     let kernel = try weights.blob(of: graph.node(named: "conv1")!, index: 0)   // 20×1×5×5
public struct TrainedWeights: Sendable {
    private var blobsByLayer: [String: [Caffe_BlobProto]] = [:]
    /// The caffemodel's path; nil when the net was given no weights.
    public let file: String?

    public init(graph: Graph, weights: Caffe_NetParameter, file: String?) throws {
        self.file = file
        let report = try WeightBinding.check(graph, weights: weights, file: file ?? "")
        if let missing = report.notInitialized.first {
            let kind = graph.node(named: missing)?.kind.rawValue ?? "?"
            guard file != nil else {
                throw Diagnostic("this \(kind) layer has parameters, and no weights were given", layer: missing,
                                 hint: "pass the trained .caffemodel with --weights")
            }
            throw Diagnostic("the caffemodel has no parameters for this \(kind) layer\(report.notInitialized.count > 1 ? " (nor for \(report.notInitialized.count - 1) more: \(report.notInitialized.dropFirst().prefix(3).joined(separator: ", "))\(report.notInitialized.count > 4 ? ", …" : ""))" : "")",
                             file: file, layer: missing,
                             hint: "Caffe copies weights by layer name: use the caffemodel trained for this net, or rename the layer in the prototxt to match it")
        }
        for layer in weights.layer where blobsByLayer[layer.name] == nil && !layer.blobs.isEmpty {
            blobsByLayer[layer.name] = layer.blobs
        }
    }

    /// Parameter blob `index` of `node`, shaped as the graph declares it.
    public func blob(of node: Node, index: Int) throws -> NDArray {
        guard let blobs = blobsByLayer[node.name], index < blobs.count, index < node.parameters.count else {
            throw Diagnostic("the caffemodel has no parameter \(index)", file: file, layer: node.name)
        }
        let blob = blobs[index]
        let values = blob.data.isEmpty ? blob.doubleData.map { Float($0) } : blob.data
        let shape = node.parameters[index].shape
        guard shape.isFullyKnown, shape.count == values.count else {
            throw Diagnostic("parameter \(index) has \(values.count) values, the net declares \(shape)", file: file, layer: node.name)
        }
        return NDArray(shape: shape.dims, data: values)
    }

    /// Every parameter blob of `node`, in Caffe's order.
    public func blobs(of node: Node) throws -> [NDArray] {
        try node.parameters.indices.map { try blob(of: node, index: $0) }
    }
}
