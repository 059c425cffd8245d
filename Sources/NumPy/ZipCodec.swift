// The subset of the zip format (PKWARE APPNOTE 6.3) that `.npz` files use.
//
// Reading goes through the central directory (so data descriptors, bit 3, need no special
// handling), understands zip64 end records and zip64 extra fields, and supports STORED and raw
// DEFLATE members, verifying each member's CRC-32. Writing produces what the Caffe golden
// generator and Python's `zipfile` produce for small archives: no extra fields, DOS time
// 1980-01-01 00:00, Unix mode 0644, UTF-8 flag only for non-ASCII names.

import CZlib

/// One central-directory entry.
struct ZipMember {
    var name: String
    var flags: UInt16
    var method: UInt16
    var crc: UInt32
    var compressedSize: Int
    var uncompressedSize: Int
    var localHeaderOffset: Int
}

enum ZipCodec {
    static let localSignature: UInt32 = 0x0403_4B50
    static let centralSignature: UInt32 = 0x0201_4B50
    static let endSignature: UInt32 = 0x0605_4B50
    static let zip64EndSignature: UInt32 = 0x0606_4B50
    static let zip64LocatorSignature: UInt32 = 0x0706_4B50

    // MARK: Reading

    /// Locates the end-of-central-directory record: the last "PK\5\6" whose comment length
    /// reaches exactly the end of the data.
    static func findEnd(_ v: ByteView) throws -> Int {
        guard v.count >= 22 else {
            throw NumPyError(.truncated, "file is only \(v.count) bytes — expected a .npz (zip) archive, which ends with a 22-byte end-of-central-directory record")
        }
        let lowest = max(0, v.count - 22 - 0xFFFF)
        var off = v.count - 22
        while off >= lowest {
            if v.raw[off] == 0x50, v.raw[off + 1] == 0x4B, v.raw[off + 2] == 5, v.raw[off + 3] == 6,
               off + 22 + Int(v.u16(at: off + 20)) == v.count {
                return off
            }
            off -= 1
        }
        if v.raw.starts(with: NPYCodec.magic) {
            throw NumPyError(.corrupt, "this is a .npy file, not a .npz archive — expected a zip archive written by np.savez")
        }
        if v.u32(at: 0) == localSignature {
            throw NumPyError(.truncated, "no zip end-of-central-directory record — the archive is truncated or corrupt")
        }
        throw NumPyError(.corrupt, "not a zip archive (no end-of-central-directory record) — expected a .npz file written by np.savez")
    }

