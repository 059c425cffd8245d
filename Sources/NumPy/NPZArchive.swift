/// The arrays of one `.npz` archive, keyed by name, in archive order.
///
/// Keys are the member names without the `.npy` suffix, exactly as passed to `np.savez`; they
/// may contain `/` (Caffe parameter blobs are stored as `conv1/0`, `conv1/1`, …). Iteration,
/// `keys` and `entries` follow the order of the archive (for archives read from disk) or of
/// insertion. Two archives are equal when they hold equal arrays under the same keys in the same
/// order.
public struct NPZArchive: Sendable, Equatable, Sequence {
    /// The keys in archive order.
    public private(set) var keys: [String]
    private var arrays: [String: NDArray]

    /// Creates an empty archive.
    public init() {
        keys = []
        arrays = [:]
    }

    /// Creates an archive from `(key, array)` pairs, keeping their order.
    ///
    /// Throws `NumPyError` (kind `.invalidArgument`) if a key appears twice.
    public init(_ entries: [(String, NDArray)]) throws {
        self.init()
        keys.reserveCapacity(entries.count)
        arrays.reserveCapacity(entries.count)
        for (key, array) in entries {
            guard arrays.updateValue(array, forKey: key) == nil else {
                throw NumPyError(.invalidArgument, "duplicate key '\(key)' — expected each key once", member: key + ".npy")
            }
            keys.append(key)
        }
    }

    /// The number of arrays.
    public var count: Int { keys.count }

    /// Whether the archive holds no arrays.
    public var isEmpty: Bool { keys.isEmpty }

    /// The `(key, array)` pairs in archive order.
    public var entries: [(key: String, array: NDArray)] {
        keys.map { ($0, arrays[$0]!) }
    }

    /// The array stored under `key`, or nil. Assigning replaces an existing array in place,
    /// appends a new key at the end, and assigning nil removes the key.
    public subscript(key: String) -> NDArray? {
        get { arrays[key] }
        set {
            if let newValue {
                if arrays.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if arrays.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// Iterates over the `(key, array)` pairs in archive order.
    public func makeIterator() -> IndexingIterator<[(key: String, array: NDArray)]> {
        entries.makeIterator()
    }
}
