// The `.npy` format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//   "\x93NUMPY" major minor  header-length (u16 for 1.0, u32 for 2.0/3.0, little-endian)
//   header: a Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': ...} padded with
//           spaces and a final '\n' so the data starts on a 64-byte boundary
//   data:   prod(shape) items of dtype `descr`, in C or Fortran order.

/// The element types the reader converts to `Float`.
enum DType: Sendable {
    case float16, float32, float64
    case int8, int16, int32, int64
    case uint8, uint16, uint32, uint64
    case bool

    var size: Int {
        switch self {
        case .int8, .uint8, .bool: return 1
        case .float16, .int16, .uint16: return 2
        case .float32, .int32, .uint32: return 4
        case .float64, .int64, .uint64: return 8
        }
    }

    static let supportedList = "f2/f4/f8, i1/i2/i4/i8, u1/u2/u4/u8 or b1"

    /// Parses a NumPy type string such as `<f4`, `|u1`, `>i8`, `?`; returns the type and whether
    /// it is big-endian.
    static func parse(_ descr: String) throws -> (DType, bigEndian: Bool) {
        var body = Substring(descr)
        var big = false
        if let first = body.first, "<>|=!".contains(first) {
            big = first == ">" || first == "!"
            body = body.dropFirst()
        }
        let unsupported = NumPyError(.unsupported,
            "unsupported dtype '\(descr)' — expected a real numeric dtype (\(supportedList))")
        if body == "?" { return (.bool, false) }
        guard let kind = body.first, let size = Int(body.dropFirst()) else { throw unsupported }
        let t: DType
        switch (kind, size) {
        case ("f", 2): t = .float16
        case ("f", 4): t = .float32
        case ("f", 8): t = .float64
        case ("i", 1): t = .int8
        case ("i", 2): t = .int16
        case ("i", 4): t = .int32
        case ("i", 8): t = .int64
        case ("u", 1): t = .uint8
        case ("u", 2): t = .uint16
        case ("u", 4): t = .uint32
        case ("u", 8): t = .uint64
        case ("b", 1): t = .bool
        default: throw unsupported
        }
        return (t, t.size > 1 && big)
    }
}

/// The decoded header of a `.npy` file.
struct NPYHeader {
    var descr: String
    var dtype: DType
    var bigEndian: Bool
    var fortranOrder: Bool
    var shape: [Int]
    var count: Int
    /// Offset of the first data byte from the start of the file.
    var dataOffset: Int
}

enum NPYCodec {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY

    // MARK: Reading

    static func parseHeader(_ v: ByteView) throws -> NPYHeader {
        guard v.count >= 10 else {
            if v.count >= 6, !zip(magic, v.raw.prefix(6)).allSatisfy({ $0 == $1 }) {
                throw badMagic(v)
            }
            throw NumPyError(.truncated, "file is only \(v.count) bytes — expected a .npy file of at least 10 bytes (magic, version, header length)")
        }
        guard zip(magic, v.raw.prefix(6)).allSatisfy({ $0 == $1 }) else { throw badMagic(v) }
        let major = v.raw[6], minor = v.raw[7]
        let headerLength: Int, headerStart: Int
        switch (major, minor) {
        case (1, 0):
            headerLength = Int(try v.u16(8, "the .npy header length")); headerStart = 10
        case (2, 0), (3, 0):
            headerLength = try checkedInt(try v.u32(8, "the .npy header length"), "header length"); headerStart = 12
        default:
            throw NumPyError(.unsupported, "unsupported .npy format version \(major).\(minor) — expected 1.0, 2.0 or 3.0")
        }
        let text = try v.slice(headerStart, headerLength, "the .npy header (\(headerLength) bytes declared)")
        guard case .dict(let items) = try PyLiteralParser.parse(Array(text)) else {
            throw NumPyError(.corrupt, "malformed .npy header: not a dictionary — expected {'descr': ..., 'fortran_order': ..., 'shape': ...}")
        }
        func field(_ key: String) throws -> PyValue {
            guard let v = items.last(where: { $0.0 == key })?.1 else {
                throw NumPyError(.corrupt, "malformed .npy header: no '\(key)' key — expected 'descr', 'fortran_order' and 'shape'")
            }
            return v
        }
        let descrValue = try field("descr")
        guard case .string(let descr) = descrValue else {
            if case .list = descrValue {
                throw NumPyError(.unsupported, "unsupported structured dtype \(descrValue.repr) — expected a real numeric dtype (\(DType.supportedList))")
            }
            throw NumPyError(.corrupt, "malformed .npy header: 'descr' is \(descrValue.repr) — expected a dtype string such as '<f4'")
        }
        let (dtype, big) = try DType.parse(descr)
        let fortranValue = try field("fortran_order")
        guard case .bool(let fortran) = fortranValue else {
            throw NumPyError(.corrupt, "malformed .npy header: 'fortran_order' is \(fortranValue.repr) — expected True or False")
        }
        let shapeValue = try field("shape")
        var dims: [PyValue] = []
        switch shapeValue {
        case .tuple(let d), .list(let d): dims = d
        default:
            throw NumPyError(.corrupt, "malformed .npy header: 'shape' is \(shapeValue.repr) — expected a tuple of non-negative integers")
        }
        var shape: [Int] = []
        shape.reserveCapacity(dims.count)
        for d in dims {
            guard case .int(let n) = d, n >= 0 else {
                throw NumPyError(.corrupt, "malformed .npy header: 'shape' is \(shapeValue.repr) — expected a tuple of non-negative integers")
            }
            shape.append(n)
        }
        guard let count = NDArray.elementCount(shape) else {
            throw NumPyError(.corrupt, "malformed .npy header: shape \(shapeValue.repr) has more elements than can be addressed")
        }
        return NPYHeader(descr: descr, dtype: dtype, bigEndian: big, fortranOrder: fortran, shape: shape,
                         count: count, dataOffset: headerStart + headerLength)
    }

