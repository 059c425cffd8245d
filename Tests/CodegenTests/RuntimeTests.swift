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

    @Test("the memory plan reuses a dead buffer and keeps overlapping ones apart")
    func memoryPlan() {
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
        let plan = MemoryPlan(program)
        #expect(plan.offsets[a] == plan.offsets[c])
        #expect(plan.offsets[a] != plan.offsets[b])
        #expect(plan.offsets[w] == nil)
        #expect(plan.arenaCount == 2 * 112)
        #expect(plan.naiveCount == 3 * 112)
    }

    @Test("a checkpoint's live buffer keeps its slot across the checkpoint even when no later step reads it")
    func checkpointPins() {
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
}