    /// Reads the central directory, resolving zip64 sizes and offsets.
    static func centralDirectory(_ v: ByteView) throws -> [ZipMember] {
        let end = try findEnd(v)
        var total = Int(v.u16(at: end + 10))
        var cdSize = Int(v.u32(at: end + 12))
        var cdOffset = Int(v.u32(at: end + 16))
        var disk = Int(v.u16(at: end + 4)), cdDisk = Int(v.u16(at: end + 6))

        if end >= 20, v.u32(at: end - 20) == zip64LocatorSignature {
            let recordOffset = try checkedInt(v.u64(end - 20 + 8, "the zip64 end locator"), "zip64 end record offset")
            let r = try v.range(recordOffset, 56, "the zip64 end-of-central-directory record")
            guard v.u32(at: r.lowerBound) == zip64EndSignature else {
                throw NumPyError(.corrupt, "the zip64 locator points to offset \(recordOffset), which holds no zip64 end-of-central-directory record")
            }
            disk = try checkedInt(v.u32(at: r.lowerBound + 16), "disk number")
            cdDisk = try checkedInt(v.u32(at: r.lowerBound + 20), "disk number")
            total = try checkedInt(v.u64(at: r.lowerBound + 32), "zip64 entry count")
            cdSize = try checkedInt(v.u64(at: r.lowerBound + 40), "zip64 central directory size")
            cdOffset = try checkedInt(v.u64(at: r.lowerBound + 48), "zip64 central directory offset")
        }
        guard disk == 0, cdDisk == 0 else {
            throw NumPyError(.unsupported, "multi-disk (split) zip archives are not supported — expected a single .npz file")
        }
        let cd = try v.range(cdOffset, cdSize, "the central directory (\(total) entries)")

        var members: [ZipMember] = []
        members.reserveCapacity(min(total, cdSize / 46))
        var pos = cd.lowerBound
        for index in 0 ..< total {
            let what = "central directory entry #\(index + 1)"
            guard pos + 46 <= cd.upperBound else {
                throw NumPyError(.corrupt, "\(what) lies outside the central directory (\(cdOffset)..<\(cd.upperBound)) — the archive is truncated or corrupt")
            }
            guard v.u32(at: pos) == centralSignature else {
                throw NumPyError(.corrupt, "\(what) at offset \(pos) has a bad signature — the central directory is corrupt")
            }
            let flags = v.u16(at: pos + 8)
            let method = v.u16(at: pos + 10)
            let crc = v.u32(at: pos + 16)
            var compressed = UInt64(v.u32(at: pos + 20))
            var uncompressed = UInt64(v.u32(at: pos + 24))
            let nameLength = Int(v.u16(at: pos + 28))
            let extraLength = Int(v.u16(at: pos + 30))
            let commentLength = Int(v.u16(at: pos + 32))
            var localOffset = UInt64(v.u32(at: pos + 42))
            let variable = nameLength + extraLength + commentLength
            guard pos + 46 + variable <= cd.upperBound else {
                throw NumPyError(.corrupt, "\(what) (name, extra field and comment: \(variable) bytes) runs past the end of the central directory")
            }
            let nameBytes = UnsafeRawBufferPointer(rebasing: v.raw[pos + 46 ..< pos + 46 + nameLength])
            let name = String(decoding: nameBytes, as: UTF8.self)

            if compressed == 0xFFFF_FFFF || uncompressed == 0xFFFF_FFFF || localOffset == 0xFFFF_FFFF {
                // Zip64 extended information (header 0x0001): 8-byte values, in this order, for
                // exactly those fields whose 32-bit slot holds 0xFFFFFFFF.
                var e = pos + 46 + nameLength
                let extraEnd = e + extraLength
                while e + 4 <= extraEnd {
                    let id = v.u16(at: e), size = Int(v.u16(at: e + 2))
                    let start = e + 4
                    guard start + size <= extraEnd else {
                        throw NumPyError(.corrupt, "\(what) ('\(name)'): extra field 0x\(String(id, radix: 16)) overruns its \(extraLength)-byte area")
                    }
                    if id == 0x0001 {
                        var p = start
                        func next() throws -> UInt64 {
                            guard p + 8 <= start + size else {
                                throw NumPyError(.corrupt, "\(what) ('\(name)'): zip64 extra field is \(size) bytes — too short for the 64-bit sizes and offset it must hold")
                            }
                            defer { p += 8 }
                            return v.u64(at: p)
                        }
                        if uncompressed == 0xFFFF_FFFF { uncompressed = try next() }
                        if compressed == 0xFFFF_FFFF { compressed = try next() }
                        if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                        break
                    }
                    e = start + size
                }
            }
            members.append(ZipMember(
                name: name, flags: flags, method: method, crc: crc,
                compressedSize: try checkedInt(compressed, "compressed size of '\(name)'"),
                uncompressedSize: try checkedInt(uncompressed, "uncompressed size of '\(name)'"),
                localHeaderOffset: try checkedInt(localOffset, "local header offset of '\(name)'")))
            pos += 46 + variable
        }
        return members
    }