    private static func badMagic(_ v: ByteView) -> NumPyError {
        let found = v.raw.prefix(6).map { b in
            (0x20 ..< 0x7F).contains(b) ? String(Character(Unicode.Scalar(b))) : "\\x" + String(b, radix: 16)
        }.joined()
        return NumPyError(.corrupt, "not a .npy file: starts with \"\(found)\" — expected the magic bytes \\x93NUMPY")
    }

    /// Decodes a complete `.npy` image into a C-ordered float32 array. Bytes after the array data
    /// are ignored, as NumPy does.
    static func decode(_ raw: UnsafeRawBufferPointer) throws -> NDArray {
        let v = ByteView(raw)
        let h = try parseHeader(v)
        let (byteCount, overflow) = h.count.multipliedReportingOverflow(by: h.dtype.size)
        guard !overflow else {
            throw NumPyError(.corrupt, "shape \(h.shape) of '\(h.descr)' is too large to address")
        }
        guard let src = try? v.slice(h.dataOffset, byteCount, "") else {
            throw NumPyError(.truncated,
                "array data is truncated: the header declares shape \(h.shape) of '\(h.descr)' = \(byteCount) bytes at offset \(h.dataOffset), but only \(max(0, v.count - h.dataOffset)) bytes follow")
        }
        var data = convert(src, h.dtype, bigEndian: h.bigEndian, count: h.count)
        if h.fortranOrder && h.shape.count > 1 && h.count > 0 {
            data = fortranToC(data, shape: h.shape)
        }
        return NDArray(shape: h.shape, data: data)
    }

    @inline(__always)
    private static func fill<T: FixedWidthInteger>(
        _ out: UnsafeMutableBufferPointer<Float>, _ src: UnsafeRawBufferPointer, _: T.Type, big: Bool,
        _ f: (T) -> Float
    ) {
        let w = MemoryLayout<T>.size
        if big {
            for k in 0 ..< out.count { out[k] = f(T(bigEndian: src.loadUnaligned(fromByteOffset: k * w, as: T.self))) }
        } else {
            for k in 0 ..< out.count { out[k] = f(T(littleEndian: src.loadUnaligned(fromByteOffset: k * w, as: T.self))) }
        }
    }

