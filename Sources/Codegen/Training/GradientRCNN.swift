import Graph
import Runtime

extension TrainingLowering {
    // MARK: PSROIPooling (R-FCN)

    mutating func lowerPSROIPoolingForward(_ node: Node) throws {
        try base.emitPSROIPooling(node, backward: false, operands: [data(node.inputs[0]), data(node.inputs[1]), data(node.outputs[0])])
    }

    /// caffe-rfcn's `PSROIPoolingLayer::Backward_gpu`: the features' diff zeroed, then each bin's
    /// top diff over the bin's area added to every element of the bin; the ROIs get no diff (zero).
    /// Bins of different ROIs overlap, so the tasks run in order on one thread (the fork uses
    /// atomic adds).
    mutating func lowerPSROIPoolingBackward(_ node: Node) throws {
        if analysis.writesBottomDiff(node, 1) { try base.emitFill(node, bottomDiff(node, 1), count: count(node.inputs[1]), value: 0) }
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dy = try topDiff(node, node.outputs[0])
        let dx = bottomDiff(node, 0)
        try base.emitFill(node, dx, count: count(node.inputs[0]), value: 0)
        let first = base.program.steps.count
        try base.emitPSROIPooling(node, backward: true, operands: [data(node.inputs[0]), data(node.inputs[1]), dy, dx])
        for index in first..<base.program.steps.count {
            if case .kernel(var step) = base.program.steps[index].action {
                step.parallel = false
                base.program.steps[index].action = .kernel(step)
            }
        }
    }
}
