import CaffeFormat
import NumPy

/// Reads a caffemodel's parameter blobs into arrays by layer name, for `Compiler.compile`.
public enum CaffeParameters {
    /// Each layer's blobs in order, from `data` (or `double_data`, narrowed to float), shaped by
    /// `shape { dim }` or the legacy num/channels/height/width fields. Layers without blobs are
    /// left out; a layer name that appears twice keeps its first occurrence, as Caffe copies it.
    public static func arrays(from net: Caffe_NetParameter) throws -> [String: [NDArray]] {
        var result: [String: [NDArray]] = [:]
        for layer in net.layer where !layer.blobs.isEmpty && result[layer.name] == nil {
            result[layer.name] = try layer.blobs.enumerated().map { index, blob in
                let values = blob.data.isEmpty ? blob.doubleData.map(Float.init) : blob.data
                var dims = WeightBinding.declaredShape(blob).dims
                if !blob.hasShape, dims.isEmpty { dims = [values.count] }
                // A corrupt file may declare negative extents or ones whose product overflows.
                let declared = TensorShape(dims).count.flatMap { count in dims.allSatisfy { $0 >= 0 } ? count : nil }
                guard declared == values.count else {
                    throw Diagnostic("blob \(index) declares \(dims.map(String.init).joined(separator: "×")) = \(declared.map(String.init) ?? "an impossible number of") values but stores \(values.count)",
                                     layer: layer.name, hint: "the caffemodel is corrupt or truncated; re-export it")
                }
                return NDArray(shape: dims, data: values)
            }
        }
        return result
    }
}
