/// Where each activation buffer of a `Program` lives in one arena, chosen from buffer lifetimes.
///
/// A buffer is live from the first step that touches it to the last; inputs are live from the start
/// and outputs to the end, and a checkpoint's live buffers across it. Two buffers may share arena space when their lifetimes do not overlap.
/// Placement is greedy: largest buffers first, each at the lowest 64-byte-aligned offset that does
/// not collide with an already placed buffer whose lifetime overlaps. For LeNet this keeps the two
/// or three largest activations instead of every blob (Caffe's layout).
///
///     let plan = MemoryPlan(program)
///     print(plan.arenaCount, plan.naiveCount)   // floats with reuse vs one buffer per blob
public struct MemoryPlan: Sendable {
    /// Arena offset (in floats) of each buffer; nil for constants, persistent and unused buffers.
    public var offsets: [Int?]
    /// The arena size in floats.
    public var arenaCount: Int
    /// The floats one-buffer-per-activation would need (what Caffe allocates).
    public var naiveCount: Int

    public init(_ program: Program) {
        let count = program.buffers.count
        var first = [Int](repeating: Int.max, count: count)
        var last = [Int](repeating: -1, count: count)
        func touch(_ buffer: BufferID, _ step: Int) {
            first[buffer] = min(first[buffer], step)
            last[buffer] = max(last[buffer], step)
        }
        for (index, step) in program.steps.enumerated() {
            for operand in step.operands { touch(operand.buffer, index + 1) }
        }
        for input in program.inputs { touch(input.buffer, 0) }
        for output in program.outputs { touch(output.buffer, program.steps.count + 1) }
        // A checkpoint's live buffers span it: alive in the step before and the step after.
        for checkpoint in program.checkpoints {
            for buffer in checkpoint.live {
                touch(buffer, checkpoint.step)
                touch(buffer, checkpoint.step + 1)
            }
        }

        var placed: [(offset: Int, end: Int, first: Int, last: Int)] = []
        var offsets = [Int?](repeating: nil, count: count)
        var arena = 0, naive = 0
        let order = (0..<count)
            .filter { program.buffers[$0].isActivation && last[$0] >= 0 }
            .sorted { (program.buffers[$0].count, -$0) > (program.buffers[$1].count, -$1) }
        for buffer in order {
            let size = AlignedBuffer.alignedCount(max(program.buffers[buffer].count, 1))
            naive += size
            let conflicts = placed
                .filter { $0.first <= last[buffer] && first[buffer] <= $0.last }
                .sorted { $0.offset < $1.offset }
            var offset = 0
            for other in conflicts where offset + size > other.offset {
                offset = max(offset, other.end)
            }
            offsets[buffer] = offset
            placed.append((offset, offset + size, first[buffer], last[buffer]))
            arena = max(arena, offset + size)
        }
        self.offsets = offsets
        self.arenaCount = arena
        self.naiveCount = naive
    }
}
