import Foundation
import SwiftJIT

/// How a model's requests are grouped into batches: Triton's dynamic batching, for one model.
///
/// With `dynamic` on, a free execution context takes the oldest request and every queued request
/// with the same per-item shapes behind it, up to `maxBatchSize` rows, waiting at most `maxQueueDelay`
/// for more. Batches are cut to one of `batchSizes` (powers of two, the preferred sizes and the
/// maximum) so that a handful of compiled contexts serve every batch; a lone request of any size
/// runs as it is. Past `queueCapacity` waiting requests, new ones are refused at once (503).
public struct BatchPolicy: Sendable, Equatable {
    public var maxBatchSize: Int
    public var dynamic: Bool
    public var maxQueueDelayMicroseconds: Int
    public var preferredBatchSizes: [Int]
    public var queueCapacity: Int
    public var instances: Int

    public init(maxBatchSize: Int, dynamic: Bool, maxQueueDelayMicroseconds: Int = 0, preferredBatchSizes: [Int] = [],
                queueCapacity: Int = 1024, instances: Int = 1) {
        self.maxBatchSize = maxBatchSize
        self.dynamic = dynamic && maxBatchSize > 1
        self.maxQueueDelayMicroseconds = maxQueueDelayMicroseconds
        self.preferredBatchSizes = preferredBatchSizes
        self.queueCapacity = queueCapacity
        self.instances = max(1, instances)
    }

    /// The batch sizes the batcher forms from several requests (and `--warmup` compiles), ascending.
    public var batchSizes: [Int] {
        guard maxBatchSize > 0 else { return [] }
        guard dynamic else { return [1] }
        var sizes = Set(preferredBatchSizes.filter { $0 <= maxBatchSize })
        var power = 1
        while power <= maxBatchSize { sizes.insert(power); power *= 2 }
        sizes.insert(maxBatchSize)
        return sizes.sorted()
    }

    /// How many rows a batch waits for before it stops waiting: the largest preferred size, else the maximum.
    var targetRows: Int { preferredBatchSizes.filter { $0 <= maxBatchSize }.max() ?? maxBatchSize }
}

/// Where a request's time went, in microseconds, and the size of the batch it ran in.
public struct BatchTiming: Sendable {
    public var queueMicroseconds: Int
    public var computeMicroseconds: Int
    public var batchRows: Int
}

/// Stacks concurrent requests for one model into batches along axis 0, runs each batch on one of
/// `policy.instances` threads, and hands every request its own rows of the outputs.
///
/// The batcher owns its threads (compute never runs on Swift's cooperative pool, so a slow batch
/// does not stall the HTTP server). `finish()` lets the queue drain and then ends the threads;
/// requests submitted after it are refused.
///
///     let batcher = DynamicBatcher(name: "squeezenet", policy: policy) { _, inputs in try model.forward(inputs) }
///     let (outputs, timing) = try await batcher.submit(["data": image], rows: 1)
public final class DynamicBatcher: @unchecked Sendable {
    /// Runs one batch on execution context `instance` (always from that instance's own thread):
    /// inputs stacked along axis 0, outputs with the batch along axis 0.
    public typealias Execute = @Sendable (_ instance: Int, _ inputs: [String: NDArray]) throws -> [String: NDArray]
    /// Told of every batch run: its rows and its compute time in microseconds.
    public typealias Observer = @Sendable (_ rows: Int, _ computeMicroseconds: Int) -> Void

    private final class Job {
        let inputs: [String: NDArray]
        let rows: Int
        let key: [String: [Int]]
        let enqueued: UInt64
        let continuation: CheckedContinuation<([String: NDArray], BatchTiming), Error>
        init(inputs: [String: NDArray], rows: Int, key: [String: [Int]], enqueued: UInt64,
             continuation: CheckedContinuation<([String: NDArray], BatchTiming), Error>) {
            self.inputs = inputs; self.rows = rows; self.key = key; self.enqueued = enqueued; self.continuation = continuation
        }
    }

    public let name: String
    public let policy: BatchPolicy
    private let execute: Execute
    private let observer: Observer
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var running = 0
    private var finishing = false
    private var threadsLeft = 0
    private let sizes: Set<Int>

