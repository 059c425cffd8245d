import Foundation

/// A ready-to-run program: one planned arena of activations, constant buffers, and a flat schedule
/// of steps (JIT'd kernel calls and BLAS GEMMs) resolved to raw pointers once, at creation.
///
/// `run(inputs:)` copies each input into its arena slot, runs every step in order (kernels split
/// across the `ThreadPool` when the program asked for it), and copies the requested outputs out.
/// An executable is not reentrant: one `run` at a time (calls are serialized by a lock). The kernels
/// it calls must outlive it; its creator (the compiler's `CompiledNet`) keeps their JIT alive.
///
///     let executable = try Executable(program, pool: pool, blas: blas)
///     let outputs = try executable.run(inputs: ["data": image])
public final class Executable: @unchecked Sendable {
    /// The blobs `run` accepts, with their shapes.
    public let inputs: [BlobBinding]
    /// The blobs `run` can return, with their shapes.
    public let outputs: [BlobBinding]
    /// The arena layout chosen for the activations.
    public let memoryPlan: MemoryPlan
    /// The schedule's labels and kinds, for profiles.
    public let steps: [Step]

    private let pool: ThreadPool
    private let blas: BLAS
    private let arena: AlignedBuffer
    /// The memory of each constant and persistent buffer, with the name and kind it was declared
    /// with (what `sharingBuffersWith` matches on).
    private let owned: [BufferID: (name: String, isPersistent: Bool, buffer: AlignedBuffer)]
    private let bases: [UnsafeMutablePointer<Float>]
    private let resolved: [ResolvedStep]
    private let lock = NSLock()

    private enum ResolvedStep {
        case kernel(KernelFunction, UnsafeMutablePointer<UnsafeMutablePointer<Float>?>, taskCount: Int, parallel: Bool)
        case gemm(GemmStep, a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, c: UnsafeMutablePointer<Float>)
    }

    /// Plans memory, allocates the arena and constants, and resolves every operand to a pointer.
    /// Throws when the program is inconsistent (an operand out of a buffer's bounds, a binding whose
    /// shape does not fit its buffer) or memory cannot be allocated.
    ///
    /// With `other` (an executable compiled from the same net for other shapes), a persistent
    /// buffer declared with the same id, name and size as one of `other`'s uses that memory — so
    /// parameters, their diffs and running statistics are one state however many shape variants
    /// run it — and so does a constant with the same id, name and values (weights are not copied
    /// again). Other buffers are this executable's own.
    public init(_ program: Program, pool: ThreadPool, blas: BLAS, sharingBuffersWith other: Executable? = nil) throws {
        try Executable.validate(program)
        self.pool = pool
        self.blas = blas
        inputs = program.inputs
        outputs = program.outputs
        steps = program.steps
        memoryPlan = MemoryPlan(program)
        arena = try AlignedBuffer(count: memoryPlan.arenaCount)
        var owned: [BufferID: (name: String, isPersistent: Bool, buffer: AlignedBuffer)] = [:]
        var bases: [UnsafeMutablePointer<Float>] = []
        for (index, declaration) in program.buffers.enumerated() {
            if !declaration.isActivation, let shared = other?.owned[index], shared.name == declaration.name,
               shared.isPersistent == declaration.isPersistent, shared.buffer.count == declaration.count,
               declaration.isPersistent || declaration.constant!.withUnsafeBufferPointer({ values in
                   values.count == declaration.count && (values.isEmpty || memcmp(values.baseAddress!, shared.buffer.pointer, values.count * MemoryLayout<Float>.stride) == 0)
               }) {
                owned[index] = shared
                bases.append(shared.buffer.pointer)
            } else if declaration.isPersistent {
                let buffer = try AlignedBuffer(count: declaration.count)
                if let values = declaration.constant { buffer.pointer.update(from: values, count: min(values.count, declaration.count)) }
                owned[index] = (declaration.name, true, buffer)
                bases.append(buffer.pointer)
            } else if let values = declaration.constant {
                let buffer = try AlignedBuffer(copying: values)
                owned[index] = (declaration.name, false, buffer)
                bases.append(buffer.pointer)
            } else {
                bases.append(arena.pointer + (memoryPlan.offsets[index] ?? 0))
            }
        }
        self.owned = owned
        self.bases = bases
        resolved = program.steps.map { step in
            switch step.action {
            case .kernel(let k):
                let arguments = UnsafeMutablePointer<UnsafeMutablePointer<Float>?>.allocate(capacity: max(1, k.operands.count))
                for (i, operand) in k.operands.enumerated() { arguments[i] = bases[operand.buffer] + operand.offset }
                return .kernel(k.kernel.function, arguments, taskCount: k.taskCount, parallel: k.parallel)
            case .gemm(let g):
                return .gemm(g, a: bases[g.a.buffer] + g.a.offset, b: bases[g.b.buffer] + g.b.offset, c: bases[g.c.buffer] + g.c.offset)
            }
        }
    }

    deinit {
        for step in resolved {
            if case .kernel(_, let arguments, _, _) = step { arguments.deallocate() }
        }
    }

