import Testing
@testable import Runtime

@Suite("Runtime")
struct RuntimeTests {
    @Test("aligned buffers start zeroed on a 64-byte boundary")
    func alignment() throws {
        for count in [0, 1, 17, 1000] {
            let buffer = try AlignedBuffer(count: count)
            #expect(Int(bitPattern: buffer.pointer) % 64 == 0)
            #expect(buffer.values.allSatisfy { $0 == 0 })
        }
    }

    @Test("parallel-for covers every task exactly once, in contiguous chunks")
    func parallelFor() {
        let pool = ThreadPool(threads: 3)
        for taskCount in [1, 2, 3, 7, 100] {
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: taskCount)
            hits.initialize(repeating: 0, count: taskCount)
            pool.parallelFor(taskCount: taskCount) { range in
                for i in range { hits[i] += 1 }
            }
            #expect((0..<taskCount).allSatisfy { hits[$0] == 1 })
            hits.deallocate()
        }
        #expect(ThreadPool.chunkRange(0, of: 3, taskCount: 7) == 0..<3)
        #expect(ThreadPool.chunkRange(2, of: 3, taskCount: 7) == 5..<7)
    }

    @Test("a nested parallel-for runs serially instead of deadlocking")
    func nested() {
        let pool = ThreadPool(threads: 2)
        let total = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        total.initialize(repeating: 0, count: 4)
        pool.parallelFor(taskCount: 2) { outer in
            for o in outer {
                pool.parallelFor(taskCount: 2) { inner in
                    for i in inner { total[o * 2 + i] += 1 }
                }
            }
        }
        #expect((0..<4).allSatisfy { total[$0] == 1 })
        total.deallocate()
    }

    /// `a → b → c` through two 1×1 GEMMs with a constant `w`: input `a`, output `c`.
    static func chain() -> (program: Program, a: BufferID, b: BufferID, c: BufferID, w: BufferID) {
        var program = Program()
        let a = program.addBuffer("a", count: 100)
        let b = program.addBuffer("b", count: 100)
        let c = program.addBuffer("c", count: 100)
        let w = program.addConstant("w", values: [1])
        func gemm(_ x: BufferID, _ y: BufferID) -> Step {
            Step(label: "g", .gemm(GemmStep(m: 1, n: 1, k: 1, a: Operand(x), lda: 1, b: Operand(w), ldb: 1, c: Operand(y), ldc: 1)))
        }
        program.steps = [gemm(a, b), gemm(b, c)]
        program.inputs = [BlobBinding(name: "a", shape: [100], buffer: a)]
        program.outputs = [BlobBinding(name: "c", shape: [100], buffer: c)]
        return (program, a, b, c, w)
    }

    @Test("the memory plan reuses a dead buffer and keeps overlapping ones apart")
    func memoryPlan() {
        let (program, a, b, c, w) = Self.chain()
        let plan = MemoryPlan(program)
        #expect(plan.offsets[a] == plan.offsets[c])
        #expect(plan.offsets[a] != plan.offsets[b])
        #expect(plan.offsets[w] == nil)
        #expect(plan.arenaCount == 2 * 112)
        #expect(plan.naiveCount == 3 * 112)
    }

    @Test("a checkpoint's live buffer keeps its slot across the checkpoint even when no later step reads it")
    func checkpointPins() {
        let chain = Self.chain()
        var program = chain.program
        let (a, b, c) = (chain.a, chain.b, chain.c)
        #expect(MemoryPlan(program).offsets[a] == MemoryPlan(program).offsets[c])
        // A driver stopping after step 1 needs `a` afterwards: it must not share c's slot.
        program.checkpoints = [Checkpoint(step: 1, live: [a])]
        let plan = MemoryPlan(program)
        #expect(plan.offsets[a] != plan.offsets[c])
        #expect(plan.offsets[a] != plan.offsets[b])
    }

    @Test("an executable shares persistent buffers and equal constants with a sibling, and nothing else")
    func sharing() throws {
        func program(weights: [Float], state: Int) -> Program {
            var program = Program()
            let x = program.addBuffer("x", count: 4)
            let w = program.addConstant("w", values: weights)
            let p = program.addPersistent("p", count: state, values: Array(repeating: 5, count: state))
            program.steps = [Step(label: "ip", .gemm(GemmStep(m: 2, n: 2, k: 2, a: Operand(x), lda: 2, b: Operand(w), ldb: 2, c: Operand(p), ldc: 2)))]
            program.inputs = [BlobBinding(name: "x", shape: [2, 2], buffer: x)]
            return program
        }
        let (pool, blas) = (ThreadPool(threads: 1), BLAS(threads: 1))
        let first = try Executable(program(weights: [1, 2, 3, 4], state: 4), pool: pool, blas: blas)
        first.pointer(to: 2)[0] = 7
        let same = try Executable(program(weights: [1, 2, 3, 4], state: 4), pool: pool, blas: blas, sharingBuffersWith: first)
        #expect(same.pointer(to: 1) == first.pointer(to: 1))
        #expect(same.pointer(to: 2) == first.pointer(to: 2) && same.pointer(to: 2)[0] == 7)
        #expect(same.pointer(to: 0) != first.pointer(to: 0))
        let other = try Executable(program(weights: [1, 2, 3, 5], state: 6), pool: pool, blas: blas, sharingBuffersWith: first)
        #expect(other.pointer(to: 1) != first.pointer(to: 1) && other.pointer(to: 1)[3] == 5)
        #expect(other.pointer(to: 2) != first.pointer(to: 2) && other.pointer(to: 2)[0] == 5)
    }

    @Test("an executable runs BLAS steps and names a missing or misshapen input")
    func executable() throws {
        var program = Program()
        let x = program.addBuffer("x", count: 4)
        let w = program.addConstant("w", values: [1, 2, 3, 4])
        let y = program.addBuffer("y", count: 4)
        program.steps = [Step(label: "ip", .gemm(GemmStep(m: 2, n: 2, k: 2, a: Operand(x), lda: 2, b: Operand(w), ldb: 2, c: Operand(y), ldc: 2)))]
        program.inputs = [BlobBinding(name: "x", shape: [2, 2], buffer: x)]
        program.outputs = [BlobBinding(name: "y", shape: [2, 2], buffer: y)]
        let executable = try Executable(program, pool: ThreadPool(threads: 2), blas: BLAS(threads: 1))
        let out = try executable.run(inputs: ["x": Tensor(shape: [2, 2], values: [1, 0, 0, 1])])
        #expect(out["y"]?.values == [1, 2, 3, 4])
        #expect(throws: RuntimeError.self) { try executable.run(inputs: [:]) }
        do {
            _ = try executable.run(inputs: ["x": Tensor(shape: [4], values: [1, 0, 0, 1])])
            Issue.record("expected a shape error")
        } catch let error as RuntimeError {
            #expect(error.message.contains("'x'") && error.message.contains("4") && error.message.contains("2×2"))
        }
    }

    /// A GEMM step through an executable on `threads` threads, against a plain triple loop.
    func checkGemm(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, repeats: Int = 1, threads: Int) throws {
        var program = Program()
        func values(_ count: Int, _ seed: Int) -> [Float] { (0..<count).map { Float(($0 * 7 + seed * 13) % 17) - 8 } }
        let a = values(repeats * m * k, 1), b = values(repeats * k * n, 2)
        let x = program.addBuffer("a", count: a.count)
        let w = program.addConstant("b", values: b)
        let y = program.addBuffer("c", count: repeats * m * n)
        var gemm = GemmStep(m: m, n: n, k: k, a: Operand(x), lda: transA ? m : k, b: Operand(w), ldb: transB ? k : n, c: Operand(y), ldc: n)
        (gemm.transA, gemm.transB, gemm.repeats) = (transA, transB, repeats)
        (gemm.strideA, gemm.strideB, gemm.strideC) = (m * k, k * n, m * n)
        program.steps = [Step(label: "gemm", .gemm(gemm))]
        program.inputs = [BlobBinding(name: "a", shape: [a.count], buffer: x)]
        program.outputs = [BlobBinding(name: "c", shape: [repeats * m * n], buffer: y)]
        let executable = try Executable(program, pool: ThreadPool(threads: threads), blas: BLAS(threads: 1))
        let c = try executable.run(inputs: ["a": Tensor(shape: [a.count], values: a)])["c"]!.values
        for r in 0..<repeats {
            for i in 0..<m {
                for j in 0..<n {
                    var sum: Float = 0
                    for p in 0..<k {
                        let left = transA ? a[r * m * k + p * m + i] : a[r * m * k + i * k + p]
                        let right = transB ? b[r * k * n + j * k + p] : b[r * k * n + p * n + j]
                        sum += left * right
                    }
                    #expect(c[r * m * n + i * n + j] == sum, "m\(m) n\(n) k\(k) tA \(transA) tB \(transB) r\(r) at \(i),\(j)")
                }
            }
        }
    }

    @Test("GEMM steps split by columns, by rows, by repeats, or run as GEMV give the plain product (small integers: exact)",
          arguments: [(1, 700, 400, false, true, 1), (1, 700, 400, true, false, 1), (1, 5, 3, false, false, 1),
                      (3, 1000, 90, false, false, 1), (70, 9, 500, true, true, 1), (40, 30, 250, false, false, 3),
                      (2, 2, 2, false, false, 1)])
    func gemmSplits(_ c: (Int, Int, Int, Bool, Bool, Int)) throws {
        for threads in [1, 2, 3] {
            try checkGemm(m: c.0, n: c.1, k: c.2, transA: c.3, transB: c.4, repeats: c.5, threads: threads)
        }
    }

    @Test("an item loop runs its body once per item with moved operands and per-thread scratch")
    func itemLoop() throws {
        // Per item: scratch = x[item] · 2 (a 1×3 · 3×3 GEMM by 2·I), then y[item] = scratch · W.
        var program = Program()
        let items = 5, threads = 2
        let x = program.addBuffer("x", count: items * 3)
        let twice = program.addConstant("2I", values: [2, 0, 0, 0, 2, 0, 0, 0, 2])
        let w = program.addConstant("w", values: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        let scratch = program.addBuffer("scratch", count: 3 * threads)
        let y = program.addBuffer("y", count: items * 3)
        let first = GemmStep(m: 1, n: 3, k: 3, a: Operand(x), lda: 3, b: Operand(twice), ldb: 3, c: Operand(scratch), ldc: 3)
        let second = GemmStep(m: 1, n: 3, k: 3, a: Operand(scratch), lda: 3, b: Operand(w), ldb: 3, c: Operand(y), ldc: 3)
        program.steps = [Step(label: "loop", .items(ItemLoop(items: items, body: [.gemm(first), .gemm(second)],
                                                               strides: [x: 3, y: 3], privateSlices: [scratch: 3])))]
        program.inputs = [BlobBinding(name: "x", shape: [items, 3], buffer: x)]
        program.outputs = [BlobBinding(name: "y", shape: [items, 3], buffer: y)]
        let executable = try Executable(program, pool: ThreadPool(threads: threads), blas: BLAS(threads: 1))
        let input = (0..<(items * 3)).map { Float($0 % 4) }
        let out = try executable.run(inputs: ["x": Tensor(shape: [items, 3], values: input)])["y"]!.values
        for item in 0..<items {
            let row = input[(item * 3)..<(item * 3 + 3)].map { 2 * $0 }
            let expected = (0..<3).map { j in (0..<3).reduce(Float(0)) { $0 + row[$1] * [1, 2, 3, 4, 5, 6, 7, 8, 9][$1 * 3 + j] } }
            #expect(Array(out[(item * 3)..<(item * 3 + 3)]) == expected)
        }

        // A private scratch declared for fewer threads than the pool has is refused, not overrun.
        program.buffers[scratch].count = 3
        #expect(throws: RuntimeError.self) { try Executable(program, pool: ThreadPool(threads: threads), blas: BLAS(threads: 1)) }
    }
}
