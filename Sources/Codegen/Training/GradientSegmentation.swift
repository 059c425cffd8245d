import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Upsample backward (SegNet's `UpsampleLayer::Backward_cpu`): each value's diff is the top
    /// diff at the position its mask names (0 for a position outside the plane, where Caffe
    /// aborts). The mask takes no gradient (Caffe never writes its diff).
    mutating func lowerUpsampleBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dims = shape(node.inputs[0]), outDims = shape(node.outputs[0])
        let planes = dims[0] * dims[1], inner = dims[2] * dims[3], outer = outDims[2] * outDims[3]
        let dy = try topDiff(node, node.outputs[0])
        let mask = data(node.inputs[1])
        let dx = bottomDiff(node, 0)
        try base.emitKernel(node, "upsample.grad i\(inner) o\(outer)", operands: [dy, mask, dx], tasks: planes, work: planes * inner) { b in
            let (topDiff, mask, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                b.loop(0..<inner) { i in
                    let index = b.int(mask[plane * inner + i])
                    let inside = index >= 0 && index < outer
                    let clamped = b.max(b.index(0), b.min(index, b.index(outer - 1)))
                    result[plane * inner + i] = b.select(inside, topDiff[plane * outer + clamped], b.constant(0))
                }
            }
        }
    }
}