    /// Runs the schedule once. `inputs` must hold every input blob by name, each with exactly its
    /// declared shape; returns the output blobs named in `requested` (all outputs when nil).
    public func run(inputs given: [String: Tensor], requested: [String]? = nil) throws -> [String: Tensor] {
        lock.lock()
        defer { lock.unlock() }
        for input in inputs {
            guard let tensor = given[input.name] else {
                throw RuntimeError("missing input '\(input.name)' (shape \(Executable.format(input.shape)))",
                                   hint: "pass it by name; the net's inputs are " + inputs.map { "'\($0.name)'" }.joined(separator: ", "))
            }
            guard tensor.shape == input.shape else {
                throw RuntimeError("input '\(input.name)' has shape \(Executable.format(tensor.shape)), but the net was compiled for \(Executable.format(input.shape))",
                                   hint: "reshape the input, or compile the net for that shape")
            }
            bases[input.buffer].update(from: tensor.buffer.pointer, count: tensor.count)
        }
        if let unknown = given.keys.sorted().first(where: { name in !inputs.contains { $0.name == name } }) {
            throw RuntimeError("'\(unknown)' is not an input of this net",
                               hint: "its inputs are " + inputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        for index in resolved.indices { execute(index) }

        var results: [String: Tensor] = [:]
        let wanted = requested ?? outputs.map(\.name)
        for name in wanted {
            guard let output = outputs.last(where: { $0.name == name }) else {
                throw RuntimeError("blob '\(name)' is not kept by this executable",
                                   hint: "compile the net keeping it (or all blobs) to read it back")
            }
            let tensor = try Tensor(shape: output.shape)
            tensor.buffer.pointer.update(from: bases[output.buffer], count: tensor.count)
            results[name] = tensor
        }
        return results
    }

    /// Runs step `index` alone (the caller has fed the inputs); used by `run` and by profilers.
    private func execute(_ index: Int) {
        switch resolved[index] {
        case let .kernel(function, arguments, taskCount, parallel):
            if parallel {
                let args = UnsafePointer(arguments)
                pool.parallelFor(taskCount: taskCount) { range in
                    function(args, Int64(range.lowerBound), Int64(range.upperBound))
                }
            } else {
                function(arguments, 0, Int64(taskCount))
            }
        case let .gemm(g, a, b, c):
            for r in 0..<g.repeats {
                blas.sgemm(transA: g.transA, transB: g.transB, m: g.m, n: g.n, k: g.k, alpha: g.alpha,
                           a: a + r * g.strideA, lda: g.lda, b: b + r * g.strideB, ldb: g.ldb,
                           beta: g.beta, c: c + r * g.strideC, ldc: g.ldc)
            }
        }
    }

    /// Where buffer `id` lives: its arena slot, or its own memory for constant and persistent buffers.
    /// Valid for the executable's lifetime. Arena slots are shared by buffers whose lifetimes do not
    /// overlap, so read or write an activation only when no run is in progress and only when the
    /// program keeps it live there (an input, an output, or a buffer the caller manages itself).
    public func pointer(to id: BufferID) -> UnsafeMutablePointer<Float> {
        bases[id]
    }

    /// Runs steps `range` of the schedule in order, with no input copying or output reading: the
    /// caller has written the inputs through `pointer(to:)` and reads results the same way. Lets a
    /// training net run its forward steps alone, or forward and backward.
    public func execute(steps range: Range<Int>) {
        lock.lock()
        defer { lock.unlock() }
        for index in range.clamped(to: resolved.indices) { execute(index) }
    }

    /// Seconds each step took in one run over the current arena contents (inputs as last fed), for
    /// `swiftjit time`-style reports; labels are in `steps`.
    public func profileSteps() -> [Double] {
        lock.lock()
        defer { lock.unlock() }
        return resolved.indices.map { index in
            let start = DispatchTime.now().uptimeNanoseconds
            execute(index)
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
    }

    private static func validate(_ program: Program) throws {
        let buffers = program.buffers
        func check(_ operand: Operand, extent: Int, in label: String) throws {
            guard buffers.indices.contains(operand.buffer) else {
                throw RuntimeError("step '\(label)' names buffer \(operand.buffer), but the program declares \(buffers.count)")
            }
            guard operand.offset >= 0, operand.offset + extent <= buffers[operand.buffer].count else {
                throw RuntimeError("step '\(label)' reaches elements \(operand.offset)..<\(operand.offset + extent) of '\(buffers[operand.buffer].name)', which has \(buffers[operand.buffer].count)")
            }
        }
        for step in program.steps {
            switch step.action {
            case .kernel(let k):
                for operand in k.operands { try check(operand, extent: 0, in: step.label) }
            case .gemm(let g):
                for (operand, extent, isWrite) in g.extents {
                    try check(operand, extent: extent, in: step.label)
                    if isWrite, buffers[operand.buffer].constant != nil, !buffers[operand.buffer].isPersistent {
                        throw RuntimeError("step '\(step.label)' writes the constant buffer '\(buffers[operand.buffer].name)'")
                    }
                }
            }
        }
        for binding in program.inputs + program.outputs {
            guard buffers.indices.contains(binding.buffer), buffers[binding.buffer].constant == nil,
                  let count = Tensor.elementCount(binding.shape), count <= buffers[binding.buffer].count else {
                throw RuntimeError("blob '\(binding.name)' \(format(binding.shape)) does not fit its buffer")
            }
        }
    }

    static func format(_ shape: [Int]) -> String {
        shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "×")
    }
}