    /// Calls `body` with the uncompressed, CRC-checked contents of `m`.
    static func withContents<T>(_ v: ByteView, _ m: ZipMember, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        if m.flags & 0x41 != 0 {
            throw NumPyError(.unsupported, "member is encrypted — expected an unencrypted .npz archive")
        }
        guard m.method == 0 || m.method == 8 else {
            let known: [UInt16: String] = [9: "Deflate64", 12: "BZIP2", 14: "LZMA", 93: "Zstandard", 95: "XZ"]
            throw NumPyError(.unsupported, "compression method \(m.method)\(known[m.method].map { " (\($0))" } ?? "") — expected STORED (0) or DEFLATE (8), as np.savez / np.savez_compressed write")
        }
        let lh = try v.range(m.localHeaderOffset, 30, "the local file header")
        guard v.u32(at: lh.lowerBound) == localSignature else {
            throw NumPyError(.corrupt, "no local file header at offset \(m.localHeaderOffset) (bad signature) — the central directory is corrupt")
        }
        let dataStart = lh.upperBound + Int(v.u16(at: lh.lowerBound + 26)) + Int(v.u16(at: lh.lowerBound + 28))
        let data = try v.slice(dataStart, m.compressedSize, "the member data (\(m.compressedSize) bytes declared)")
        if m.method == 0 {
            guard m.compressedSize == m.uncompressedSize else {
                throw NumPyError(.corrupt, "STORED member has compressed size \(m.compressedSize) but uncompressed size \(m.uncompressedSize) — expected them to be equal")
            }
            try checkCRC(data, m)
            return try body(data)
        }
        // DEFLATE expands at most ~1032:1; anything beyond that is a corrupt size, and refusing it
        // keeps a flipped size field from triggering a huge allocation.
        guard m.uncompressedSize / 1032 <= m.compressedSize + 1 else {
            throw NumPyError(.corrupt, "declared uncompressed size \(m.uncompressedSize) is impossible for \(m.compressedSize) bytes of DEFLATE data — the archive is corrupt")
        }
        let inflated = try inflateRaw(data, expectedSize: m.uncompressedSize)
        return try inflated.withUnsafeBytes { out in
            try checkCRC(out, m)
            return try body(out)
        }
    }

    private static func checkCRC(_ data: UnsafeRawBufferPointer, _ m: ZipMember) throws {
        let actual = crc32(data)
        guard actual == m.crc else {
            throw NumPyError(.corrupt, "CRC-32 mismatch: data hashes to 0x\(hex(actual)) but the archive records 0x\(hex(m.crc)) — the member is corrupt")
        }
    }

