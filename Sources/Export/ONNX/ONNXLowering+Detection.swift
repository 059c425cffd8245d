import CaffeFormat
import Graph

/// SSD's layers that ONNX can express (weiliu89/caffe): Permute → `Transpose`, Normalize →
/// `ReduceSumSquare`/`Add`/`Sqrt`/`Div`/`Mul` in Caffe's order, PriorBox → a constant (its output
/// depends only on the compiled shapes), and YOLOv2's Reorg → `Reshape`/`Transpose`/`Reshape`.
/// DetectionOutput (NMS with a data-dependent row count) and MultiBoxLoss (matching and mining)
/// have no ONNX equivalent and are refused by name.
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
        case .reorg:
            try lowerReorg(node)
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

    /// Reorg (YOLOv2's passthrough, darknet's `reorg_cpu` as the Caffe forks call it with the
    /// bottom's W, H, C): not ONNX's `SpaceToDepth`. With C' = C/s², the bottom's values read as a
    /// C'×(H·s)×(W·s) map land at channel (oy·s + ox)·C' + c of an s²·C'×H×W map — a Reshape to
    /// N×C'×H×s×W×s, a Transpose to N×s×s×C'×H×W and a Reshape to the top's N×C·s²×H/s×W/s (the
    /// same values in the same order as the bottom's extents). `reverse` runs the same mapping the
    /// other way: N×s×s×C'×H×W → N×C'×H×s×W×s → the top's N×C'×H·s×W·s. The batch stays dynamic.
    mutating func lowerReorg(_ node: Node) throws {
        let shape = inputShape(node), s = Int(node.layer.reorgParam.stride)
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        guard c % (s * s) == 0 else {
            throw unsupported(node, "its \(c) channels are not a multiple of stride² (\(s * s)); darknet's index mapping then reads across channels and images in a way no Reshape/Transpose reproduces",
                              hint: "give the Reorg a bottom whose channels are a multiple of \(s * s) (YOLOv2's has 64); nothing was written")
        }
        let groups = c / (s * s)
        let (blocks, order) = node.layer.reorgParam.reverse ? ([n, s, s, groups, h, w], [0, 3, 4, 1, 5, 2]) : ([n, groups, h, s, w, s], [0, 3, 5, 1, 2, 4])
        let split = reshape(node, input(node), from: shape, to: blocks)
        let moved = writer.node("Transpose", name: "\(node.name)/transpose", inputs: [split], [Attribute.ints("perm", order)])
        _ = reshape(node, moved, from: [n, c, h, w], to: outputShape(node), output: output(node))
    }
}
