import Foundation

/// Results that several worker threads write, one per index (each index by exactly one thread),
/// read back in index order once every worker has finished: how the image decoders of
/// `ImageListReader`, `WindowDataReader` and `ImageSetConversion` hand their work back in list order.
/// An index no worker wrote reads as `missing`.
final class IndexedResults<Success, Failure: Error>: @unchecked Sendable {
    private var storage: [Result<Success, Failure>?]
    private let lock = NSLock()
    private let missing: Failure

    init(count: Int, missing: Failure) {
        storage = Array(repeating: nil, count: count)
        self.missing = missing
    }

    func set(_ index: Int, _ value: Result<Success, Failure>) {
        lock.lock()
        storage[index] = value
        lock.unlock()
    }

    var values: [Result<Success, Failure>] {
        storage.map { $0 ?? .failure(missing) }
    }
}

/// The first error a `BatchSource` hits, thrown again by every later call: a reader that failed
/// stays failed (Caffe stops there too), instead of reading on past a bad record.
struct StickyFailure {
    private var error: (any Error)?

    /// Runs `body` unless an earlier call failed; on a first failure runs `cleanUp`, remembers the
    /// error and throws it.
    mutating func run(_ body: () throws -> Void, cleanUp: () -> Void = {}) throws {
        if let error { throw error }
        do {
            try body()
        } catch {
            self.error = error
            cleanUp()
            throw error
        }
    }
}
