import Foundation

/// Checks a `PrototxtMessage` against a schema and encodes it in protobuf's binary wire format.
///
/// This is the bridge between our position-aware syntax tree and swift-protobuf's typed messages:
/// every field name, enum value and number is validated here, where its line and column are known,
/// and the resulting bytes are decoded by swift-protobuf into e.g. `Caffe_NetParameter`. Errors name
/// the enclosing layer (`layer 'conv1': ...`) and suggest the closest valid name. Repeated scalars are
/// emitted unpacked, which every protobuf reader accepts for packed fields too.
public struct PrototxtEncoder {
    public let schema: ProtoSchema

    public init(schema: ProtoSchema = .caffe) {
        self.schema = schema
    }

    /// Encodes `message` as an instance of the schema message `typeName` (e.g. `caffe.NetParameter`).
    public func encode(_ message: PrototxtMessage, as typeName: String) throws -> [UInt8] {
        var out: [UInt8] = []
        try encode(message, as: typeName, layer: nil, into: &out)
        return out
    }

    private static let layerTypes: Set<String> = ["caffe.LayerParameter", "caffe.V1LayerParameter", "caffe.V0LayerParameter"]

    private func encode(_ message: PrototxtMessage, as typeName: String, layer: String?, into out: inout [UInt8]) throws {
        guard let type = schema.messages[typeName] else {
            throw Diagnostic("internal: the schema has no message '\(typeName)'", at: message.location)
        }
        var layer = layer
        if Self.layerTypes.contains(typeName), let name = message.firstString("name") { layer = name }
        var seenSingular: [String: SourcePosition] = [:]
        for field in message.fields {
            guard let info = type.field(named: field.name) else {
                throw Diagnostic("\(typeName) has no field '\(field.name)'" + Diagnostic.didYouMean(field.name, among: type.fields.map(\.name)),
                                 at: field.location, layer: layer, hint: unknownFieldHint(field.name, in: typeName))
            }
            if !info.isRepeated {
                if let first = seenSingular[info.name] {
                    throw Diagnostic("field '\(info.name)' of \(typeName) is set twice (first at \(first.line):\(first.column)); it is not repeated",
                                     at: field.location, layer: layer, hint: "keep one of the two values")
                }
                seenSingular[info.name] = field.location
            }
            switch (info.kind, field.value) {
            case (.message(let child), .message(let body)):
                var nested: [UInt8] = []
                try encode(body, as: child, layer: layer, into: &nested)
                appendTag(info.number, wireType: 2, to: &out)
                appendVarint(UInt64(nested.count), to: &out)
                out += nested
            case (.message(let child), .scalar(let scalar)):
                throw Diagnostic("field '\(info.name)' is a message (\(child)); expected '{', found \(describe(scalar))",
                                 at: scalar.location, layer: layer, hint: "write \(info.name) { ... }")
            case (_, .message(let body)):
                throw Diagnostic("field '\(info.name)' of \(typeName) holds \(describe(info.kind)), not a message",
                                 at: body.location, layer: layer, hint: "write \(info.name): VALUE")
            case (_, .scalar(let scalar)):
                try encodeScalar(scalar, field: info, owner: typeName, layer: layer, into: &out)
            }
        }
    }

    private func unknownFieldHint(_ name: String, in typeName: String) -> String? {
        // Point at the message that does have the field, when exactly one other message does.
        let owners = schema.messages.values.filter { $0.field(named: name) != nil }.map(\.name).sorted()
        if owners.count == 1, owners[0] != typeName { return "'\(name)' is a field of \(owners[0])" }
        return nil
    }

    // MARK: - Scalars

