import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// Input: its tops become the executable's inputs, fed by the caller on every run.
    mutating func lowerInput(_ node: Node) {
        for output in node.outputs {
            program.inputs.append(BlobBinding(name: graph.values[output].name, shape: shape(output), buffer: buffer(output)))
        }
    }

    /// Reshape and Flatten change only the shape: the top is a view of the bottom's buffer.
    /// Split's tops are views too (Caffe's `SplitLayer` shares data the same way).
    mutating func lowerView(_ node: Node) {
        let source = buffer(node.inputs[0])
        for output in node.outputs { bind(output, to: source) }
    }

    /// Concat: each bottom is copied as a block of rows into its slice of the concatenation axis.
    /// One task per outer index (the product of the axes before `axis`). With one outer index
    /// (batch 1 on the channel axis) a bottom whose buffer nothing needs after the Concat is not
    /// copied at all: the steps that wrote it are moved to write its slice of the top directly
    /// (`relocateIntoConcat`).
    mutating func lowerConcat(_ node: Node) throws {
        let output = node.outputs[0], dims = shape(output)
        let axis = try node.axisAttribute()
        let outer = dims[..<axis].reduce(1, *)
        let rowOut = dims[axis...].reduce(1, *)
        let target = buffer(output)
        var offset = 0
        var relocated: Set<BufferID> = []
        for input in node.inputs {
            let rowIn = shape(input)[axis...].reduce(1, *)
            if outer == 1, relocateIntoConcat(node, input: input, target: target, offset: offset, taken: &relocated) {
                offset += rowIn
                continue
            }
            try emitKernel(node, "copy.rows in\(rowIn) out\(rowOut)", operands: [Operand(buffer(input)), Operand(target, offset: offset)],
                           tasks: outer, work: outer * rowIn) { b in
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { row in
                    b.loop(0..<rowIn) { i in y[row * rowOut + i] = x[row * rowIn + i] }
                }
            }
            offset += rowIn
        }
    }

    /// Moves every step that touched `input`'s buffer into `target` at `offset`, when that is safe:
    /// concat-in-place is on, the buffer is an activation of exactly the bottom's size that only
    /// values dead after this Concat ever lived in (no caller reads it, no later layer), it is not a
    /// net input, no item loop names it, another bottom of this Concat does not share it, and the
    /// slice stays 64-byte aligned (kernels and OpenBLAS prefer aligned rows). The buffer is then
    /// touched by no step and the memory plan gives it no space.
    mutating func relocateIntoConcat(_ node: Node, input: ValueID, target: BufferID, offset: Int, taken: inout Set<BufferID>) -> Bool {
        guard concatInPlace, program.checkpoints.isEmpty, offset % 16 == 0 else { return false }
        let source = buffer(input)
        guard source != target, !taken.contains(source), program.buffers[source].isActivation,
              program.buffers[source].count == count(input),
              node.inputs.filter({ buffer($0) == source }).count == 1,
              valuesLiving(in: source).allSatisfy({ lastUse[$0] <= node.id }),
              !program.inputs.contains(where: { $0.buffer == source }),
              !program.steps.contains(where: { step in
                  if case .items(let loop) = step.action { return loop.body.flatMap(\.operands).contains { $0.buffer == source } }
                  return false
              }) else { return false }
        for index in program.steps.indices {
            program.steps[index].action = program.steps[index].action.relocating(source, into: target, offset: offset)
        }
        taken.insert(source)
        return true
    }

    /// Softmax along `axis`: per (outer, inner) position, subtract the maximum over the axis,
    /// exponentiate, and divide by the sum — Caffe's order of operations. One task per position;
    /// safe in place (each position reads its inputs before writing them).
    mutating func lowerSoftmax(_ node: Node) throws {
        let input = node.inputs[0]
        let (outer, channels, inner) = try softmaxSplit(node, input)
        let source = buffer(input)
        let output = elementwiseOutput(node)
        try emitSoftmax(node, input: Operand(source), output: Operand(output), outer: outer, channels: channels, inner: inner)
    }

    /// Softmax along the middle axis of an outer × channels × inner layout, as Caffe orders it:
    /// subtract the maximum, exponentiate, divide by the sum. One task per (outer, inner) position;
    /// safe in place. Also the forward of the training compiler's Softmax and SoftmaxWithLoss.
    mutating func emitSoftmax(_ node: Node, input: Operand, output: Operand, outer: Int, channels: Int, inner: Int) throws {
        try emitKernel(node, "softmax c\(channels) i\(inner)", operands: [input, output],
                       tasks: outer * inner, work: outer * inner * channels * 4) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.forEachTask { position in
                let base = inner == 1 ? position * channels : (position / inner) * (channels * inner) + position % inner
                let maximum = b.variable(x[base])
                b.loop(0..<channels) { j in maximum.value = b.max(maximum.value, x[base + j * inner]) }
                let sum = b.variable(b.constant(0))
                b.loop(0..<channels) { j in
                    let e = b.exp(x[base + j * inner] - maximum.value)
                    y[base + j * inner] = e
                    sum.value = sum.value + e
                }
                let total = sum.value
                b.loop(0..<channels) { j in y[base + j * inner] = y[base + j * inner] / total }
            }
        }
    }
}
