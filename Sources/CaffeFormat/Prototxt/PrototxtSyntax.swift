import Foundation

/// The syntax tree of a protobuf text-format document (a `.prototxt`), with a position on every
/// field and value.
///
/// The tree is schema-free: `PrototxtParser` builds it from the characters alone, and
/// `PrototxtEncoder` later checks it against `ProtoSchema.caffe` and turns it into a typed message.
/// Keeping positions here is what lets every later error say `net.prototxt:12:5`.
public struct PrototxtMessage: Sendable {
    public var fields: [PrototxtField]
    /// Where the message body starts: the `{` (or the file start for the root).
    public var location: SourcePosition
    /// Where the closing `}` is (or the end of the file for the root).
    public var endLocation: SourcePosition

    /// The first scalar value written for `name`, as source text (`"conv1"` unquoted).
    public func firstString(_ name: String) -> String? {
        for field in fields where field.name == name {
            if case .scalar(let scalar) = field.value { return scalar.text }
        }
        return nil
    }
}

/// One `name: value` or `name { ... }` entry.
public struct PrototxtField: Sendable {
    public var name: String
    public var location: SourcePosition
    public var value: PrototxtValue
}

/// A field's value: a scalar token or a nested message. A `[a, b, c]` list becomes one field per element.
public enum PrototxtValue: Sendable {
    case scalar(PrototxtScalar)
    case message(PrototxtMessage)
}

/// A scalar token as written: an identifier (`MAX`, `true`, `inf`), a number, or a string.
public struct PrototxtScalar: Sendable {
    public enum Kind: Sendable { case identifier, number, string }
    public var kind: Kind
    /// For identifiers and numbers, the source text (a leading `-` included);
    /// for strings, the decoded contents as UTF-8 (lossy for invalid bytes).
    public var text: String
    /// For strings, the decoded bytes (escapes resolved, adjacent literals joined).
    public var bytes: [UInt8]
    public var location: SourcePosition
}

/// Reads protobuf text format into a `PrototxtMessage`.
///
/// Accepts everything protobuf's own text parser accepts in Caffe files: `#` comments, `name: value`,
/// `name { }` and `name: { }` and `name < >`, `[a, b]` lists for repeated scalars, single- and double-quoted
/// strings with C escapes (adjacent literals concatenate), optional `,`/`;` separators, signed numbers,
/// hex/octal integers, `1.5f`, `inf`/`nan`. Errors carry the exact line and column.
public struct PrototxtParser {
    private let bytes: [UInt8]
    private let file: String
    private var index = 0
    private var line = 1
    private var lineStart = 0
    private var depth = 0
    private static let maximumDepth = 100

    public init(text: String, file: String) {
        self.bytes = Array(text.utf8)
        self.file = file
    }

    public init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    /// Parses the whole document as the body of the root message.
    public mutating func parseDocument() throws -> PrototxtMessage {
        skipTrivia()
        let start = location
        let fields = try parseFields(closedBy: nil, openedAt: start, fieldName: nil)
        return PrototxtMessage(fields: fields, location: start, endLocation: location)
    }

    // MARK: - Grammar

    private mutating func parseFields(closedBy close: UInt8?, openedAt open: SourcePosition, fieldName: String?) throws -> [PrototxtField] {
        var fields: [PrototxtField] = []
        while true {
            skipTrivia()
            guard let byte = peek else {
                if let close {
                    throw Diagnostic("expected '\(Character(UnicodeScalar(close)))' to close '\(fieldName ?? "")' opened at \(open.line):\(open.column), found the end of the file",
                                     at: location, hint: "a '}' is missing; count the braces from line \(open.line)")
                }
                return fields
            }
            if byte == close { return fields }
            if byte == UInt8(ascii: "}") || byte == UInt8(ascii: ">") {
                throw Diagnostic("unexpected '\(Character(UnicodeScalar(byte)))' with no open message to close", at: location,
                                 hint: "remove it, or look for a missing '{' above")
            }
            let nameLocation = location
            guard isIdentifierStart(byte) else {
                if byte == UInt8(ascii: "[") {
                    throw Diagnostic("extension fields ('[...]') are not supported in Caffe files", at: nameLocation)
                }
                throw Diagnostic("expected a field name, found \(describeToken())", at: nameLocation)
            }
            let name = readIdentifier()
            skipTrivia()
            var sawColon = false
            if peek == UInt8(ascii: ":") {
                advance()
                sawColon = true
                skipTrivia()
            }
            guard let next = peek else {
                throw Diagnostic("expected a value for field '\(name)', found the end of the file", at: location)
            }
            if next == UInt8(ascii: "{") || next == UInt8(ascii: "<") {
                let message = try parseMessageBody(fieldName: name)
                fields.append(PrototxtField(name: name, location: nameLocation, value: .message(message)))
            } else if !sawColon {
                throw Diagnostic("expected ':' or '{' after field name '\(name)', found \(describeToken())", at: location)
            } else if next == UInt8(ascii: "[") {
                let listStart = location
                advance()
                skipTrivia()
                if peek == UInt8(ascii: "]") { advance(); consumeSeparator(); continue }
                while true {
                    skipTrivia()
                    if peek == UInt8(ascii: "{") || peek == UInt8(ascii: "<") {
                        let message = try parseMessageBody(fieldName: name)
                        fields.append(PrototxtField(name: name, location: nameLocation, value: .message(message)))
                    } else {
                        let scalar = try parseScalar(fieldName: name)
                        fields.append(PrototxtField(name: name, location: nameLocation, value: .scalar(scalar)))
                    }
                    skipTrivia()
                    if peek == UInt8(ascii: ",") { advance(); continue }
                    if peek == UInt8(ascii: "]") { advance(); break }
                    throw Diagnostic("expected ',' or ']' in the list for '\(name)' opened at \(listStart.line):\(listStart.column), found \(describeToken())", at: location)
                }
            } else {
                let scalar = try parseScalar(fieldName: name)
                fields.append(PrototxtField(name: name, location: nameLocation, value: .scalar(scalar)))
            }
            consumeSeparator()
        }
    }

