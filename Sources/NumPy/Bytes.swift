// Bounds-checked little-endian access to a byte buffer, and a little-endian byte sink.
//
// Every read goes through `ByteView.range(_:_:)`, which rejects negative offsets, overflowing sums
// and anything past the end, so parsers built on it can only fail with a `NumPyError`.

/// A read-only view of bytes whose accessors throw instead of reading out of bounds.
struct ByteView {
    let raw: UnsafeRawBufferPointer

    init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

    var count: Int { raw.count }

    /// The checked range `offset ..< offset + length`, or a `.truncated` error mentioning `what`.
    @inline(__always)
    func range(_ offset: Int, _ length: Int, _ what: @autoclosure () -> String) throws -> Range<Int> {
        guard offset >= 0, length >= 0 else {
            throw NumPyError(.corrupt, "\(what()) has an invalid offset \(offset) or length \(length)")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= raw.count else {
            throw NumPyError(.truncated,
                "\(what()) needs bytes \(offset)..<\(overflow ? "∞" : String(end)) but the data is only \(raw.count) bytes — the file is truncated or corrupt")
        }
        return offset ..< end
    }

    /// The sub-buffer `offset ..< offset + length`, bounds-checked.
    func slice(_ offset: Int, _ length: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        let r = try range(offset, length, what())
        return UnsafeRawBufferPointer(rebasing: raw[r])
    }

    func u8(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt8 {
        let r = try range(offset, 1, what())
        return raw[r.lowerBound]
    }

    func u16(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt16 {
        let r = try range(offset, 2, what())
        return UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt16.self))
    }

    func u32(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt32 {
        let r = try range(offset, 4, what())
        return UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt32.self))
    }

    func u64(_ offset: Int, _ what: @autoclosure () -> String) throws -> UInt64 {
        let r = try range(offset, 8, what())
        return UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: r.lowerBound, as: UInt64.self))
    }

    /// Unchecked little-endian reads for structures whose full extent was already validated.
    @inline(__always) func u16(at o: Int) -> UInt16 {
        UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self))
    }
    @inline(__always) func u32(at o: Int) -> UInt32 {
        UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self))
    }
    @inline(__always) func u64(at o: Int) -> UInt64 {
        UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))
    }
}

/// Converts a size or offset read from a file to `Int`, rejecting values that do not fit.
@inline(__always)
func checkedInt<T: BinaryInteger>(_ v: T, _ what: @autoclosure () -> String) throws -> Int {
    guard let i = Int(exactly: v) else {
        throw NumPyError(.corrupt, "\(what()) \(v) is larger than any file this reader can hold")
    }
    return i
}

extension Array where Element == UInt8 {
    @inline(__always) mutating func appendLE(_ v: UInt16) {
        append(UInt8(truncatingIfNeeded: v)); append(UInt8(truncatingIfNeeded: v >> 8))
    }
    @inline(__always) mutating func appendLE(_ v: UInt32) {
        appendLE(UInt16(truncatingIfNeeded: v)); appendLE(UInt16(truncatingIfNeeded: v >> 16))
    }
    @inline(__always) mutating func appendLE(_ v: UInt64) {
        appendLE(UInt32(truncatingIfNeeded: v)); appendLE(UInt32(truncatingIfNeeded: v >> 32))
    }
}
