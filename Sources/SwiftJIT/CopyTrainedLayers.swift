/// Caffe's `Net::CopyTrainedLayersFrom`, for every place that starts a net from a caffemodel
/// (`Net`, `Trainer`, `swiftjit test`, `swiftjit time --backward`).
///
/// Layers are matched by name and checked blob by blob (`WeightBinding.check`, which throws the
/// explained shape-mismatch error); copied blobs take the net's parameter shapes, so legacy 4-D dims
/// (`1 1 64 392`) land in a 64×392 weight. Layers the caffemodel does not name keep `others`' values;
/// `others` is only evaluated when there are such layers, so a complete caffemodel costs no fillers.
public enum TrainedLayers {
    public static func copy(from path: String, into graph: Graph,
                            others: () throws -> [String: [NDArray]]) throws -> [String: [NDArray]] {
        try copy(from: try CaffeFiles.loadWeights(path: path), file: path, into: graph, others: others)
    }

    /// The same for a caffemodel already decoded; `file` names it in errors.
    public static func copy(from model: Caffe_NetParameter, file path: String, into graph: Graph,
                            others: () throws -> [String: [NDArray]]) throws -> [String: [NDArray]] {
        let report = try WeightBinding.check(graph, weights: model, file: path)
        let loaded = try CaffeParameters.arrays(from: model)
        var values = report.notInitialized.isEmpty ? [:] : try others()
        for name in report.initialized {
            guard let node = graph.node(named: name), let blobs = loaded[name] else { continue }
            // The net's shape where it is known; where only data can tell an extent (a Data layer's
            // image size before its LMDB is read), the caffemodel's, which the check above matched.
            values[name] = zip(blobs, node.parameters).map { blob, parameter in
                NDArray(shape: parameter.shape.isFullyKnown ? parameter.shape.dims : blob.shape, data: blob.data)
            }
        }
        return values
    }
}
