/// The one error type thrown by the NumPy module.
///
/// It names the file (the path, or the `name` given to an in-memory variant), the `.npz` member
/// when there is one, and says what was found and what was expected, rendered as one line:
///
///     x.npz: member 'conv1/0.npy': unsupported dtype '<c8' — expected a real numeric dtype (…)
///
/// Readers validate every offset and length before touching the bytes, so truncated or corrupt
/// input always surfaces as a `NumPyError` (kind `.truncated` or `.corrupt`), never as a crash.
public struct NumPyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The broad category of a failure, for callers that want to react differently to each.
    public enum Kind: String, Sendable, Equatable {
        /// The file could not be opened, read, written or renamed (the message carries `strerror`).
        case io
        /// The data ends before a structure it declares (short header, missing array bytes,
        /// missing zip records).
        case truncated
        /// The bytes are present but inconsistent: bad magic, unparsable header, CRC mismatch,
        /// offsets pointing outside the file, invalid deflate stream.
        case corrupt
        /// A well-formed file uses a feature this reader does not implement (complex or
        /// structured dtypes, encryption, LZMA, unknown `.npy` version).
        case unsupported
        /// The caller passed something that cannot be written (shape/data mismatch, duplicate or
        /// empty key, archive beyond the 4 GiB non-zip64 limit).
        case invalidArgument
    }

    /// The category of the failure.
    public var kind: Kind
    /// The file concerned: a path, or the name given to an in-memory reader/writer.
    public internal(set) var file: String
    /// The `.npz` member concerned (its full zip name, e.g. `conv1/0.npy`), if any.
    public internal(set) var member: String?
    /// What is wrong and what was expected, in one sentence.
    public var message: String

    /// Creates an error; `file` and `member` are normally filled in by the public entry points.
    public init(_ kind: Kind, _ message: String, file: String = "", member: String? = nil) {
        self.kind = kind
        self.message = message
        self.file = file
        self.member = member
    }

    /// `file: member 'key.npy': message`, omitting the parts that are unknown.
    public var description: String {
        var s = file.isEmpty ? "" : "\(file): "
        if let member { s += "member '\(member)': " }
        return s + message
    }

    /// This error attributed to `file` / `member` unless it already names them.
    func located(file: String? = nil, member: String? = nil) -> NumPyError {
        var e = self
        if e.file.isEmpty, let file { e.file = file }
        if e.member == nil, let member { e.member = member }
        return e
    }
}

/// Runs `body`, attributing any `NumPyError` it throws to `file` / `member`.
@inline(__always)
func attributing<T>(file: String? = nil, member: String? = nil, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as NumPyError {
        throw e.located(file: file, member: member)
    }
}