    static func convert(_ src: UnsafeRawBufferPointer, _ dtype: DType, bigEndian big: Bool, count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { out, initialized in
            let out = UnsafeMutableBufferPointer(rebasing: out[0 ..< count])
            switch dtype {
            case .float32:
                #if _endian(little)
                if !big {
                    if count > 0 { UnsafeMutableRawBufferPointer(out).copyMemory(from: src) }
                    break
                }
                #endif
                fill(out, src, UInt32.self, big: big) { Float(bitPattern: $0) }
            case .float64: fill(out, src, UInt64.self, big: big) { Float(Double(bitPattern: $0)) }
            case .float16: fill(out, src, UInt16.self, big: big) { halfToFloat($0) }
            case .int8: fill(out, src, Int8.self, big: false) { Float($0) }
            case .int16: fill(out, src, Int16.self, big: big) { Float($0) }
            case .int32: fill(out, src, Int32.self, big: big) { Float($0) }
            case .int64: fill(out, src, Int64.self, big: big) { Float($0) }
            case .uint8: fill(out, src, UInt8.self, big: false) { Float($0) }
            case .uint16: fill(out, src, UInt16.self, big: big) { Float($0) }
            case .uint32: fill(out, src, UInt32.self, big: big) { Float($0) }
            case .uint64: fill(out, src, UInt64.self, big: big) { Float($0) }
            case .bool: fill(out, src, UInt8.self, big: false) { $0 != 0 ? 1 : 0 }
            }
            initialized = count
        }
    }

    /// IEEE 754 binary16 → binary32, exact (NaN payloads are kept, as NumPy does).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32(h >> 10) & 0x1F
        let mant = UInt32(h & 0x3FF)
        if exp == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
        if exp == 0 {
            let f = Float(mant) * 0x1p-24
            return sign != 0 ? -f : f
        }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
    }

    /// Reorders elements stored in Fortran (column-major) order into C (row-major) order.
    static func fortranToC(_ f: [Float], shape: [Int]) -> [Float] {
        let n = shape.count
        var cStride = [Int](repeating: 1, count: n)
        for k in stride(from: n - 2, through: 0, by: -1) { cStride[k] = cStride[k + 1] * shape[k + 1] }
        var idx = [Int](repeating: 0, count: n)
        var c = 0
        return [Float](unsafeUninitializedCapacity: f.count) { out, initialized in
            for x in f {
                out[c] = x
                // Advance the multi-index in Fortran order (axis 0 fastest), tracking the C offset.
                var k = 0
                while k < n {
                    idx[k] += 1
                    c += cStride[k]
                    if idx[k] < shape[k] { break }
                    c -= cStride[k] * shape[k]
                    idx[k] = 0
                    k += 1
                }
            }
            initialized = f.count
        }
    }

    // MARK: Writing

    /// The preamble (magic, version, length, padded header) NumPy's `np.save` writes for a
    /// C-ordered little-endian float32 array of `shape`: version 1.0 unless the header needs more
    /// than 65535 bytes, including NumPy's spare space for growing the first axis.
    static func preamble(shape: [Int]) -> [UInt8] {
        let dims = shape.map(String.init)
        let shapeRepr = dims.count == 1 ? "(\(dims[0]),)" : "(" + dims.joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeRepr), }"
        if let first = dims.first { header += String(repeating: " ", count: max(0, 21 - first.count)) }
        let text = Array(header.utf8)
        let hlen = text.count + 1
        var prefixLength = 10
        var pad = 64 - ((prefixLength + hlen) % 64)
        if hlen + pad > Int(UInt16.max) {
            prefixLength = 12
            pad = 64 - ((prefixLength + hlen) % 64)
        }
        var out: [UInt8] = magic
        out.reserveCapacity(prefixLength + hlen + pad)
        if prefixLength == 10 {
            out += [1, 0]
            out.appendLE(UInt16(hlen + pad))
        } else {
            out += [2, 0]
            out.appendLE(UInt32(hlen + pad))
        }
        out += text
        out += [UInt8](repeating: 0x20, count: pad)
        out.append(0x0A)
        return out
    }

    static func validate(_ a: NDArray) throws {
        guard let n = NDArray.elementCount(a.shape), n == a.data.count else {
            throw NumPyError(.invalidArgument,
                "cannot write an array of shape \(a.shape) with \(a.data.count) elements — expected non-negative dimensions whose product equals the element count")
        }
    }

    /// The size in bytes of `encode(a)`.
    static func encodedSize(_ a: NDArray) -> Int {
        preamble(shape: a.shape).count + 4 * a.data.count
    }

    /// Appends the `.npy` image of `a` (`<f4`, C order) to `out`.
    static func encode(_ a: NDArray, into out: inout [UInt8]) throws {
        try validate(a)
        out += preamble(shape: a.shape)
        #if _endian(little)
        a.data.withUnsafeBytes { out.append(contentsOf: $0) }
        #else
        for x in a.data { out.appendLE(x.bitPattern) }
        #endif
    }
}
