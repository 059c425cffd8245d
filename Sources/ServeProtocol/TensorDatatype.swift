import Foundation

/// A KServe v2 tensor datatype (`FP32`, `INT64`, …) and how its values become the FP32 the nets run on.
///
/// The nets compute in FP32. A tensor of another numeric type is converted only when every value
/// survives the trip exactly (`UINT8` pixels always do; an `INT64` of 2^40 or an `FP64` of 0.1 do not),
/// otherwise the request is refused, naming the first value that would change. `BYTES` is refused.
///
///     let values = try TensorDatatype.uint8.floats(fromLittleEndian: bytes, count: 3)   // [0, 128, 255]
public enum TensorDatatype: String, Sendable, CaseIterable {
    case bool = "BOOL"
    case uint8 = "UINT8", uint16 = "UINT16", uint32 = "UINT32", uint64 = "UINT64"
    case int8 = "INT8", int16 = "INT16", int32 = "INT32", int64 = "INT64"
    case fp16 = "FP16", fp32 = "FP32", fp64 = "FP64"
    case bytes = "BYTES"

    /// Bytes per element in the binary tensor data extension (nil for `BYTES`, which is length-prefixed).
    public var byteSize: Int? {
        switch self {
        case .bool, .uint8, .int8: 1
        case .uint16, .int16, .fp16: 2
        case .uint32, .int32, .fp32: 4
        case .uint64, .int64, .fp64: 8
        case .bytes: nil
        }
    }

    /// Triton's model-configuration name (`TYPE_FP32`).
    public var configName: String { self == .bytes ? "TYPE_STRING" : "TYPE_" + rawValue }

    /// Reads `count` little-endian elements and converts them to Float, refusing any that would change.
    public func floats(fromLittleEndian bytes: ArraySlice<UInt8>, count: Int) throws(ServeError) -> [Float] {
        guard let size = byteSize else { throw ServeError(.badRequest, "datatype BYTES is not supported: these models take numeric tensors (FP32)") }
        precondition(bytes.count == count * size, "the caller checks the byte count")
        if self == .fp32 {
            // The common case (tritonclient's default): one pass, no per-byte work.
            return bytes.withUnsafeBytes { raw in
                (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        }
        var result = [Float](repeating: 0, count: count)
        let base = bytes.startIndex
        func word(_ i: Int, _ n: Int) -> UInt64 {
            var v: UInt64 = 0
            for k in 0..<n { v |= UInt64(bytes[base + i * n + k]) << (8 * k) }
            return v
        }
        for i in 0..<count {
            let raw = word(i, size)
            let value: Float
            switch self {
            case .fp32: value = Float(bitPattern: UInt32(truncatingIfNeeded: raw))
            case .fp16: value = Self.halfToFloat(UInt16(truncatingIfNeeded: raw))
            case .fp64:
                let d = Double(bitPattern: raw)
                value = try exactFloat(d, index: i)
            case .bool: value = raw == 0 ? 0 : 1
            case .uint8, .uint16, .uint32, .uint64: value = try exactFloat(Double(raw), exact: raw, index: i)
            case .int8: value = Float(Int8(truncatingIfNeeded: raw))
            case .int16: value = Float(Int16(truncatingIfNeeded: raw))
            case .int32:
                let v = Int32(truncatingIfNeeded: raw)
                value = try exactFloat(Double(v), exact: UInt64(bitPattern: Int64(v)), signed: true, index: i)
            case .int64:
                let v = Int64(bitPattern: raw)
                value = try exactFloat(Double(v), exact: raw, signed: true, index: i)
            case .bytes: value = 0
            }
            result[i] = value
        }
        return result
    }

    /// Converts JSON numbers (already Doubles) of this datatype to Float, refusing any that would change
    /// or that do not belong to the datatype (a fraction in an INT32 tensor, 300 in a UINT8 one).
    public func floats(fromJSON values: [Double]) throws(ServeError) -> [Float] {
        if self == .bytes { throw ServeError(.badRequest, "datatype BYTES is not supported: these models take numeric tensors (FP32)") }
        var result = [Float](repeating: 0, count: values.count)
        let range: Range<Double>? = switch self {
        case .bool: 0..<2
        case .uint8: 0..<0x1p8
        case .uint16: 0..<0x1p16
        case .uint32: 0..<0x1p32
        case .uint64: 0..<0x1p64
        case .int8: -0x1p7..<0x1p7
        case .int16: -0x1p15..<0x1p15
        case .int32: -0x1p31..<0x1p31
        case .int64: -0x1p63..<0x1p63
        default: nil
        }
        for (i, d) in values.enumerated() {
            if let range, !(range.contains(d) && d.rounded() == d) {
                throw ServeError(.badRequest, "element \(i) is \(d), which is not a \(rawValue) value")
            }
            if self == .fp32 || self == .fp16 {
                result[i] = Float(d)
            } else {
                result[i] = try exactFloat(d, index: i)
            }
        }
        return result
    }

    private func exactFloat(_ d: Double, exact: UInt64? = nil, signed: Bool = false, index: Int) throws(ServeError) -> Float {
        let f = Float(d)
        var lossless = Double(f) == d || (d.isNaN && f.isNaN)
        if lossless, let exact {
            // Double itself may have rounded a 64-bit integer: compare with the integer.
            lossless = signed ? (Int64(exactly: f).map { UInt64(bitPattern: $0) == exact } ?? false)
                              : (UInt64(exactly: f) == exact)
        }
        guard lossless else {
            let shown = exact.map { signed ? String(Int64(bitPattern: $0)) : String($0) } ?? "\(d)"
            throw ServeError(.badRequest, "element \(index) (\(shown)) of a \(rawValue) tensor cannot be converted to FP32 without loss; send FP32")
        }
        return f
    }

    /// IEEE 754 half → single precision (exact: every half is a float).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31
        let exponent = Int(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
        if exponent == 0 {
            let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign == 0 ? magnitude : -magnitude
        }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
    }
}
