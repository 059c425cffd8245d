import Foundation
import Testing
import SwiftJIT
@testable import Serve

/// Stacking concurrent requests into one batch and handing each its own rows back.
@Suite("dynamic batcher")
struct DynamicBatcherTests {
    @Test("stack concatenates along axis 0 and split undoes it")
    func stackAndSplit() throws {
        let a = NDArray(shape: [1, 2], data: [1, 2]), b = NDArray(shape: [2, 2], data: [3, 4, 5, 6])
        let stacked = DynamicBatcher.stack([["x": a], ["x": b]])
        #expect(stacked["x"] == NDArray(shape: [3, 2], data: [1, 2, 3, 4, 5, 6]))
        let parts = try DynamicBatcher.split(stacked, rows: [1, 2], model: "m")
        #expect(parts[0]["x"] == a)
        #expect(parts[1]["x"] == b)
        #expect(throws: ServeError.self) { try DynamicBatcher.split(["y": NDArray(shape: [1, 4])], rows: [1, 2], model: "m") }
    }

    @Test("concurrent requests are batched, and each gets its own result")
    func concurrentRequests() async throws {
        let executions = Executions()
        let policy = BatchPolicy(maxBatchSize: 8, dynamic: true, maxQueueDelayMicroseconds: 20_000, queueCapacity: 100)
        let batcher = DynamicBatcher(name: "double", policy: policy) { _, inputs in
            executions.record(inputs["x"]!.shape[0])
            Thread.sleep(forTimeInterval: 0.005)
            return ["y": NDArray(shape: inputs["x"]!.shape, data: inputs["x"]!.data.map { $0 * 2 })]
        }
        defer { batcher.finish() }
        let results = try await withThrowingTaskGroup(of: (Int, Float).self) { group in
            for i in 0..<32 {
                group.addTask { (i, try await batcher.submit(["x": NDArray(shape: [1, 1], data: [Float(i)])], rows: 1).0["y"]!.data[0]) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(results.count == 32)
        for (i, y) in results { #expect(y == Float(2 * i)) }
        #expect(executions.sizes.reduce(0, +) == 32)
        #expect(executions.sizes.count < 32)
        #expect(executions.sizes.allSatisfy { [1, 2, 4, 8].contains($0) })
    }

    @Test("past the queue's capacity requests are refused at once with 503")
    func boundedQueue() async throws {
        let gate = Gate()
        let batcher = DynamicBatcher(name: "slow", policy: BatchPolicy(maxBatchSize: 1, dynamic: false, queueCapacity: 2)) { _, inputs in
            gate.wait()
            return inputs
        }
        let input = ["x": NDArray(shape: [1, 1], data: [0])]
        // One request runs (held at the gate), then two wait: the queue is full.
        var waiting: [Task<([String: NDArray], BatchTiming), Error>] = []
        for (pending, queued) in [(1, 0), (2, 1), (3, 2)] {
            waiting.append(Task { try await batcher.submit(input, rows: 1) })
            for _ in 0..<500 where batcher.pending < pending || batcher.queued < queued { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(batcher.pending == 3 && batcher.queued == 2)
        if batcher.queued == 2 {   // otherwise the fourth request would wait at the closed gate forever
            await #expect(throws: ServeError(.serviceUnavailable, "model 'slow': the queue is full (2 requests waiting); retry later")) {
                try await batcher.submit(input, rows: 1)
            }
        }
        gate.open()
        for task in waiting { _ = try await task.value }
        batcher.finish()
    }
}

/// The batch sizes a fake model saw, from the batcher's threads.
final class Executions: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [Int] = []
    func record(_ rows: Int) { lock.withLock { recorded.append(rows) } }
    var sizes: [Int] { lock.withLock { recorded } }
}

/// A door the fake model waits at until the test opens it.
final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    private var isOpen = false
    func wait() { condition.lock(); while !isOpen { condition.wait() }; condition.unlock() }
    func open() { condition.lock(); isOpen = true; condition.broadcast(); condition.unlock() }
}