    private func encodeScalar(_ scalar: PrototxtScalar, field: ProtoSchema.Field, owner: String, layer: String?, into out: inout [UInt8]) throws {
        func fail(_ expected: String, hint: String? = nil) -> Diagnostic {
            Diagnostic("field '\(field.name)' expects \(expected), found \(describe(scalar))", at: scalar.location, layer: layer, hint: hint)
        }
        switch field.kind {
        case .string, .bytes:
            guard scalar.kind == .string else { throw fail("a quoted string", hint: "write \(field.name): \"\(scalar.text)\"") }
            appendTag(field.number, wireType: 2, to: &out)
            appendVarint(UInt64(scalar.bytes.count), to: &out)
            out += scalar.bytes
        case .bool:
            let value: Bool
            switch scalar.text {
            case "true", "True", "t", "1": value = true
            case "false", "False", "f", "0": value = false
            default: throw fail("true or false")
            }
            appendTag(field.number, wireType: 0, to: &out)
            appendVarint(value ? 1 : 0, to: &out)
        case .float, .double:
            guard let value = parseFloatingPoint(scalar) else { throw fail("a number") }
            if field.kind == .float {
                appendTag(field.number, wireType: 5, to: &out)
                appendFixed32(Float(value).bitPattern, to: &out)
            } else {
                appendTag(field.number, wireType: 1, to: &out)
                appendFixed64(value.bitPattern, to: &out)
            }
        case .enumeration(let enumName):
            guard let enumeration = schema.enums[enumName] else { throw fail("a value of \(enumName)") }
            let number: Int32
            if scalar.kind == .identifier, let known = enumeration.number(of: scalar.text) {
                number = known
            } else if scalar.kind == .number, let raw = parseInteger(scalar.text), let known = Int32(exactly: raw),
                      enumeration.values.contains(where: { $0.number == known }) {
                number = known
            } else {
                let names = enumeration.values.map(\.name)
                let suggestion = Diagnostic.didYouMean(scalar.text, among: names)
                throw Diagnostic("'\(scalar.text)' is not a value of \(enumName)" + suggestion,
                                 at: scalar.location, layer: layer,
                                 hint: "one of: " + names.joined(separator: ", "))
            }
            appendTag(field.number, wireType: 0, to: &out)
            appendVarint(UInt64(bitPattern: Int64(number)), to: &out)
        case .int32, .int64, .uint32, .uint64, .sint32, .sint64, .fixed32, .fixed64, .sfixed32, .sfixed64:
            guard scalar.kind == .number, let value = parseInteger(scalar.text) else {
                throw fail("an integer" + (scalar.text.contains(".") ? " (no decimal point)" : ""))
            }
            let (lower, upper): (Int128, Int128) = switch field.kind {
            case .int32, .sint32, .sfixed32: (Int128(Int32.min), Int128(Int32.max))
            case .uint32, .fixed32: (0, Int128(UInt32.max))
            case .uint64, .fixed64: (0, Int128(UInt64.max))
            default: (Int128(Int64.min), Int128(Int64.max))
            }
            guard value >= lower, value <= upper else {
                throw fail("an integer in \(lower)...\(upper)")
            }
            switch field.kind {
            case .sint32, .sint64:
                let v = Int64(value)
                appendTag(field.number, wireType: 0, to: &out)
                appendVarint(UInt64(bitPattern: (v << 1) ^ (v >> 63)), to: &out)
            case .fixed32, .sfixed32:
                appendTag(field.number, wireType: 5, to: &out)
                appendFixed32(UInt32(truncatingIfNeeded: value), to: &out)
            case .fixed64, .sfixed64:
                appendTag(field.number, wireType: 1, to: &out)
                appendFixed64(UInt64(truncatingIfNeeded: value), to: &out)
            default:
                appendTag(field.number, wireType: 0, to: &out)
                appendVarint(UInt64(truncatingIfNeeded: value), to: &out)
            }
        case .message:
            throw fail("'{'")
        }
    }

    /// Decimal, `0x` hex and leading-zero octal integers, optionally negative.
    private func parseInteger(_ text: String) -> Int128? {
        var digits = Substring(text)
        var negative = false
        if digits.hasPrefix("-") { negative = true; digits = digits.dropFirst() }
        var radix = 10
        if digits.hasPrefix("0x") || digits.hasPrefix("0X") {
            radix = 16; digits = digits.dropFirst(2)
        } else if digits.count > 1, digits.hasPrefix("0") {
            radix = 8; digits = digits.dropFirst()
        }
        guard !digits.isEmpty, digits.count <= 40, let magnitude = Int128(digits, radix: radix) else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// Numbers (`1`, `-0.5`, `1e-3`, `.5`, `2.f`) and the identifiers `inf`, `infinity`, `nan`.
    private func parseFloatingPoint(_ scalar: PrototxtScalar) -> Double? {
        var text = scalar.text
        let negative = text.hasPrefix("-")
        let body = negative ? String(text.dropFirst()) : text
        if scalar.kind == .identifier {
            switch body.lowercased() {
            case "inf", "infinity": return negative ? -.infinity : .infinity
            case "nan": return .nan
            default: return nil
            }
        }
        guard scalar.kind == .number else { return nil }
        if text.hasSuffix("f") || text.hasSuffix("F") { text.removeLast() }
        if let integer = parseInteger(text), text.contains(where: { $0 == "x" || $0 == "X" }) || !text.contains(where: { ".eE".contains($0) }) {
            return Double(integer)
        }
        return Double(text)
    }

    private func describe(_ scalar: PrototxtScalar) -> String {
        switch scalar.kind {
        case .string: return "the string \"\(scalar.text)\""
        case .identifier, .number: return "'\(scalar.text)'"
        }
    }

    private func describe(_ kind: ProtoSchema.FieldKind) -> String {
        switch kind {
        case .enumeration(let name): return "a value of \(name)"
        case .message(let name): return "a \(name)"
        case .string: return "a string"
        case .bytes: return "bytes"
        case .bool: return "a bool"
        case .float, .double: return "a number"
        default: return "an integer"
        }
    }

    // MARK: - Wire format

    private func appendTag(_ number: Int, wireType: UInt64, to out: inout [UInt8]) {
        appendVarint(UInt64(number) << 3 | wireType, to: &out)
    }

    private func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private func appendFixed32(_ value: UInt32, to out: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    private func appendFixed64(_ value: UInt64, to out: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
