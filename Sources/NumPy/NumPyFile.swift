import Foundation

/// Reading and writing NumPy `.npy` arrays and `.npz` archives, from files or memory.
///
/// Readers accept what NumPy writes: `.npy` format versions 1.0, 2.0 and 3.0; dtypes `f2`, `f4`,
/// `f8`, `i1`–`i8`, `u1`–`u8` and `b1` in either byte order, converted to `Float`; C or Fortran
/// order (Fortran data is reordered to C order); and `.npz` zip archives with STORED or DEFLATE
/// members (`np.savez` / `np.savez_compressed`), data descriptors and zip64 records. Writers
/// produce exactly what `np.save` / `np.savez` produce for float32 data: `.npy` v1.0 `<f4` in C
/// order with NumPy's 64-byte-aligned header, and STORED `.npz` archives dated 1980-01-01.
/// File writes are atomic (a temporary file in the same folder renamed over the target). Every
/// failure is a `NumPyError` naming the file and, for archives, the member.
public enum NumPyFile {
    /// The name used in errors for in-memory data when the caller gives none.
    public static let memoryName = "<memory>"

    // MARK: Reading

    /// Reads the `.npy` file at `path` and returns its contents as a C-ordered float32 array.
    ///
    /// Throws `NumPyError` if the file cannot be read, is not a `.npy` file, is truncated or
    /// corrupt, or stores an unsupported dtype (complex, structured, string, object).
    public static func readArray(path: String) throws -> NDArray {
        let bytes = try FileIO.read(path)
        return try attributing(file: path) { try bytes.withUnsafeBytes { try NPYCodec.decode($0) } }
    }

    /// Decodes an in-memory `.npy` image; `name` is used in error messages.
    ///
    /// Behaves exactly like `readArray(path:)` on a file holding `data`.
    public static func readArray(from data: Data, name: String = memoryName) throws -> NDArray {
        try attributing(file: name) { try data.withUnsafeBytes { try NPYCodec.decode($0) } }
    }

    /// Reads the `.npz` archive at `path`, returning its arrays in archive order.
    ///
    /// Members must be named `<key>.npy` (directory entries are skipped). Throws `NumPyError` if
    /// the file cannot be read, is not a zip archive, is truncated or corrupt (including CRC-32
    /// mismatches), uses an unsupported compression method or encryption, repeats a key, or if any
    /// member fails to decode as in `readArray(path:)` — the error then names the member.
    public static func readArchive(path: String) throws -> NPZArchive {
        let bytes = try FileIO.read(path)
        return try attributing(file: path) { try bytes.withUnsafeBytes { try decodeArchive($0) } }
    }

    /// Decodes an in-memory `.npz` archive; `name` is used in error messages.
    ///
    /// Behaves exactly like `readArchive(path:)` on a file holding `data`.
    public static func readArchive(from data: Data, name: String = memoryName) throws -> NPZArchive {
        try attributing(file: name) { try data.withUnsafeBytes { try decodeArchive($0) } }
    }

    static func decodeArchive(_ raw: UnsafeRawBufferPointer) throws -> NPZArchive {
        let v = ByteView(raw)
        var archive = NPZArchive()
        for m in try ZipCodec.centralDirectory(v) {
            if m.name.hasSuffix("/") && m.uncompressedSize == 0 { continue }  // directory entry
            try attributing(member: m.name) {
                guard m.name.hasSuffix(".npy") else {
                    throw NumPyError(.unsupported, "not an array — expected only '<key>.npy' members, as np.savez writes")
                }
                let key = String(m.name.dropLast(4))
                guard archive[key] == nil else {
                    throw NumPyError(.corrupt, "key '\(key)' appears twice — expected each member once")
                }
                archive[key] = try ZipCodec.withContents(v, m) { try NPYCodec.decode($0) }
            }
        }
        return archive
    }

    // MARK: Writing

    /// Writes `array` to `path` as a `.npy` file (v1.0, `<f4`, C order), atomically.
    ///
    /// The bytes are identical to `np.save(path, array.astype(np.float32))`. Throws `NumPyError`
    /// (kind `.invalidArgument`) if the shape does not match the element count, or `.io` if the
    /// file cannot be written.
    public static func write(_ array: NDArray, to path: String) throws {
        let bytes = try attributing(file: path) { try encodeArray(array) }
        try FileIO.writeAtomically(bytes, to: path)
    }

    /// Writes `entries` to `path` as a `.npz` archive of STORED members named `<key>.npy`, in
    /// the given order, atomically.
    ///
    /// Keys may contain `/`. Throws `NumPyError` if a key repeats, an array's shape does not
    /// match its element count, the archive would exceed the 4 GiB non-zip64 limit, or the file
    /// cannot be written.
    public static func write(archive entries: [(String, NDArray)], to path: String) throws {
        let bytes = try attributing(file: path) { try encodeArchive(entries) }
        try FileIO.writeAtomically(bytes, to: path)
    }

    /// Writes `archive` to `path` as a `.npz` file, in archive order, atomically; see
    /// `write(archive:to:)`.
    public static func write(_ archive: NPZArchive, to path: String) throws {
        try write(archive: archive.entries.map { ($0.key, $0.array) }, to: path)
    }

    /// Returns the `.npy` image of `array`: the bytes `write(_:to:)` would write.
    public static func encode(_ array: NDArray) throws -> Data {
        Data(try attributing(file: memoryName) { try encodeArray(array) })
    }

    /// Returns the `.npz` image of `entries`: the bytes `write(archive:to:)` would write.
    public static func encode(archive entries: [(String, NDArray)]) throws -> Data {
        Data(try attributing(file: memoryName) { try encodeArchive(entries) })
    }

    /// Returns the `.npz` image of `archive`: the bytes `write(_:to:)` would write.
    public static func encode(_ archive: NPZArchive) throws -> Data {
        try encode(archive: archive.entries.map { ($0.key, $0.array) })
    }

    static func encodeArray(_ array: NDArray) throws -> [UInt8] {
        try NPYCodec.validate(array)
        var out: [UInt8] = []
        out.reserveCapacity(NPYCodec.encodedSize(array))
        try NPYCodec.encode(array, into: &out)
        return out
    }

    static func encodeArchive(_ entries: [(String, NDArray)]) throws -> [UInt8] {
        var seen = Set<String>()
        var total = 22
        for (key, array) in entries {
            try attributing(member: key + ".npy") {
                guard seen.insert(key).inserted else {
                    throw NumPyError(.invalidArgument, "duplicate key '\(key)' — expected each key once")
                }
                try NPYCodec.validate(array)
            }
            total += 76 + 2 * key.utf8.count + NPYCodec.encodedSize(array)
        }
        var writer = ZipCodec.Writer(reservingCapacity: total)
        for (key, array) in entries {
            try attributing(member: key + ".npy") {
                try writer.addStored(name: key + ".npy") { try NPYCodec.encode(array, into: &$0) }
            }
        }
        return try writer.finish()
    }
}
