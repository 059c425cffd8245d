import Graph
import Runtime

/// The inference-side fork layers in training nets: YOLOv2's Reorg (trained: its backward is the
/// reverse mapping) and the layers the forks never train — py-faster-rcnn's proposal layer,
/// SSD's DetectionOutput and YOLOv2's Region. Those run their inference forward (so a train net
/// with a detection branch beside its loss compiles and runs) and stop gradients:
///
/// - Proposal: py-faster-rcnn's `ProposalLayer.backward` is `pass`, so its bottoms get nothing from
///   it; a bottom whose diff is wanted gets zero, with no error, as end-to-end Faster R-CNN training
///   relies on (the RPN learns from its own losses).
/// - DetectionOutput and Region: the forks leave `Backward_cpu` NOT_IMPLEMENTED, so when a loss
///   would need a gradient through one of them, `TrainingNet.run(backward: true)` fails with a
///   message naming the layer; on a branch no loss reads, backward never reaches them.
extension TrainingLowering {
    /// Reorg backward: the bottom diff is the top diff moved back (the other direction's mapping).
    mutating func lowerReorgBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let dy = try topDiff(node, node.outputs[0])
        try base.emitReorg(node, input: dy, output: bottomDiff(node, 0), reverse: !node.layer.reorgParam.reverse)
    }

    /// Proposal backward: zero into every bottom whose diff is wanted (`backward` is `pass`).
    mutating func lowerProposalBackward(_ node: Node) throws {
        for (j, input) in node.inputs.enumerated() where analysis.writesBottomDiff(node, j) {
            try base.emitFill(node, bottomDiff(node, j), count: count(input), value: 0)
        }
    }

    /// DetectionOutput and Region backward: the fork has none; an error only if a bottom needs one.
    mutating func lowerInferenceOnlyBackward(_ node: Node) {
        let fork = node.kind == .detectionOutput ? "weiliu89/caffe" : "the YOLOv2 Caffe ports"
        recordMissingBackward(node, "\(node.kind.rawValue) runs forward only (\(fork) leaves its Backward NOT_IMPLEMENTED), but a loss below it needs its gradient")
    }
}
