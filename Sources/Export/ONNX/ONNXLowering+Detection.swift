import CaffeFormat
import Graph

/// SSD's layers that ONNX can express (weiliu89/caffe): Permute → `Transpose`, Normalize →
/// `ReduceSumSquare`/`Add`/`Sqrt`/`Div`/`Mul` in Caffe's order, PriorBox → a constant (its output
/// depends only on the compiled shapes). DetectionOutput (NMS with a data-dependent row count) and
/// MultiBoxLoss (matching and mining) have no ONNX equivalent and are refused by name.
extension ONNXLowering {
    mutating func lowerDetection(_ node: Node) throws {
        let shape = inputShape(node)
        switch node.kind {
        case .permute:
            let order = try Permutation(node.layer.permuteParam, rank: shape.count).order
            if order.first != 0 { fixBatch(node, because: "moves the batch axis (order \(order))") }
            writer.node("Transpose", name: node.name, inputs: [input(node)], outputs: [output(node)], [Attribute.ints("perm", order)])
        case .normalize:
            let p = node.layer.normParam
            guard shape.count >= 2 else { throw unsupported(node, "its input \(TensorShape(shape)) has no channel axis") }
            let axes = p.acrossSpatial ? Array(1..<shape.count) : [1]
            let squares = reduce("ReduceSumSquare", input(node), axes: axes, keepDims: true, name: "\(node.name)/sumsq")
            let shifted = writer.node("Add", name: "\(node.name)/eps", inputs: [squares, writer.constant("\(node.name)/eps", [p.eps])])
            let norm = writer.node("Sqrt", name: "\(node.name)/norm", inputs: [shifted])
            let normalized = writer.node("Div", name: "\(node.name)/normalized", inputs: [input(node), norm])
            let channels = p.channelShared ? 1 : shape[1]
            let scale = try parameter(node, 0, reshapedTo: p.channelShared ? [1] : [channels] + Array(repeating: 1, count: shape.count - 2))
            writer.node("Mul", name: node.name, inputs: [normalized, scale], outputs: [output(node)])
        case .priorBox:
            let values = try PriorBoxGeometry(node.layer.priorBoxParam)
                .output(feature: shape, image: node.inputs.count > 1 ? inputShape(node, 1) : nil)
            let constant = writer.constant("\(node.name)/priors", values, shape: outputShape(node))
            writer.node("Identity", name: node.name, inputs: [constant], outputs: [output(node)])
        case .detectionOutput:
            throw unsupported(node, "ONNX has no operator for SSD's decoding, per-class NMS and keep_top_k with a data-dependent row count",
                              hint: "export the net without its DetectionOutput layer (its bottoms become the outputs) and run the NMS outside; nothing was written")
        case .multiBoxLoss:
            throw unsupported(node, "MultiBoxLoss (prior matching, hard-negative mining) is a training loss with no ONNX operator",
                              hint: "export the deploy prototxt (without losses); nothing was written")
        default:
            throw unsupported(node)
        }
    }
}
