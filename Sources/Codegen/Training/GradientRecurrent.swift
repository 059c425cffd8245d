import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// LSTMUnit's sigmoid and tanh, as its own source defines them: `1/(1 + e^−x)` and
    /// `2·sigmoid(2x) − 1` (not the Sigmoid layer's tanh form).
    private static func sigmoid(_ b: KernelBuilder, _ x: Scalar) -> Scalar { 1 / (1 + b.exp(-x)) }
    private static func tanh(_ b: KernelBuilder, _ x: Scalar) -> Scalar { 2 * sigmoid(b, 2 * x) - 1 }

    /// LSTMUnit's (N, hidden) split of `c_prev` (1 × N × hidden).
    private func lstmUnitSplit(_ node: Node) throws -> (n: Int, hidden: Int) {
        let dims = shape(node.inputs[0])
        guard dims.count == 3, dims[0] == 1, count(node.inputs[1]) == 4 * count(node.inputs[0]), count(node.inputs[2]) == dims[1] else {
            throw Diagnostic("LSTMUnit needs c_prev 1×N×D, gates 1×N×4D and cont 1×N; got \(dims), \(shape(node.inputs[1])), \(shape(node.inputs[2]))",
                             at: node.location, layer: node.name)
        }
        return (dims[1], dims[2])
    }

    /// LSTMUnit forward, gates (i, f, o, g) per sample: `c = f·c_prev + i·g` with f zeroed where
    /// `cont` is 0 (and scaled by it otherwise), `h = o·tanh(c)`. One task per sample.
    mutating func lowerLSTMUnitForward(_ node: Node) throws {
        let (n, d) = try lstmUnitSplit(node)
        let operands = [data(node.inputs[0]), data(node.inputs[1]), data(node.inputs[2]), data(node.outputs[0]), data(node.outputs[1])]
        try base.emitKernel(node, "lstmunit d\(d)", operands: operands, tasks: n, work: n * d * 8) { b in
            let (previous, x, cont, c, h) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3), b.operand(4))
            b.forEachTask { sample in
                let gates = sample * (4 * d), keep = cont[sample]
                b.loop(0..<d) { k in
                    let i = Self.sigmoid(b, x[gates + k])
                    let f = b.select(b.equal(keep, b.constant(0)), b.constant(0), keep * Self.sigmoid(b, x[gates + d + k]))
                    let o = Self.sigmoid(b, x[gates + 2 * d + k])
                    let g = Self.tanh(b, x[gates + 3 * d + k])
                    let value = f * previous[sample * d + k] + i * g
                    c[sample * d + k] = value
                    h[sample * d + k] = o * Self.tanh(b, value)
                }
            }
        }
    }

    /// LSTMUnit backward: with `dc = dC + dH·o·(1 − tanh²c)`, `dc_prev = dc·f`, and the gate
    /// pre-activations' diffs `dc·g·i(1−i)`, `dc·c_prev·f(1−f)`, `dH·tanh c·o(1−o)`, `dc·i·(1−g²)`.
    mutating func lowerLSTMUnitBackward(_ node: Node) throws {
        try refuseBackward(node, into: [2], "sequence indicator")
        let wantsPrevious = analysis.writesBottomDiff(node, 0), wantsGates = analysis.writesBottomDiff(node, 1)
        guard wantsPrevious || wantsGates else { return }
        let (n, d) = try lstmUnitSplit(node)
        let dc = try topDiff(node, node.outputs[0]), dh = try topDiff(node, node.outputs[1])
        let previousDiff = wantsPrevious ? bottomDiff(node, 0) : Operand(base.scratch(node, "c_prev diff", count: count(node.inputs[0])))
        let gatesDiff = wantsGates ? bottomDiff(node, 1) : Operand(base.scratch(node, "gates diff", count: count(node.inputs[1])))
        let operands = [data(node.inputs[0]), data(node.inputs[1]), data(node.inputs[2]), data(node.outputs[0]), dc, dh, previousDiff, gatesDiff]
        try base.emitKernel(node, "lstmunit.grad d\(d)", operands: operands, tasks: n, work: n * d * 12) { b in
            let (previous, x, cont, c) = (b.operand(0), b.operand(1), b.operand(2), b.operand(3))
            let (cDiff, hDiff, previousResult, gatesResult) = (b.operand(4), b.operand(5), b.operand(6), b.operand(7))
            b.forEachTask { sample in
                let gates = sample * (4 * d), keep = cont[sample]
                b.loop(0..<d) { k in
                    let at = sample * d + k
                    let i = Self.sigmoid(b, x[gates + k])
                    let f = b.select(b.equal(keep, b.constant(0)), b.constant(0), keep * Self.sigmoid(b, x[gates + d + k]))
                    let o = Self.sigmoid(b, x[gates + 2 * d + k])
                    let g = Self.tanh(b, x[gates + 3 * d + k])
                    let tanhC = Self.tanh(b, c[at])
                    let term = cDiff[at] + hDiff[at] * o * (1 - tanhC * tanhC)
                    previousResult[at] = term * f
                    gatesResult[gates + k] = term * g * i * (1 - i)
                    gatesResult[gates + d + k] = term * previous[at] * f * (1 - f)
                    gatesResult[gates + 2 * d + k] = hDiff[at] * tanhC * o * (1 - o)
                    gatesResult[gates + 3 * d + k] = term * i * (1 - g * g)
                }
            }
        }
    }
}
