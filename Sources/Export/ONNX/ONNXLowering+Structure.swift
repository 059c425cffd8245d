import CaffeFormat
import Graph

/// Layers that move or regroup values: Softmax, Concat, Reshape, Flatten, Split, Slice.
extension ONNXLowering {
    mutating func lowerStructure(_ node: Node) throws {
        let shape = inputShape(node)
        switch node.kind {
        case .softmax:
            // Caffe normalizes along one axis; so does ONNX's Softmax from opset 13.
            let axis = try node.axisAttribute()
            writer.node("Softmax", name: node.name, inputs: [input(node)], outputs: [output(node)], [Attribute.int("axis", axis)])
        case .concat:
            let axis = try node.axisAttribute()
            if axis == 0 { fixBatch(node, because: "concatenates along the batch axis") }
            writer.node("Concat", name: node.name, inputs: node.inputs.indices.map { input(node, $0) }, outputs: [output(node)],
                        [Attribute.int("axis", axis)])
        case .reshape:
            // Caffe's 0 / -1 / axis / num_axes rules were resolved by shape inference; use the result.
            _ = reshape(node, input(node), from: shape, to: outputShape(node), output: output(node))
        case .flatten:
            let out = outputShape(node)
            if out.count == 2, out[0] == shape.first, Int(node.layer.flattenParam.axis) == 1 {
                writer.node("Flatten", name: node.name, inputs: [input(node)], outputs: [output(node)], [Attribute.int("axis", 1)])
            } else {
                _ = reshape(node, input(node), from: shape, to: out, output: output(node))
            }
        case .split:
            for index in node.outputs.indices {
                writer.node("Identity", name: node.outputs.count == 1 ? node.name : "\(node.name)/\(index)", inputs: [input(node)], outputs: [output(node, index)])
            }
        case .slice:
            let axis = try node.axisAttribute()
            if axis == 0 { fixBatch(node, because: "slices the batch axis") }
            let sizes = node.outputs.indices.map { outputShape(node, $0)[axis] }
            writer.node("Split", name: node.name, inputs: [input(node), writer.int64s("\(node.name)/sizes", sizes)],
                        outputs: node.outputs.indices.map { output(node, $0) }, [Attribute.int("axis", axis)])
        default:
            throw unsupported(node)
        }
    }
}
