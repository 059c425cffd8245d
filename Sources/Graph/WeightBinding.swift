import CaffeFormat

/// Which layers a `.caffemodel` initializes in a graph, checked the way Caffe's
/// `Net::CopyTrainedLayersFrom` copies: by layer name, blob by blob, shapes compared exactly — except
/// that legacy 4-D blob dims (`num channels height width`, e.g. `1 1 4096 25088` for an
/// InnerProduct) match any shape of at most 4 axes that equals them once padded with leading 1s.
public struct WeightBindingReport: Sendable {
    /// Target layers with parameters whose every blob comes from the caffemodel, in net order.
    public var initialized: [String] = []
    /// Target layers with parameters that the caffemodel does not name (filled by their fillers).
    public var notInitialized: [String] = []
    /// Caffemodel layers that the net does not have (ignored, as Caffe does).
    public var ignored: [String] = []
}

/// Matching a caffemodel's blobs against a graph's parameters.
public enum WeightBinding {
    /// The shape a stored blob declares: `shape { dim }` or the legacy num/channels/height/width.
    public static func declaredShape(_ blob: Caffe_BlobProto) -> TensorShape {
        if blob.hasShape { return TensorShape(blob.shape.dim.map(Int.init)) }
        if isLegacy(blob) { return TensorShape([Int(blob.num), Int(blob.channels), Int(blob.height), Int(blob.width)]) }
        return TensorShape([])
    }

    static func isLegacy(_ blob: Caffe_BlobProto) -> Bool {
        !blob.hasShape && (blob.hasNum || blob.hasChannels || blob.hasHeight || blob.hasWidth)
    }

    /// Caffe's `Blob::ShapeEquals(const BlobProto&)`.
    public static func matches(_ blob: Caffe_BlobProto, target: TensorShape) -> Bool {
        guard target.isFullyKnown else { return true }
        if isLegacy(blob) {
            guard target.rank <= 4 else { return false }
            let padded = Array(repeating: 1, count: 4 - target.rank) + target.dims
            return padded == [Int(blob.num), Int(blob.channels), Int(blob.height), Int(blob.width)]
        }
        return declaredShape(blob) == target
    }

    /// Number of values stored in the blob (`data` or `double_data`).
    public static func storedCount(_ blob: Caffe_BlobProto) -> Int {
        blob.data.isEmpty ? blob.doubleData.count : blob.data.count
    }

    /// Checks every caffemodel layer whose name the graph has; throws a `Diagnostic` for the first
    /// mismatch (blob count, shape, or stored value count) naming layer, param index, both shapes,
    /// where the target's input size comes from, and Caffe's remedy.
    public static func check(_ graph: Graph, weights: Caffe_NetParameter, file: String) throws -> WeightBindingReport {
        var report = WeightBindingReport()
        var sourceByName: [String: Caffe_LayerParameter] = [:]
        for layer in weights.layer where sourceByName[layer.name] == nil { sourceByName[layer.name] = layer }
        let targetNames = Set(graph.nodes.map(\.name))
        report.ignored = weights.layer.map(\.name).filter { !targetNames.contains($0) }
        for node in graph.nodes where !node.parameters.isEmpty {
            guard let source = sourceByName[node.name], !source.blobs.isEmpty else {
                report.notInitialized.append(node.name)
                continue
            }
            guard source.blobs.count == node.parameters.count else {
                throw Diagnostic("the caffemodel has \(source.blobs.count) parameter blob\(source.blobs.count == 1 ? "" : "s") for this layer, the net needs \(node.parameters.count) (\(node.parameters.map(\.role).joined(separator: ", ")))",
                                 file: file, layer: node.name,
                                 hint: "check bias_term and the layer type; or rename the layer to learn its parameters from scratch instead of copying them")
            }
            for (index, (blob, parameter)) in zip(source.blobs, node.parameters).enumerated() {
                if !matches(blob, target: parameter.shape) {
                    throw mismatch(node: node, index: index, source: declaredShape(blob), legacy: isLegacy(blob),
                                   target: parameter, graph: graph, file: file)
                }
                let expected = parameter.shape.count ?? storedCount(blob)
                let stored = storedCount(blob)
                if stored != expected {
                    throw Diagnostic("param \(index) (\(parameter.role)) declares \(declaredShape(blob)) = \(expected) values but stores \(stored)",
                                     file: file, layer: node.name, hint: "the caffemodel is corrupt or was truncated; re-export it")
                }
            }
            report.initialized.append(node.name)
        }
        return report
    }

