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
        case gemm(GemmStep, a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>, c: UnsafeMutablePointer<Float>,
                  split: GemmSplit, epilogue: Epilogue?)
        case items(count: Int, body: [LoopAction])
        /// A host call with its operands' addresses.
        case host(HostStep, UnsafeMutablePointer<UnsafeMutablePointer<Float>>)
        /// A step the one before it runs (an epilogue run per GEMM row block).
        case runByPrevious
    }

    /// A per-row epilogue the GEMM step before it runs on each row block, right after the block.
    private struct Epilogue {
        var function: KernelFunction
        var arguments: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    }

    /// An operand of an item loop: its address for item 0 on thread 0, how far it moves per item,
    /// and how far apart the threads' private slices are (0 for shared buffers).
    private struct LoopOperand {
        var base: UnsafeMutablePointer<Float>
        var itemStride: Int
        var slice: Int

        func address(item: Int, chunk: Int) -> UnsafeMutablePointer<Float> { base + item * itemStride + chunk * slice }
    }

    private enum LoopAction {
        case kernel(KernelFunction, [LoopOperand], taskCount: Int, slicesTasks: Bool)
        case gemm(GemmStep, a: LoopOperand, b: LoopOperand, c: LoopOperand)
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
    ///
    /// `plan`, when given, is `MemoryPlan(program)` computed once by the caller (a program that many
    /// executables are made from). `adopted` gives persistent buffers memory owned elsewhere (another
    /// net's parameters, for Caffe's `ShareTrainedLayersWith`): each must hold at least the declared count.
    public init(_ program: Program, plan: MemoryPlan? = nil, pool: ThreadPool, blas: BLAS, sharingBuffersWith other: Executable? = nil,
                adopting adopted: [BufferID: AlignedBuffer] = [:]) throws {
        try Executable.validate(program, threads: pool.threadCount)
        self.pool = pool
        self.blas = blas
        inputs = program.inputs
        outputs = program.outputs
        steps = program.steps
        memoryPlan = plan ?? MemoryPlan(program)
        arena = try AlignedBuffer(count: memoryPlan.arenaCount)
        var owned: [BufferID: (name: String, isPersistent: Bool, buffer: AlignedBuffer)] = [:]
        var bases: [UnsafeMutablePointer<Float>] = []
        for (index, declaration) in program.buffers.enumerated() {
            if declaration.isPersistent, let buffer = adopted[index], buffer.count >= declaration.count {
                owned[index] = (declaration.name, true, buffer)
                bases.append(buffer.pointer)
            } else if !declaration.isActivation, let shared = other?.owned[index], shared.name == declaration.name,
               shared.isPersistent == declaration.isPersistent, shared.buffer.count == declaration.count,
               declaration.isPersistent || Executable.sameValues(declaration, shared.buffer) {
                owned[index] = shared
                bases.append(shared.buffer.pointer)
            } else if declaration.isPersistent {
                let buffer = try AlignedBuffer(count: declaration.count)
                if let values = declaration.constant { buffer.pointer.update(from: values, count: min(values.count, declaration.count)) }
                owned[index] = (declaration.name, true, buffer)
                bases.append(buffer.pointer)
            } else if let prepared = declaration.prepared {
                owned[index] = (declaration.name, false, prepared)
                bases.append(prepared.pointer)
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
        func arguments(_ k: KernelStep) -> UnsafeMutablePointer<UnsafeMutablePointer<Float>?> {
            let arguments = UnsafeMutablePointer<UnsafeMutablePointer<Float>?>.allocate(capacity: max(1, k.operands.count))
            for (i, operand) in k.operands.enumerated() { arguments[i] = bases[operand.buffer] + operand.offset }
            return arguments
        }
        // A per-row epilogue right after a GEMM that keeps whole rows per block is run by that GEMM
        // (its own entry becomes `.runByPrevious`).
        var takenByGemm = Set<Int>()
        resolved = program.steps.indices.map { index in
            switch program.steps[index].action {
            case .kernel(let k):
                if takenByGemm.contains(index) { return .runByPrevious }
                return .kernel(k.kernel.function!, arguments(k), taskCount: k.taskCount, parallel: k.parallel)  // validate refused nil
            case .gemm(let g):
                let split = GemmSplit(g, threads: pool.threadCount)
                var epilogue: Epilogue?
                if split.keepsWholeRows, index + 1 < program.steps.count, case .kernel(let k) = program.steps[index + 1].action, k.rowsOfGemm {
                    epilogue = Epilogue(function: k.kernel.function!, arguments: arguments(k))
                    takenByGemm.insert(index + 1)
                }
                return .gemm(g, a: bases[g.a.buffer] + g.a.offset, b: bases[g.b.buffer] + g.b.offset, c: bases[g.c.buffer] + g.c.offset,
                             split: split, epilogue: epilogue)
            case .host(let h):
                let addresses = UnsafeMutablePointer<UnsafeMutablePointer<Float>>.allocate(capacity: max(1, h.operands.count))
                for (i, operand) in h.operands.enumerated() { (addresses + i).initialize(to: bases[operand.buffer] + operand.offset) }
                return .host(h, addresses)
            case .items(let loop):
                func operand(_ o: Operand) -> LoopOperand {
                    LoopOperand(base: bases[o.buffer] + o.offset, itemStride: loop.strides[o.buffer] ?? 0, slice: loop.privateSlices[o.buffer] ?? 0)
                }
                return .items(count: loop.items, body: loop.body.compactMap { action in
                    switch action {
                    case .kernel(let k):
                        let tasks = loop.taskSlices ? k.taskCount / max(1, loop.items) : k.taskCount
                        return .kernel(k.kernel.function!, k.operands.map(operand), taskCount: tasks, slicesTasks: loop.taskSlices)
                    case .gemm(let g): return .gemm(g, a: operand(g.a), b: operand(g.b), c: operand(g.c))
                    case .items, .host: return nil  // rejected by validate
                    }
                })
            }
        }
    }

    deinit {
        for step in resolved {
            if case .kernel(_, let arguments, _, _) = step { arguments.deallocate() }
            if case .gemm(_, _, _, _, _, let epilogue?) = step { epilogue.arguments.deallocate() }
            if case .host(_, let addresses) = step { addresses.deallocate() }
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
    /// False when a host step asked to stop the pass.
    @discardableResult
    private func execute(_ index: Int) -> Bool {
        switch resolved[index] {
        case let .host(step, addresses):
            return step.function(UnsafePointer(addresses))
        case let .kernel(function, arguments, taskCount, parallel):
            if parallel {
                let args = UnsafePointer(arguments)
                pool.parallelFor(taskCount: taskCount) { range in
                    function(args, Int64(range.lowerBound), Int64(range.upperBound))
                }
            } else {
                function(arguments, 0, Int64(taskCount))
            }
        case .runByPrevious:
            break
        case let .gemm(g, a, b, c, split, epilogue):
            switch split {
            case .serial:
                for r in 0..<g.repeats { gemmBlock(g, a, b, c, repeat: r, rows: 0..<g.m, columns: 0..<g.n) }
                if let epilogue { epilogue.function(epilogue.arguments, 0, Int64(g.m)) }
            case .repeats:
                pool.parallelFor(taskCount: g.repeats) { range in
                    for r in range { self.gemmBlock(g, a, b, c, repeat: r, rows: 0..<g.m, columns: 0..<g.n) }
                }
            case .columns(let blocks, let width):
                pool.parallelFor(taskCount: blocks) { range in
                    let columns = range.lowerBound * width..<min(g.n, range.upperBound * width)
                    for r in 0..<g.repeats { self.gemmBlock(g, a, b, c, repeat: r, rows: 0..<g.m, columns: columns) }
                }
            case .rows(let blocks, let height):
                pool.parallelFor(taskCount: blocks) { range in
                    let rows = range.lowerBound * height..<min(g.m, range.upperBound * height)
                    for r in 0..<g.repeats { self.gemmBlock(g, a, b, c, repeat: r, rows: rows, columns: 0..<g.n) }
                    if let epilogue { epilogue.function(epilogue.arguments, Int64(rows.lowerBound), Int64(rows.upperBound)) }
                }
            }
        case let .items(count, body):
            pool.parallelChunks(taskCount: count) { chunk, range in
                for item in range {
                    for action in body { self.run(action, item: item, chunk: chunk) }
                }
            }
        }
        return true
    }

    /// One action of an item loop for `item`, on the calling thread, using slice `chunk` of the
    /// private buffers.
    private func run(_ action: LoopAction, item: Int, chunk: Int) {
        switch action {
        case let .kernel(function, operands, taskCount, slicesTasks):
            let first = slicesTasks ? item * taskCount : 0
            withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<Float>?.self, capacity: max(1, operands.count)) { arguments in
                for (i, operand) in operands.enumerated() {
                    // A task-sliced kernel finds its item through its tasks, so its operands stay put.
                    arguments[i] = slicesTasks ? operand.address(item: 0, chunk: chunk) : operand.address(item: item, chunk: chunk)
                }
                function(UnsafePointer(arguments.baseAddress), Int64(first), Int64(first + taskCount))
            }
        case let .gemm(g, a, b, c):
            for r in 0..<g.repeats {
                gemmBlock(g, a.address(item: item, chunk: chunk), b.address(item: item, chunk: chunk), c.address(item: item, chunk: chunk),
                          repeat: r, rows: 0..<g.m, columns: 0..<g.n)
            }
        }
    }

    /// One block of repeat `r` of a GEMM step: rows `rows` and columns `columns` of C, on the
    /// calling thread. A single-row product goes to GEMV, which streams the matrix once instead of
    /// packing it (4× faster for a batch-1 InnerProduct).
    private func gemmBlock(_ g: GemmStep, _ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>,
                           _ c: UnsafeMutablePointer<Float>, repeat r: Int, rows: Range<Int>, columns: Range<Int>) {
        guard !rows.isEmpty, !columns.isEmpty else { return }
        let a = a + r * g.strideA + (g.transA ? rows.lowerBound : rows.lowerBound * g.lda)
        let b = b + r * g.strideB + (g.transB ? columns.lowerBound * g.ldb : columns.lowerBound)
        let c = c + r * g.strideC + rows.lowerBound * g.ldc + columns.lowerBound
        if rows.count == 1 {
            // c (1 × n) = a (1 × k) · op(B): with B stored n × k that is B · a, otherwise Bᵀ · a.
            blas.sgemv(trans: !g.transB, rows: g.transB ? columns.count : g.k, columns: g.transB ? g.k : columns.count,
                       alpha: g.alpha, a: b, lda: g.ldb, x: a, incX: g.transA ? g.lda : 1, beta: g.beta, y: c)
        } else {
            blas.sgemm(transA: g.transA, transB: g.transB, m: rows.count, n: columns.count, k: g.k, alpha: g.alpha,
                       a: a, lda: g.lda, b: b, ldb: g.ldb, beta: g.beta, c: c, ldc: g.ldc)
        }
    }

    /// Where buffer `id` lives: its arena slot, or its own memory for constant and persistent buffers.
    /// Valid for the executable's lifetime. Arena slots are shared by buffers whose lifetimes do not
    /// overlap, so read or write an activation only when no run is in progress and only when the
    /// program keeps it live there (an input, an output, or a buffer the caller manages itself).
    public func pointer(to id: BufferID) -> UnsafeMutablePointer<Float> {
        bases[id]
    }

    /// The memory of persistent buffer `id` (to share it with another executable), or nil.
    public func persistentBuffer(_ id: BufferID) -> AlignedBuffer? {
        owned[id].flatMap { $0.isPersistent ? $0.buffer : nil }
    }

    /// Runs steps `range` of the schedule in order, with no input copying or output reading: the
    /// caller has written the inputs through `pointer(to:)` and reads results the same way. Lets a
    /// training net run its forward steps alone, or forward and backward. Returns false when a
    /// host step stopped the pass (the steps after it did not run).
    @discardableResult
    public func execute(steps range: Range<Int>) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        for index in range.clamped(to: resolved.indices) where !execute(index) { return false }
        return true
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

    private static func validate(_ program: Program, threads: Int) throws {
        let buffers = program.buffers
        for step in program.steps {
            let kernels: [Step.Action]
            if case .items(let loop) = step.action { kernels = loop.body } else { kernels = [step.action] }
            for case .kernel(let k) in kernels where k.kernel.function == nil {
                throw RuntimeError("step '\(step.label)' calls kernel \(k.kernel.name), which has not been compiled",
                                   hint: "compile the lowering's kernel batch before building the executable")
            }
        }
        func check(_ operand: Operand, extent: Int, in label: String) throws {
            guard buffers.indices.contains(operand.buffer) else {
                throw RuntimeError("step '\(label)' names buffer \(operand.buffer), but the program declares \(buffers.count)")
            }
            guard operand.offset >= 0, operand.offset + extent <= buffers[operand.buffer].count else {
                throw RuntimeError("step '\(label)' reaches elements \(operand.offset)..<\(operand.offset + extent) of '\(buffers[operand.buffer].name)', which has \(buffers[operand.buffer].count)")
            }
        }
        /// `reach` is how far past an operand's item-0 address the action may go (item loops).
        func checkAction(_ action: Step.Action, in label: String, reach: (BufferID) -> Int) throws {
            switch action {
            case .kernel(let k):
                for operand in k.operands {
                    try check(operand, extent: buffers.indices.contains(operand.buffer) ? reach(operand.buffer) : 0, in: label)
                }
            case .host(let h):
                for operand in h.operands { try check(operand, extent: 0, in: label) }
            case .gemm(let g):
                for (operand, extent, isWrite) in g.extents {
                    try check(operand, extent: extent + (buffers.indices.contains(operand.buffer) ? reach(operand.buffer) : 0), in: label)
                    if isWrite, buffers[operand.buffer].isConstant {
                        throw RuntimeError("step '\(label)' writes the constant buffer '\(buffers[operand.buffer].name)'")
                    }
                }
            case .items(let loop):
                for inner in loop.body {
                    if case .items = inner { throw RuntimeError("step '\(label)' nests an item loop in an item loop") }
                    if case .host = inner { throw RuntimeError("step '\(label)' calls the host inside an item loop") }
                    try checkAction(inner, in: label) { buffer in
                        (loop.items - 1) * (loop.strides[buffer] ?? 0) + (threads - 1) * (loop.privateSlices[buffer] ?? 0)
                    }
                }
            }
        }
        for step in program.steps { try checkAction(step.action, in: step.label) { _ in 0 } }
        for binding in program.inputs + program.outputs {
            guard buffers.indices.contains(binding.buffer), !buffers[binding.buffer].isConstant, buffers[binding.buffer].prepared == nil,
                  let count = Tensor.elementCount(binding.shape), count <= buffers[binding.buffer].count else {
                throw RuntimeError("blob '\(binding.name)' \(format(binding.shape)) does not fit its buffer")
            }
        }
    }

    /// True when a constant declaration holds exactly the values of `buffer` (so a sibling's copy
    /// can serve).
    private static func sameValues(_ declaration: BufferDeclaration, _ buffer: AlignedBuffer) -> Bool {
        let bytes = declaration.count * MemoryLayout<Float>.stride
        if let prepared = declaration.prepared {
            return prepared === buffer || (prepared.count == buffer.count && memcmp(prepared.pointer, buffer.pointer, bytes) == 0)
        }
        guard let values = declaration.constant, values.count == declaration.count else { return false }
        return values.withUnsafeBufferPointer { values.isEmpty || memcmp($0.baseAddress!, buffer.pointer, bytes) == 0 }
    }

    /// How a GEMM step is shared among the pool's threads, chosen once per step from its shape: each
    /// block is an independent single-threaded product over a slice of C's rows (when A is tall and C
    /// not much wider), columns (when C is wide), or whole repeats (convolution groups). Blocks are
    /// multiples of 16 so every thread's slice stays aligned to OpenBLAS's AVX-512 tiles. Measured on
    /// ResNet-50's 1×1 products (N = 196 or 49): rows 200 GFLOP/s on two cores, columns 142–178.
    enum GemmSplit: Equatable {
        case serial
        case repeats
        case columns(blocks: Int, width: Int)
        case rows(blocks: Int, height: Int)

        /// Whether every block holds whole rows of C, so that it can run a per-row epilogue itself.
        var keepsWholeRows: Bool {
            switch self {
            case .serial, .rows: return true
            case .columns, .repeats: return false
            }
        }

        /// Products smaller than this many multiply-adds are not worth waking a thread for.
        static let parallelWork = 1 << 18

        init(_ g: GemmStep, threads: Int) {
            let work = g.m * g.n * g.k * g.repeats
            guard threads > 1, work >= GemmSplit.parallelWork else { self = .serial; return }
            if g.repeats >= threads {
                self = .repeats
            } else if g.m >= 64 * threads, g.n <= 8 * g.m {
                // Row blocks: each thread packs its own share of A (usually the weights) and all of B,
                // which is the cheaper duplicate while B is not much wider than A is tall; heights are
                // multiples of 16 so neither thread gets a ragged tile.
                let height = ((g.m + threads - 1) / threads + 15) / 16 * 16
                self = .rows(blocks: (g.m + height - 1) / height, height: height)
            } else if g.n >= 64 * threads {
                let width = (g.n + threads - 1) / threads
                let aligned = (width + 15) / 16 * 16
                self = .columns(blocks: (g.n + aligned - 1) / aligned, width: aligned)
            } else if g.m >= 16 * threads {
                let height = (g.m + threads - 1) / threads
                self = .rows(blocks: (g.m + height - 1) / height, height: height)
            } else {
                self = .serial
            }
        }
    }

    static func format(_ shape: [Int]) -> String {
        shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "×")
    }
}
