import Foundation

/// The read-only constants of every program compiled from one model — weights, folded weights,
/// packed GEMM panels, Winograd-transformed filters — each held once, however many programs (one
/// per input shape or batch size) and execution contexts use it.
///
/// `Program.materializeConstants(in:)` hands each constant to `intern`, which returns an existing
/// buffer with the same name and identical contents when there is one (a batch-16 program reuses
/// the batch-1 program's panels) and keeps the new one otherwise. Buffers are never written after
/// interning; executables only read them, so any number of threads may run programs that share
/// them. Lookups compare a cheap fingerprint first and the full contents only on a match, so a
/// first compile pays nothing and a recompile pays one `memcmp` per shared constant.
///
///     let store = ConstantStore()
///     var program = lowering.program
///     program.materializeConstants(in: store)   // every executable of `program` shares them
public final class ConstantStore: @unchecked Sendable {
    private struct Fingerprint: Hashable {
        var name: String
        var count: Int
        var samples: [UInt32]
    }

    private var buffers: [Fingerprint: [AlignedBuffer]] = [:]
    private let lock = NSLock()

    public init() {}

    /// The bytes of all distinct constants held.
    public var bytes: Int {
        lock.lock()
        defer { lock.unlock() }
        return buffers.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count * MemoryLayout<Float>.stride } }
    }

    /// How many distinct constant buffers are held.
    public var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return buffers.values.reduce(0) { $0 + $1.count }
    }

    /// The held buffer named `name` with `buffer`'s contents, or `buffer` itself, now held.
    public func intern(_ buffer: AlignedBuffer, name: String) -> AlignedBuffer {
        let key = Fingerprint(name: name, count: buffer.count, samples: ConstantStore.samples(buffer))
        lock.lock()
        defer { lock.unlock() }
        let bytes = buffer.count * MemoryLayout<Float>.stride
        if let same = buffers[key]?.first(where: { $0 === buffer || memcmp($0.pointer, buffer.pointer, bytes) == 0 }) {
            return same
        }
        buffers[key, default: []].append(buffer)
        return buffer
    }

    /// Sixteen values spread over the buffer (their bit patterns), enough to tell most different
    /// constants of one name and size apart without reading them whole.
    private static func samples(_ buffer: AlignedBuffer) -> [UInt32] {
        guard buffer.count > 0 else { return [] }
        let picks = min(16, buffer.count)
        return (0..<picks).map { i in buffer.pointer[i * (buffer.count - 1) / max(1, picks - 1)].bitPattern }
    }
}

extension Program {
    /// Moves every constant's values into aligned memory held by `store` (shared with any identical
    /// constant already there), so that every `Executable` made from this program — and from other
    /// programs of the same store — adopts the same read-only buffers instead of copying them.
    /// Persistent buffers (training parameters) are left alone: each context owns its own.
    public mutating func materializeConstants(in store: ConstantStore) throws {
        for index in buffers.indices where buffers[index].isConstant {
            let declaration = buffers[index]
            let buffer: AlignedBuffer
            if let prepared = declaration.prepared {
                buffer = prepared
            } else {
                let values = declaration.constant ?? []
                buffer = try AlignedBuffer(count: declaration.count, zeroed: values.count < declaration.count)
                values.withUnsafeBufferPointer { source in
                    if let base = source.baseAddress { buffer.pointer.update(from: base, count: min(source.count, declaration.count)) }
                }
            }
            buffers[index].constant = nil
            buffers[index].prepared = store.intern(buffer, name: declaration.name)
        }
    }
}
