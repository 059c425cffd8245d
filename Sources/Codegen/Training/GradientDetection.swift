import CaffeFormat
import Graph
import Runtime

/// SSD's layers in training nets (weiliu89/caffe): MultiBoxLoss forward and backward, and the
/// two layers its train net needs between the heads and the loss — Permute (backward: the
/// inverse permutation of the top diff) and PriorBox (forward only, as in the fork, whose
/// `Backward_cpu` returns without touching its bottoms).
extension TrainingLowering {
    /// PriorBox backward: nothing flows through priors; a bottom whose diff is wanted (under
    /// `force_backward`) gets zero, the diff Caffe leaves untouched.
    mutating func lowerPriorBoxBackward(_ node: Node) throws {
        for (j, input) in node.inputs.enumerated() where analysis.writesBottomDiff(node, j) {
            try base.emitFill(node, bottomDiff(node, j), count: count(input), value: 0)
        }
    }

    /// Permute backward (`PermuteLayer::Backward_cpu`): the top diff permuted back by the inverse order.
    mutating func lowerPermuteBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        try lowerAxisPermutationBackward(node, order: Permutation(node.layer.permuteParam, rank: shape(node.inputs[0]).count).order)
    }

    /// MultiBoxLoss backward (`MultiBoxLossLayer::Backward_cpu`): the inner losses' gradients the
    /// forward kept, times `top diff / normalizer` (the fork's `caffe_scal`), into loc and conf;
    /// refuses a diff into the priors or the ground truth as the fork does.
    mutating func lowerMultiBoxLossBackward(_ node: Node) throws {
        for (j, what) in [(2, "prior"), (3, "label")] where analysis.writesBottomDiff(node, j) {
            throw Diagnostic("MultiBoxLoss cannot backpropagate to its \(what) input (bottom \(j))", at: node.location, layer: node.name,
                             hint: "set propagate_down: true propagate_down: true propagate_down: false propagate_down: false, as SSD's train nets do")
        }
        guard let normalizer = scratchBuffer(node, "normalizer") else { throw unsupported(node, "its forward kept no gradients") }
        for (j, what) in [(0, "loc gradient"), (1, "conf gradient")] where analysis.writesBottomDiff(node, j) {
            guard let gradient = scratchBuffer(node, what) else { throw unsupported(node, "its forward kept no \(what)") }
            let dy = try topDiff(node, node.outputs[0])
            let dx = bottomDiff(node, j), elements = count(node.inputs[j])
            try base.emitKernel(node, "multibox.backward", operands: [gradient, dy, normalizer, dx], tasks: elements, work: elements) { b in
                let (g, topDiff, divisor, result) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
                b.forEachTask { i in result[i] = g[i] * (topDiff[b.index(0)] / divisor[b.index(0)]) }
            }
        }
    }
}