    private static func mismatch(node: Node, index: Int, source: TensorShape, legacy: Bool, target: ParameterInfo,
                                 graph: Graph, file: String) -> Diagnostic {
        var message = "cannot copy param \(index) (\(target.role)): the caffemodel's blob is \(source)\(legacy ? " (legacy num×channels×height×width)" : ""), the net's is \(target.shape)"
        if node.kind == .innerProduct, index == 0, source.rank >= 2, let trained = source.count(from: source.rank - 1) {
            let transposed = node.layer.innerProductParam.transpose
            let inputs = transposed ? source[source.rank - 2] : trained
            message += " (it was trained on \(inputs) input values per item)"
        }
        if let input = node.inputs.first {
            let value = graph.values[input]
            message += "; the net's shape follows from its input " + Provenance.explain(value.id, in: graph)
        }
        return Diagnostic(message, file: file, layer: node.name,
                          hint: "Caffe copies parameters by layer name: to learn '\(node.name)' from scratch instead, rename the layer; to reuse these weights, make its input match the shape they were trained for")
    }
}

/// Explains where a blob's shape comes from, walking back through the layers that changed it.
public enum Provenance {
    /// `'pool5' 1×128×9×9 (10368 values per item), made by layer 'conv_proj' (Convolution kernel 1 pad 1),
    /// whose pad 1 grows its 1×128×7×7 input 'roi_pool' to 9×9`.
    public static func explain(_ id: ValueID, in graph: Graph) -> String {
        let value = graph.values[id]
        var text = "'\(value.name)' \(value.shape)"
        if let perItem = value.shape.count(from: 1), value.shape.rank > 1 {
            text += " (\(perItem) = \(value.shape.dims.dropFirst().map(String.init).joined(separator: "×")) values per item)"
        }
        // Walk back past in-place and shape-preserving layers to the layer that set the spatial size.
        var current = value
        var steps = 0
        while let producerID = current.producer, steps < 64 {
            steps += 1
            let producer = graph.nodes[producerID]
            guard let inputID = producer.inputs.first else {
                text += ", a net input from layer '\(producer.name)' (\(producer.kind.rawValue))"
                break
            }
            let input = graph.values[inputID]
            if input.shape == current.shape || producer.kind == .split {
                current = input
                continue
            }
            text += ", made by layer '\(producer.name)' (\(producer.kind.rawValue)\(describeAttributes(producer, input: input.shape)))"
            text += " from '\(input.name)' \(input.shape)"
            if producer.kind == .convolution, input.shape.rank == current.shape.rank, input.shape.rank > 2,
               case .convolution(let g) = producer.attributes {
                let inSpatial = input.shape.dims[(g.channelAxis + 1)...], outSpatial = current.shape.dims[(g.channelAxis + 1)...]
                if zip(inSpatial, outSpatial).contains(where: { $1 > $0 }) {
                    text += " — its pad \(g.pad.map(String.init).joined(separator: "×")) grows a \(g.kernel.map(String.init).joined(separator: "×")) convolution's output from \(inSpatial.map(String.init).joined(separator: "×")) to \(outSpatial.map(String.init).joined(separator: "×"))"
                }
            }
            break
        }
        return text
    }

    private static func describeAttributes(_ node: Node, input: TensorShape) -> String {
        switch node.kind {
        case .convolution, .deconvolution:
            guard case .convolution(let g) = node.attributes else { return "" }
            return " " + g.summary
        case .pooling:
            let p = node.layer.poolingParam
            if p.globalPooling { return " global" }
            return " kernel \(p.hasKernelSize ? p.kernelSize : p.kernelH) stride \(p.stride)" + (p.pad > 0 ? " pad \(p.pad)" : "")
        case .roiPooling:
            let p = node.layer.roiPoolingParam
            return " \(p.pooledH)×\(p.pooledW)"
        default:
            return ""
        }
    }
}
