import Foundation
import NumPy

/// Appends nodes, constants and initializers to an `Onnx_GraphProto` while keeping every tensor
/// name and every node name unique — the only place that touches the generated ONNX messages.
///
/// Initializers keep Caffe's parameter keys (`conv1/0`, `conv1/1`) so an ONNX file and a
/// `swiftjit export --output` archive name the same blobs the same way.
struct ONNXGraphWriter {
    var graph = Onnx_GraphProto()
    private var tensorNames: Set<String> = []
    private var nodeNames: Set<String> = []

    init(name: String) {
        graph.name = name
    }

    /// Reserves `base`, or `base_1`, `base_2`… if taken.
    mutating func unique(_ base: String) -> String {
        Self.claim(base, in: &tensorNames)
    }

    private static func claim(_ base: String, in names: inout Set<String>) -> String {
        var name = base
        var counter = 0
        while names.contains(name) {
            counter += 1
            name = "\(base)_\(counter)"
        }
        names.insert(name)
        return name
    }

    @discardableResult
    mutating func initializer(_ base: String, _ array: NDArray) -> String {
        var tensor = Onnx_TensorProto()
        tensor.name = unique(base)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensor.dims = array.shape.map(Int64.init)
        tensor.rawData = array.data.withUnsafeBufferPointer { Data(buffer: $0) }
        graph.initializer.append(tensor)
        return tensor.name
    }

    /// A float constant (one value makes a scalar, which broadcasts).
    mutating func constant(_ base: String, _ values: [Float], shape: [Int]? = nil) -> String {
        initializer(base, NDArray(shape: shape ?? (values.count == 1 ? [] : [values.count]), data: values))
    }

    /// A 1-D int64 constant (shapes, pads, axes, repeats, split sizes).
    mutating func int64s(_ base: String, _ values: [Int]) -> String {
        var tensor = Onnx_TensorProto()
        tensor.name = unique(base)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        tensor.dims = [Int64(values.count)]
        tensor.int64Data = values.map(Int64.init)
        graph.initializer.append(tensor)
        return tensor.name
    }

    /// Adds a node. `outputs` are final tensor names (already unique); without them the node gets
    /// one fresh output named after `name`, which is returned.
    @discardableResult
    mutating func node(_ op: String, name: String, inputs: [String], outputs: [String]? = nil,
                       _ attributes: [Onnx_AttributeProto] = []) -> String {
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = Self.claim(name, in: &nodeNames)
        node.input = inputs
        node.output = outputs ?? [unique(name)]
        node.attribute = attributes
        graph.node.append(node)
        return node.output[0]
    }

    /// A float tensor's name and type; a nil extent becomes the symbol `symbols[axis]` (or unnamed).
    static func valueInfo(_ name: String, dims: [Int?], symbols: [Int: String] = [:]) -> Onnx_ValueInfoProto {
        var info = Onnx_ValueInfoProto()
        info.name = name
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        var shape = Onnx_TensorShapeProto()
        for (axis, extent) in dims.enumerated() {
            var dim = Onnx_TensorShapeProto.Dimension()
            if let extent { dim.dimValue = Int64(extent) } else if let symbol = symbols[axis] { dim.dimParam = symbol }
            shape.dim.append(dim)
        }
        tensor.shape = shape
        info.type.tensorType = tensor
        return info
    }
}

/// Builders for node attributes: `Attribute.ints("pads", [1, 1, 1, 1])`.
enum Attribute {
    static func int(_ name: String, _ value: Int) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .int
        a.i = Int64(value)
        return a
    }

    static func ints(_ name: String, _ values: [Int]) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .ints
        a.ints = values.map(Int64.init)
        return a
    }

    static func float(_ name: String, _ value: Float) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .float
        a.f = value
        return a
    }
}