    private static func hex(_ x: UInt32) -> String {
        let s = String(x, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    /// zlib's CRC-32 of `data` (chunked so sizes beyond 4 GiB work).
    static func crc32(_ data: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CZlib.crc32(0, nil, 0)
        guard var p = data.baseAddress?.assumingMemoryBound(to: Bytef.self) else { return UInt32(crc) }
        var left = data.count
        while left > 0 {
            let n = min(left, 1 << 30)
            crc = CZlib.crc32(crc, p, uInt(n))
            p += n
            left -= n
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    /// Inflates raw DEFLATE data (no zlib/gzip wrapper) that must produce exactly `expectedSize`
    /// bytes.
    static func inflateRaw(_ input: UnsafeRawBufferPointer, expectedSize: Int) throws -> [UInt8] {
        var strm = z_stream()
        let rc0 = inflateInit2_(&strm, -MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard rc0 == Z_OK else {
            throw NumPyError(.io, "zlib inflateInit2 failed with code \(rc0)")
        }
        defer { inflateEnd(&strm) }
        let chunk = 1 << 30
        return try [UInt8](unsafeUninitializedCapacity: max(expectedSize, 1)) { out, initialized in
            let outBase = out.baseAddress!.withMemoryRebound(to: Bytef.self, capacity: out.count) { $0 }
            var inPtr = input.baseAddress.map { UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: Bytef.self)) }
            var inLeft = input.count
            var outPtr = outBase
            var outLeft = expectedSize
            strm.next_out = outBase
            strm.avail_out = 0
            strm.avail_in = 0
            while true {
                if strm.avail_in == 0, inLeft > 0, let p = inPtr {
                    let n = min(inLeft, chunk)
                    strm.next_in = p
                    strm.avail_in = uInt(n)
                    inPtr = p + n
                    inLeft -= n
                }
                if strm.avail_out == 0, outLeft > 0 {
                    let n = min(outLeft, chunk)
                    strm.next_out = outPtr
                    strm.avail_out = uInt(n)
                    outPtr += n
                    outLeft -= n
                }
                let rc = inflate(&strm, Z_NO_FLUSH)
                if rc == Z_STREAM_END { break }
                switch rc {
                case Z_OK:
                    continue
                case Z_BUF_ERROR where strm.avail_in == 0 && inLeft == 0:
                    throw NumPyError(.truncated, "DEFLATE data ends after \(strm.total_out) of \(expectedSize) bytes — the member is truncated or corrupt")
                case Z_BUF_ERROR where strm.avail_out == 0 && outLeft == 0:
                    throw NumPyError(.corrupt, "DEFLATE data expands beyond the \(expectedSize) bytes the archive declares — the member is corrupt")
                case Z_DATA_ERROR:
                    let why = strm.msg.map { String(cString: $0) } ?? "invalid data"
                    throw NumPyError(.corrupt, "invalid DEFLATE data (\(why)) — the member is corrupt")
                case Z_MEM_ERROR:
                    throw NumPyError(.io, "zlib ran out of memory inflating \(expectedSize) bytes")
                default:
                    throw NumPyError(.corrupt, "zlib inflate failed with code \(rc) — the member is corrupt")
                }
            }
            guard strm.total_out == expectedSize else {
                throw NumPyError(.corrupt, "DEFLATE data expands to \(strm.total_out) bytes but the archive declares \(expectedSize)")
            }
            initialized = expectedSize
        }
    }

    /// Compresses `input` as raw DEFLATE (used only for tests and tooling; `.npz` files written
    /// by this module are STORED, like `np.savez`).
    static func deflateRaw(_ input: [UInt8], level: Int32 = 6) throws -> [UInt8] {
        var strm = z_stream()
        guard deflateInit2_(&strm, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY,
                            zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw NumPyError(.io, "zlib deflateInit2 failed")
        }
        defer { deflateEnd(&strm) }
        guard input.count < Int(UInt32.max) / 2 else {
            throw NumPyError(.invalidArgument, "member of \(input.count) bytes is too large to compress")
        }
        let bound = Int(deflateBound(&strm, uLong(input.count)))
        var result: [UInt8] = []
        try input.withUnsafeBytes { src in
            result = try [UInt8](unsafeUninitializedCapacity: bound) { out, initialized in
                strm.next_in = UnsafeMutablePointer(mutating: src.baseAddress?.assumingMemoryBound(to: Bytef.self))
                strm.avail_in = uInt(src.count)
                strm.next_out = out.baseAddress
                strm.avail_out = uInt(bound)
                guard deflate(&strm, Z_FINISH) == Z_STREAM_END else {
                    throw NumPyError(.io, "zlib deflate did not finish")
                }
                initialized = Int(strm.total_out)
            }
        }
        return result
    }

    // MARK: Writing

    /// Builds a zip archive member by member, in memory.
    struct Writer {
        private(set) var bytes: [UInt8] = []
        private var central: [UInt8] = []
        private var count = 0
        static let limit = Int(UInt32.max)  // 0xFFFFFFFF itself means "see zip64"

        init(reservingCapacity n: Int = 0) { bytes.reserveCapacity(n) }

        /// Adds a STORED member whose contents `write` appends to the archive buffer.
        mutating func addStored(name: String, _ write: (inout [UInt8]) throws -> Void) throws {
            let offset = bytes.count
            let header = try localHeader(name: name, method: 0)
            bytes += header
            let dataStart = bytes.count
            try write(&bytes)
            let size = bytes.count - dataStart
            let crc = bytes.withUnsafeBytes { ZipCodec.crc32(UnsafeRawBufferPointer(rebasing: $0[dataStart...])) }
            try finishMember(name: name, method: 0, offset: offset, crc: crc, compressed: size, uncompressed: size)
        }

        /// Adds a DEFLATE-compressed member.
        mutating func addDeflated(name: String, contents: [UInt8]) throws {
            let offset = bytes.count
            bytes += try localHeader(name: name, method: 8)
            let packed = try ZipCodec.deflateRaw(contents)
            bytes += packed
            let crc = contents.withUnsafeBytes { ZipCodec.crc32($0) }
            try finishMember(name: name, method: 8, offset: offset, crc: crc, compressed: packed.count, uncompressed: contents.count)
        }

        private func localHeader(name: String, method: UInt16) throws -> [UInt8] {
            let nameBytes = Array(name.utf8)
            guard nameBytes.count <= 0xFFFF else {
                throw NumPyError(.invalidArgument, "member name is \(nameBytes.count) bytes — expected at most 65535", member: name)
            }
            guard bytes.count < Writer.limit, count < 0xFFFF - 1 else {
                throw NumPyError(.invalidArgument, "archive exceeds 4 GiB or 65534 members — zip64 output is not supported; split the arrays over several .npz files", member: name)
            }
            var h: [UInt8] = []
            h.reserveCapacity(30 + nameBytes.count)
            h.appendLE(ZipCodec.localSignature)
            h.appendLE(UInt16(20))                      // version needed: 2.0
            h.appendLE(Writer.flags(nameBytes))
            h.appendLE(method)
            h.appendLE(UInt16(0))                       // DOS time 00:00:00
            h.appendLE(UInt16(0x21))                    // DOS date 1980-01-01
            h.appendLE(UInt32(0))                       // CRC, patched later
            h.appendLE(UInt32(0))                       // compressed size, patched later
            h.appendLE(UInt32(0))                       // uncompressed size, patched later
            h.appendLE(UInt16(nameBytes.count))
            h.appendLE(UInt16(0))                       // no extra field
            h += nameBytes
            return h
        }

        private static func flags(_ name: [UInt8]) -> UInt16 {
            name.contains { $0 >= 0x80 } ? 0x0800 : 0  // bit 11: name is UTF-8
        }

        private mutating func finishMember(name: String, method: UInt16, offset: Int, crc: UInt32,
                                           compressed: Int, uncompressed: Int) throws {
            guard compressed < Writer.limit, uncompressed < Writer.limit else {
                throw NumPyError(.invalidArgument, "member is \(uncompressed) bytes — expected less than 4 GiB (zip64 output is not supported)", member: name)
            }
            func patch(_ at: Int, _ v: UInt32) {
                for k in 0 ..< 4 { bytes[offset + at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
            }
            patch(14, crc)
            patch(18, UInt32(compressed))
            patch(22, UInt32(uncompressed))

            let nameBytes = Array(name.utf8)
            central.appendLE(ZipCodec.centralSignature)
            central.appendLE(UInt16(0x0314))            // made by: Unix, zip 2.0
            central.appendLE(UInt16(20))                // version needed: 2.0
            central.appendLE(Writer.flags(nameBytes))
            central.appendLE(method)
            central.appendLE(UInt16(0))
            central.appendLE(UInt16(0x21))
            central.appendLE(crc)
            central.appendLE(UInt32(compressed))
            central.appendLE(UInt32(uncompressed))
            central.appendLE(UInt16(nameBytes.count))
            central.appendLE(UInt16(0))                 // extra
            central.appendLE(UInt16(0))                 // comment
            central.appendLE(UInt16(0))                 // disk
            central.appendLE(UInt16(0))                 // internal attributes
            central.appendLE(UInt32(0o644) << 16)       // external attributes: -rw-r--r--
            central.appendLE(UInt32(offset))
            central += nameBytes
            count += 1
        }

        /// Appends the central directory and end record and returns the archive.
        mutating func finish() throws -> [UInt8] {
            let cdOffset = bytes.count
            guard cdOffset < Writer.limit, central.count < Writer.limit else {
                throw NumPyError(.invalidArgument, "archive exceeds 4 GiB — zip64 output is not supported; split the arrays over several .npz files")
            }
            bytes += central
            bytes.appendLE(ZipCodec.endSignature)
            bytes.appendLE(UInt16(0))
            bytes.appendLE(UInt16(0))
            bytes.appendLE(UInt16(count))
            bytes.appendLE(UInt16(count))
            bytes.appendLE(UInt32(central.count))
            bytes.appendLE(UInt32(cdOffset))
            bytes.appendLE(UInt16(0))
            central = []
            return bytes
        }
    }
}
