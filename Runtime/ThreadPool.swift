import Foundation
import Synchronization

/// A fixed set of worker threads that run one parallel-for at a time.
///
/// `parallelFor(taskCount:)` splits `0..<taskCount` into at most `threadCount` contiguous chunks; the
/// calling thread runs chunk 0 and helps with the rest, workers take the others, and the call
/// returns when every chunk is done. Chunks are split the same way every time, so a kernel whose
/// tasks write disjoint outputs gives bit-identical results for a given thread count.
/// A nested or concurrent call (from inside a body, or from a second thread while a loop runs)
/// runs serially on its caller instead of deadlocking.
///
///     let pool = ThreadPool(threads: 2)
///     pool.parallelFor(taskCount: planes) { range in kernel(args, range) }
public final class ThreadPool: @unchecked Sendable {
    /// Threads that run chunks, the caller included.
    public let threadCount: Int
    private let state: SharedState

    /// Creates `threads - 1` workers (the caller is the last thread); default: one per core.
    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount) {
        threadCount = max(1, threads)
        state = SharedState()
        for index in 1..<threadCount {
            let state = self.state
            let thread = Thread { state.workerLoop() }
            thread.name = "swiftjit-worker-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit { state.shutDown() }

    /// Runs `body` over `0..<taskCount` split into contiguous ranges, in parallel; returns when all are done.
    public func parallelFor(taskCount: Int, _ body: (Range<Int>) -> Void) {
        parallelChunks(taskCount: taskCount) { _, range in body(range) }
    }

    /// `parallelFor` that also tells each body which chunk it runs (`0..<threadCount`), so it can
    /// use per-thread scratch. A serial fallback runs everything as chunk 0.
    public func parallelChunks(taskCount: Int, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
        guard taskCount > 0 else { return }
        let chunks = min(taskCount, threadCount)
        guard chunks > 1, state.tryAcquire() else {
            body(0, 0..<taskCount)
            return
        }
        withoutActuallyEscaping(body) { body in
            state.run(chunks: chunks) { chunk in
                body(chunk, ThreadPool.chunkRange(chunk, of: chunks, taskCount: taskCount))
            }
        }
    }

    /// The `chunk`-th of `chunks` near-equal contiguous ranges of `0..<taskCount`.
    static func chunkRange(_ chunk: Int, of chunks: Int, taskCount: Int) -> Range<Int> {
        let base = taskCount / chunks, extra = taskCount % chunks
        let start = chunk * base + min(chunk, extra)
        return start..<(start + base + (chunk < extra ? 1 : 0))
    }

    /// The state workers share with the pool; separate so that workers do not keep the pool alive.
    private final class SharedState: @unchecked Sendable {
        private let condition = NSCondition()
        private var busy = false
        private var generation = 0
        private var job: ((Int) -> Void)?
        private var chunkCount = 0
        private var nextChunk = 0
        private var finished = 0
        private var stopping = false
        /// `generation` and `finished`, readable without the lock: a worker that has just finished
        /// a job, and a caller waiting for its workers, spin on these (2^18 polls, a few hundred
        /// microseconds) before sleeping, since the next parallel step usually comes that soon: a
        /// wake-up from sleep costs tens of microseconds, several times a small layer's work, and a
        /// serial step (a concat, a small pooling) between two parallel ones must not put the
        /// worker to sleep. 2^14 polls did (SqueezeNet batch 1: 5.76 → 5.11 ms with 2^18).
        private let publishedGeneration = Atomic<Int>(0)
        private let publishedFinished = Atomic<Int>(0)
        static let spinLimit = 1 << 18

        func tryAcquire() -> Bool {
            condition.lock()
            defer { condition.unlock() }
            if busy { return false }
            busy = true
            return true
        }

        func run(chunks: Int, _ job: @escaping (Int) -> Void) {
            condition.lock()
            self.job = job
            chunkCount = chunks
            nextChunk = 0
            finished = 0
            generation += 1
            publishedFinished.store(0, ordering: .releasing)
            publishedGeneration.store(generation, ordering: .releasing)
            condition.broadcast()
            condition.unlock()
            drainChunks()
            var spins = 0
            while publishedFinished.load(ordering: .acquiring) < chunks && spins < Self.spinLimit { spins += 1 }
            condition.lock()
            while finished < chunkCount { condition.wait() }
            self.job = nil
            busy = false
            condition.unlock()
        }

        /// Claims and runs chunks of the current job until none are left.
        private func drainChunks() {
            condition.lock()
            while nextChunk < chunkCount, let job {
                let chunk = nextChunk
                nextChunk += 1
                condition.unlock()
                job(chunk)
                condition.lock()
                finished += 1
                publishedFinished.store(finished, ordering: .releasing)
                if finished == chunkCount { condition.broadcast() }
            }
            condition.unlock()
        }

        func workerLoop() {
            var seen = 0
            while true {
                var spins = 0
                while publishedGeneration.load(ordering: .acquiring) == seen && spins < Self.spinLimit { spins += 1 }
                condition.lock()
                while generation == seen && !stopping { condition.wait() }
                if stopping { condition.unlock(); return }
                seen = generation
                condition.unlock()
                drainChunks()
            }
        }

        func shutDown() {
            condition.lock()
            stopping = true
            condition.broadcast()
            condition.unlock()
        }
    }
}
