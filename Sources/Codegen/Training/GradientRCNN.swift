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
        try lowerPoolingOverROIsBackward(node) { lowering, operands in
            try lowering.base.emitPSROIPooling(node, backward: true, operands: operands)
        }
    }
}
