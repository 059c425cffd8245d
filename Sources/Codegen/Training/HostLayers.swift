import CaffeFormat
import Graph
import Runtime

/// A blob as a caller-implemented layer sees it during a pass: its shape and its memory.
public struct HostBlob {
    public var name: String
    public var shape: [Int]
    public var data: UnsafeMutablePointer<Float>
    public var diff: UnsafeMutablePointer<Float>?
}

/// Runs one caller-implemented ("Python") layer's forward (`backward` false: bottoms' data in,
/// tops' data out) or backward (tops' diffs in, bottoms' diffs out where `propagateDown`) inside a
/// compiled schedule. Returns false to stop the pass; the implementation keeps why.
public typealias HostLayerFunction = @Sendable (_ layer: String, _ backward: Bool, _ bottoms: [HostBlob], _ tops: [HostBlob],
                                                _ propagateDown: [Bool]) -> Bool

extension TrainingLowering {
    /// A Python layer's forward: one host step over its bottoms' and tops' data. The rest of the
    /// net stays JIT'd kernels; the step's addresses are resolved once, like every other step's.
    mutating func lowerHostForward(_ node: Node) throws {
        guard let host = hostLayer else {
            throw unsupported(node, "Python layers run only with a layer function", hint: "pass one (sj_options_set_layer_function)")
        }
        let operands = node.inputs.map { data($0) } + node.outputs.map { data($0) }
        let bottoms = node.inputs.map { (graph.values[$0].name, shape($0)) }, tops = node.outputs.map { (graph.values[$0].name, shape($0)) }
        let name = node.name
        base.program.steps.append(Step(label: node.name, .host(HostStep(operands: operands) { addresses in
            let b = bottoms.enumerated().map { HostBlob(name: $1.0, shape: $1.1, data: addresses[$0], diff: nil) }
            let t = tops.enumerated().map { HostBlob(name: $1.0, shape: $1.1, data: addresses[bottoms.count + $0], diff: nil) }
            return host(name, false, b, t, [])
        })))
    }

    /// A Python layer's backward: one host step over bottoms' data, tops' data and diffs, and
    /// bottoms' diffs (a scratch buffer for bottoms that take no diff).
    mutating func lowerHostBackward(_ node: Node) throws {
        guard let host = hostLayer else { return }
        let propagate = node.inputs.indices.map { analysis.writesBottomDiff(node, $0) }
        var operands = node.inputs.map { data($0) } + node.outputs.map { data($0) }
        for output in node.outputs { operands.append(try topDiff(node, output)) }
        for (j, input) in node.inputs.enumerated() {
            if propagate[j] {
                operands.append(bottomDiff(node, j))
            } else {
                operands.append(Operand(base.program.addBuffer("\(node.name) unused diff \(j)", count: max(1, count(input)))))
            }
        }
        let bottoms = node.inputs.map { (graph.values[$0].name, shape($0)) }, tops = node.outputs.map { (graph.values[$0].name, shape($0)) }
        let name = node.name
        base.program.steps.append(Step(label: node.name, .host(HostStep(operands: operands) { addresses in
            let n = bottoms.count, m = tops.count
            let b = bottoms.enumerated().map { HostBlob(name: $1.0, shape: $1.1, data: addresses[$0], diff: addresses[n + 2 * m + $0]) }
            let t = tops.enumerated().map { HostBlob(name: $1.0, shape: $1.1, data: addresses[n + $0], diff: addresses[n + m + $0]) }
            return host(name, true, b, t, propagate)
        })))
    }
}