    private mutating func parseMessageBody(fieldName: String) throws -> PrototxtMessage {
        let open = location
        let closing: UInt8 = peek == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: ">")
        advance()
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maximumDepth {
            throw Diagnostic("messages nested more than \(Self.maximumDepth) deep", at: open)
        }
        let fields = try parseFields(closedBy: closing, openedAt: open, fieldName: fieldName)
        let end = location
        advance()  // the closing brace
        return PrototxtMessage(fields: fields, location: open, endLocation: end)
    }

    private mutating func parseScalar(fieldName: String) throws -> PrototxtScalar {
        let start = location
        guard let byte = peek else {
            throw Diagnostic("expected a value for '\(fieldName)', found the end of the file", at: start)
        }
        if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
            var value: [UInt8] = []
            repeat {
                value += try readString()
                skipTrivia()
            } while peek == UInt8(ascii: "\"") || peek == UInt8(ascii: "'")
            return PrototxtScalar(kind: .string, text: String(decoding: value, as: UTF8.self), bytes: value, location: start)
        }
        var text = ""
        if byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+") {
            if byte == UInt8(ascii: "-") { text = "-" }
            advance()
            skipTrivia()
        }
        guard let first = peek else {
            throw Diagnostic("expected a number after '-' for '\(fieldName)'", at: start)
        }
        if isDigit(first) || first == UInt8(ascii: ".") {
            while let c = peek, isIdentifierPart(c) || c == UInt8(ascii: ".") ||
                    ((c == UInt8(ascii: "-") || c == UInt8(ascii: "+")) && (text.last == "e" || text.last == "E") && !text.hasPrefix("0x") && !text.hasPrefix("-0x")) {
                text.append(Character(UnicodeScalar(c)))
                advance()
            }
            return PrototxtScalar(kind: .number, text: text, bytes: [], location: start)
        }
        if isIdentifierStart(first) {
            text += readIdentifier()
            return PrototxtScalar(kind: .identifier, text: text, bytes: [], location: start)
        }
        throw Diagnostic("expected a value for '\(fieldName)', found \(describeToken())", at: location)
    }

    private mutating func readString() throws -> [UInt8] {
        let start = location
        let quote = bytes[index]
        advance()
        var out: [UInt8] = []
        while true {
            guard let c = peek else {
                throw Diagnostic("unterminated string starting here", at: start, hint: "add the closing \(quote == UInt8(ascii: "\"") ? "\"" : "'")")
            }
            if c == UInt8(ascii: "\n") {
                throw Diagnostic("a string cannot span lines", at: start, hint: "close the string before the end of the line")
            }
            advance()
            if c == quote { return out }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard let e = peek else { continue }
            advance()
            switch e {
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "a"): out.append(7)
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "v"): out.append(11)
            case UInt8(ascii: "x"), UInt8(ascii: "X"):
                var value = 0, count = 0
                while count < 2, let h = peek, let d = hexValue(h) { value = value * 16 + d; count += 1; advance() }
                if count == 0 { throw Diagnostic("'\\x' must be followed by hex digits", at: location) }
                out.append(UInt8(value))
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var value = Int(e - UInt8(ascii: "0")), count = 1
                while count < 3, let o = peek, o >= UInt8(ascii: "0"), o <= UInt8(ascii: "7") {
                    value = value * 8 + Int(o - UInt8(ascii: "0")); count += 1; advance()
                }
                out.append(UInt8(truncatingIfNeeded: value))
            default: out.append(e)  // \\ \' \" \? and anything else stands for itself
            }
        }
    }

    // MARK: - Characters

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private var location: SourcePosition {
        SourcePosition(file: file, line: line, column: columnOf(index))
    }

    /// Columns count characters, not bytes, so multi-byte UTF-8 names line up in editors.
    private func columnOf(_ position: Int) -> Int {
        var column = 1
        var i = lineStart
        while i < position {
            if bytes[i] & 0xC0 != 0x80 { column += 1 }
            i += 1
        }
        return column
    }

    private mutating func advance() {
        guard index < bytes.count else { return }
        if bytes[index] == UInt8(ascii: "\n") {
            line += 1
            lineStart = index + 1
        }
        index += 1
    }

    private mutating func skipTrivia() {
        while let c = peek {
            if c == UInt8(ascii: "#") {
                while let d = peek, d != UInt8(ascii: "\n") { advance() }
            } else if c == 32 || c == 9 || c == 10 || c == 13 || c == 11 || c == 12 {
                advance()
            } else {
                return
            }
        }
    }

    private mutating func consumeSeparator() {
        skipTrivia()
        if peek == UInt8(ascii: ",") || peek == UInt8(ascii: ";") { advance() }
    }

    private mutating func readIdentifier() -> String {
        let start = index
        while let c = peek, isIdentifierPart(c) { advance() }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func describeToken() -> String {
        guard let c = peek else { return "the end of the file" }
        if c >= 0x21 && c < 0x7F { return "'\(Character(UnicodeScalar(c)))'" }
        return String(format: "byte 0x%02X", c)
    }

    private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    private func isIdentifierStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_")
    }
    private func isIdentifierPart(_ c: UInt8) -> Bool { isIdentifierStart(c) || isDigit(c) }
    private func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(c - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(c - UInt8(ascii: "A")) + 10
        default: return nil
        }
    }
}