    public init(name: String, policy: BatchPolicy, observer: @escaping Observer = { _, _ in }, execute: @escaping Execute) {
        self.name = name
        self.policy = policy
        self.execute = execute
        self.observer = observer
        self.sizes = Set(policy.batchSizes)
        threadsLeft = policy.instances
        for instance in 0..<policy.instances {
            let thread = Thread { [self] in work(instance: instance) }
            thread.name = "batcher \(name) #\(instance)"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Requests waiting or running.
    public var pending: Int {
        condition.lock(); defer { condition.unlock() }
        return queue.count + running
    }

    /// Requests waiting for an execution context (not yet running).
    var queued: Int {
        condition.lock(); defer { condition.unlock() }
        return queue.count
    }

    /// Queues `inputs` (each with `rows` rows along axis 0 when the model batches) and waits for its outputs.
    public func submit(_ inputs: [String: NDArray], rows: Int) async throws -> ([String: NDArray], BatchTiming) {
        let key = policy.maxBatchSize > 0 ? inputs.mapValues { Array($0.shape.dropFirst()) } : inputs.mapValues(\.shape)
        return try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            defer { condition.unlock() }
            if finishing && threadsLeft == 0 {
                continuation.resume(throwing: ServeError(.serviceUnavailable, "model '\(name)' is being unloaded"))
                return
            }
            guard queue.count < policy.queueCapacity else {
                continuation.resume(throwing: ServeError(.serviceUnavailable, "model '\(name)': the queue is full (\(policy.queueCapacity) requests waiting); retry later"))
                return
            }
            queue.append(Job(inputs: inputs, rows: rows, key: key, enqueued: DispatchTime.now().uptimeNanoseconds, continuation: continuation))
            condition.broadcast()
        }
    }

    /// Stops taking the threads' time once the queue is empty; already queued requests still run.
    public func finish() {
        condition.lock()
        finishing = true
        condition.broadcast()
        condition.unlock()
    }

    private func work(instance: Int) {
        condition.lock()
        while true {
            while queue.isEmpty && !finishing { condition.wait() }
            if queue.isEmpty {
                threadsLeft -= 1
                condition.unlock()
                return
            }
            if policy.dynamic && policy.maxQueueDelayMicroseconds > 0 {
                let deadline = queue[0].enqueued + UInt64(policy.maxQueueDelayMicroseconds) * 1000
                while !queue.isEmpty, !finishing, compatibleRows() < policy.targetRows {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now >= deadline { break }
                    _ = condition.wait(until: Date(timeIntervalSinceNow: Double(deadline - now) / 1e9))
                }
                if queue.isEmpty { continue }
            }
            let batch = takeBatch()
            running += batch.count
            condition.unlock()
            run(batch, instance: instance)
            condition.lock()
            running -= batch.count
        }
    }

    /// Rows queued with the same per-item shapes as the oldest request (caller holds the lock).
    private func compatibleRows() -> Int {
        let key = queue[0].key
        return queue.reduce(0) { $0 + ($1.key == key ? $1.rows : 0) }
    }

    /// Removes the next batch from the queue (caller holds the lock).
    private func takeBatch() -> [Job] {
        guard policy.dynamic else { return [queue.removeFirst()] }
        let key = queue[0].key
        var chosen: [Int] = []
        var rows = 0
        for (index, job) in queue.enumerated() where job.key == key && rows + job.rows <= policy.maxBatchSize {
            chosen.append(index)
            rows += job.rows
            if rows == policy.maxBatchSize { break }
        }
        if chosen.isEmpty { chosen = [0] }
        while chosen.count > 1 && !sizes.contains(rows) {
            rows -= queue[chosen.removeLast()].rows
        }
        let jobs = chosen.map { queue[$0] }
        for index in chosen.reversed() { queue.remove(at: index) }
        return jobs
    }

    private func run(_ jobs: [Job], instance: Int) {
        let start = DispatchTime.now().uptimeNanoseconds
        let rows = jobs.reduce(0) { $0 + $1.rows }
        let results: Result<[[String: NDArray]], Error> = Result {
            let outputs = try execute(instance, jobs.count == 1 ? jobs[0].inputs : Self.stack(jobs.map(\.inputs)))
            return jobs.count == 1 ? [outputs] : try Self.split(outputs, rows: jobs.map(\.rows), model: name)
        }
        let end = DispatchTime.now().uptimeNanoseconds
        let compute = Int((end - start) / 1000)
        observer(rows, compute)
        for (index, job) in jobs.enumerated() {
            let timing = BatchTiming(queueMicroseconds: Int((start - min(start, job.enqueued)) / 1000), computeMicroseconds: compute, batchRows: rows)
            switch results {
            case .success(let outputs): job.continuation.resume(returning: (outputs[index], timing))
            case .failure(let error): job.continuation.resume(throwing: error)
            }
        }
    }

    /// Concatenates each input of several requests along axis 0 (their other extents agree).
    static func stack(_ requests: [[String: NDArray]]) -> [String: NDArray] {
        var stacked: [String: NDArray] = [:]
        for name in requests[0].keys {
            let parts = requests.map { $0[name]! }
            var data: [Float] = []
            data.reserveCapacity(parts.reduce(0) { $0 + $1.count })
            for part in parts { data.append(contentsOf: part.data) }
            var shape = parts[0].shape
            shape[0] = parts.reduce(0) { $0 + $1.shape[0] }
            stacked[name] = NDArray(shape: shape, data: data)
        }
        return stacked
    }

    /// Cuts each output back into the requests' rows along axis 0.
    static func split(_ outputs: [String: NDArray], rows: [Int], model: String) throws -> [[String: NDArray]] {
        let total = rows.reduce(0, +)
        var result = [[String: NDArray]](repeating: [:], count: rows.count)
        for (name, array) in outputs {
            guard let first = array.shape.first, first == total, total > 0 else {
                throw ServeError(.internalServerError, "model '\(model)': output '\(name)' has shape \(shapeText(array.shape)), not \(total) rows along axis 0; it cannot be split per request (set max_batch_size: 0)")
            }
            let stride = array.count / total
            var offset = 0
            for (index, count) in rows.enumerated() {
                var shape = array.shape
                shape[0] = count
                result[index][name] = NDArray(shape: shape, data: Array(array.data[offset * stride..<(offset + count) * stride]))
                offset += count
            }
        }
        return result
    }
}
