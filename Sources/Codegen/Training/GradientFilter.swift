import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Filter backward (`FilterLayer::Backward_cpu`): each filtered bottom's diff is zero in the
    /// rows the selector dropped and the top diff's rows in the rows it kept — a zero fill, then
    /// one scatter task per selected row through the indices the forward's selection kernel kept
    /// (distinct rows, so the tasks never collide). The variant's row count is the one its forward
    /// guard checked, so the scatter covers exactly this run's rows.
    ///
    /// Caffe aborts ("cannot backpropagate to filter index inputs") when the selector needs a
    /// diff — under `force_backward`, or when the selector comes from a layer that learns — so that
    /// is recorded as a problem `TrainingNet.run(backward: true)` reports. With no row selected,
    /// Caffe's backward divides by the top's row count (0/0, a crash); `Compiler` records
    /// that per variant (`zeroRowProblems`), as a run-time error naming the layer.
    mutating func lowerFilterBackward(_ node: Node) throws {
        let s = node.inputs.count - 1
        if analysis.writesBottomDiff(node, s) {
            backwardProblems.append(Diagnostic("Filter cannot backpropagate to its selector '\(graph.values[node.inputs[s]].name)' (Caffe aborts here too)",
                                               at: node.location, layer: node.name,
                                               hint: "give the Filter propagate_down: false for the selector (its last bottom), or remove force_backward"))
        }
        guard let selected = scratchBuffer(node, "selected") else { throw unsupported(node, "its forward kept no selected rows") }
        let n = shape(node.inputs[s]).first ?? 0, rows = shape(node.outputs[0]).first ?? 0
        for t in 0..<s where analysis.writesBottomDiff(node, t) {
            let inner = shape(node.inputs[t]).dropFirst().reduce(1, *)
            let dy = try topDiff(node, node.outputs[t])
            let dx = bottomDiff(node, t)
            try base.emitFill(node, dx, count: count(node.inputs[t]), value: 0)
            try base.emitKernel(node, "filter.scatter n\(n) rows\(rows) i\(inner)", operands: [dy, selected, dx], tasks: rows, work: rows * inner) { b in
                let (topDiff, index, result) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { row in
                    let target = b.max(b.index(0), b.min(b.int(index[row + 1]), b.index(n - 1)))
                    b.loop(0..<inner) { i in result[target * inner + i] = topDiff[row * inner + i] }
                }
            }
        }
    }
}
