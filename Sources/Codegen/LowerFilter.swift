import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Filter (`FilterLayer::Reshape` + `Forward_cpu`): the rows whose selector value is non-zero
    /// (C truthiness: NaN selects, ±0 does not), in order, of every bottom but the last.
    ///
    /// Two steps with a `RowGuard` between them. A one-task selection kernel scans the selector
    /// and writes the count, then the chosen row indices, into a scratch buffer (`selected`:
    /// `[count, i₀, i₁, …]`, indices as exact floats). The guard lets the driver compare that count
    /// with the rows the rest of the schedule was compiled for (the graph's first axis of the tops:
    /// N at setup) and re-specialize when they differ (`RowSpecializer`). Then one gather kernel
    /// per top copies the chosen rows, one task per row. The gather clamps each index into `0..<N`,
    /// so even a schedule run past its guard without the check (a profiler) reads only the bottom.
    mutating func lowerFilter(_ node: Node) throws {
        let s = node.inputs.count - 1
        let selector = node.inputs[s]
        let n = shape(selector).first ?? 0
        guard n < 1 << 24 else {
            throw unsupported(node, "its selector has \(n) rows; row indices are kept as exact floats, up to 2^24")
        }
        let selected = scratch(node, "selected", count: n + 1)
        try emitKernel(node, "filter.select n\(n)", operands: [Operand(buffer(selector)), Operand(selected)], tasks: 1, work: n) { b in
            let (choice, out) = (b.operand(0), b.operand(1))
            b.forEachTask { _ in
                let count = b.variable(b.constant(0))
                b.loop(0..<n) { i in
                    b.when(b.not(b.equal(choice[i], b.constant(0)))) {
                        out[b.int(count.value) + 1] = b.float(i)
                        count.value = count.value + 1
                    }
                }
                out[b.index(0)] = count.value
            }
        }
        let rows = shape(node.outputs[0]).first ?? 0
        rowGuards.append(RowGuard(layer: node.name, node: node.id, axis: 0, step: program.steps.count, count: Operand(selected),
                                  rows: rows, prefixBuffers: program.buffers.count))
        for (input, output) in zip(node.inputs[..<s], node.outputs) {
            let inner = shape(input).dropFirst().reduce(1, *)
            let operands = [Operand(buffer(input)), Operand(selected), Operand(buffer(output))]
            try emitKernel(node, "filter.gather n\(n) rows\(rows) i\(inner)", operands: operands, tasks: rows, work: rows * inner) { b in
                let (x, index, y) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { row in
                    let source = b.max(b.index(0), b.min(b.int(index[row + 1]), b.index(n - 1)))
                    b.loop(0..<inner) { i in y[row * inner + i] = x[source * inner + i] }
                }
            }
        }
    }
}
