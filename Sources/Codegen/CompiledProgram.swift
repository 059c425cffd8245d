import Foundation
import Graph
import Runtime

/// A net compiled for fixed input shapes, before any memory for running it exists: the schedule of
/// JIT'd kernels and GEMMs, its memory plan, and its read-only constants (weights, packed panels,
/// transformed filters) in a `ConstantStore`. It is immutable and thread-safe.
///
/// A program is what a model keeps per input shape; an execution context (`CompiledNet`) is what a
/// thread runs. `makeContext()` allocates one context's arena and resolves the schedule's
/// operands to pointers — no lowering, no kernel compilation, no copy of any constant — so a
/// service can hold one program and as many contexts as it runs requests at once, each costing
/// only its planned arena.
///
///     let program = try compiler.compileProgram(graph: graph, parameters: weights, constants: store)
///     let a = try program.makeContext(), b = try program.makeContext()   // share every constant
///     let outputs = try a.run(inputs: ["data": x])
public final class CompiledProgram: @unchecked Sendable {
    /// The schedule, with every constant materialized in the store (`prepared`).
    public let program: Program
    /// The arena layout every context of this program uses.
    public let memoryPlan: MemoryPlan
    /// Where this compilation's kernels came from (compiled, disk cache, already in the process).
    public let kernels: KernelStatistics
    /// Wall time of the compilation, graph to program (lowering, kernels, constants).
    public let compileSeconds: Double
    /// `compileSeconds` by phase (`executable` here is materializing the constants).
    public let phases: CompilePhases
    /// Keeps the JIT, and so the kernels' code, alive.
    let cache: KernelCache
    let pool: ThreadPool
    let blas: BLAS
    let rowGuards: [RowGuard]
    let inputChecks: [InputCheck]
    /// For a net with Filter layers: compiles the variant for a row-count vector whose counts from
    /// index `k` on are guesses, sharing the constants of a context's first executable.
    let respecialize: (([Int], Int, Executable) throws -> CompiledNet.Variant)?

    init(program: Program, cache: KernelCache, pool: ThreadPool, blas: BLAS, kernels: KernelStatistics, compileSeconds: Double,
         phases: CompilePhases, rowGuards: [RowGuard], inputChecks: [InputCheck],
         respecialize: (([Int], Int, Executable) throws -> CompiledNet.Variant)?) {
        self.program = program
        memoryPlan = MemoryPlan(program)
        self.cache = cache
        self.pool = pool
        self.blas = blas
        self.kernels = kernels
        self.compileSeconds = compileSeconds
        self.phases = phases
        self.rowGuards = rowGuards
        self.inputChecks = inputChecks
        self.respecialize = respecialize
    }

    /// The blobs a context takes, with their shapes.
    public var inputs: [BlobBinding] { program.inputs }
    /// The blobs a context can return, with their shapes.
    public var outputs: [BlobBinding] { program.outputs }
    /// Bytes of one context's activation arena.
    public var arenaBytes: Int { memoryPlan.arenaCount * MemoryLayout<Float>.stride }

    /// A new execution context: its own arena, this program's kernels and constants.
    public func makeContext() throws -> CompiledNet {
        let start = DispatchTime.now().uptimeNanoseconds
        let executable = try makeExecutable(sharingBuffersWith: nil)
        let variant = CompiledNet.Variant(executable: executable, rowGuards: rowGuards, inputChecks: inputChecks)
        let rows = respecialize.map { respecialize in
            RowSpecializer(variant) { rows, guessesFrom in try respecialize(rows, guessesFrom, executable) }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var phases = self.phases
        phases.executable += seconds
        return CompiledNet(first: variant, program: self, kernels: kernels, compileSeconds: compileSeconds + seconds, phases: phases, rows: rows)
    }

    /// This program's schedule over a new arena (persistent buffers shared with `other` when given;
    /// training adopts another net's parameter memory for the buffers in `adopting`).
    func makeExecutable(sharingBuffersWith other: Executable?, adopting: [BufferID: AlignedBuffer] = [:]) throws -> Executable {
        try Executable(program, plan: memoryPlan, pool: pool, blas: blas, sharingBuffersWith: other, adopting: adopting)
    }
}
