// A tiny parser for the Python literal subset used in `.npy` headers:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// It accepts any whitespace, trailing commas, single or double quotes (with an optional u/b/r
// prefix), Python 2 long suffixes (`3L`), lists as well as tuples, and None. Nesting depth is
// capped so hostile input cannot exhaust the stack.

/// A parsed Python literal.
enum PyValue: Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case none
    case tuple([PyValue])
    case list([PyValue])
    case dict([(String, PyValue)])

    static func == (a: PyValue, b: PyValue) -> Bool {
        switch (a, b) {
        case let (.string(x), .string(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.bool(x), .bool(y)): return x == y
        case (.none, .none): return true
        case let (.tuple(x), .tuple(y)), let (.list(x), .list(y)): return x == y
        case let (.dict(x), .dict(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// Python `repr`-like rendering, for error messages.
    var repr: String {
        switch self {
        case .string(let s): return "'\(s)'"
        case .int(let i): return String(i)
        case .bool(let b): return b ? "True" : "False"
        case .none: return "None"
        case .tuple(let v): return "(" + v.map(\.repr).joined(separator: ", ") + (v.count == 1 ? ",)" : ")")
        case .list(let v): return "[" + v.map(\.repr).joined(separator: ", ") + "]"
        case .dict(let kv): return "{" + kv.map { "'\($0.0)': \($0.1.repr)" }.joined(separator: ", ") + "}"
        }
    }
}

struct PyLiteralParser {
    private let s: [UInt8]
    private var i = 0
    private static let maxDepth = 32

    /// Parses `bytes` as exactly one literal surrounded by optional whitespace (and NULs, which
    /// some writers use as padding).
    static func parse(_ bytes: [UInt8]) throws -> PyValue {
        var p = PyLiteralParser(s: bytes)
        let v = try p.value(depth: 0)
        p.skipSpace()
        while p.i < p.s.count, p.s[p.i] == 0 { p.i += 1 }
        guard p.i == p.s.count else { throw p.fail("unexpected text after the header dictionary") }
        return v
    }

    private init(s: [UInt8]) { self.s = s }

    private func fail(_ what: String) -> NumPyError {
        let lo = Swift.max(0, i - 20), hi = Swift.min(s.count, i + 20)
        var near = ""
        for b in s[lo ..< hi] {
            switch b {
            case 0x0A: near += "\\n"
            case 0x20 ..< 0x7F: near.append(Character(Unicode.Scalar(b)))
            default: near += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16)
            }
        }
        return NumPyError(.corrupt,
            "malformed .npy header: \(what) at byte \(i) (near \"\(near)\") — expected a Python dict literal like {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }")
    }

    private mutating func skipSpace() {
        while i < s.count, s[i] == 0x20 || (s[i] >= 0x09 && s[i] <= 0x0D) { i += 1 }
    }

    private mutating func peek() -> UInt8? {
        skipSpace()
        return i < s.count ? s[i] : nil
    }

    private mutating func expect(_ c: UInt8) throws {
        guard peek() == c else { throw fail("expected '\(Character(Unicode.Scalar(c)))'") }
        i += 1
    }

    private mutating func value(depth: Int) throws -> PyValue {
        guard depth < Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth) levels") }
        guard let c = peek() else { throw fail("unexpected end of header") }
        switch c {
        case UInt8(ascii: "{"):
            i += 1
            var items: [(String, PyValue)] = []
            while true {
                if peek() == UInt8(ascii: "}") { i += 1; break }
                guard case .string(let key) = try value(depth: depth + 1) else {
                    throw fail("dictionary keys must be strings")
                }
                try expect(UInt8(ascii: ":"))
                items.append((key, try value(depth: depth + 1)))
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "}"))
                break
            }
            return .dict(items)
        case UInt8(ascii: "("), UInt8(ascii: "["):
            let close = c == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "]")
            i += 1
            var items: [PyValue] = []
            var sawComma = false
            while true {
                if peek() == close { i += 1; break }
                items.append(try value(depth: depth + 1))
                if peek() == UInt8(ascii: ",") { i += 1; sawComma = true; continue }
                try expect(close)
                break
            }
            if c == UInt8(ascii: "[") { return .list(items) }
            // `(x)` is just a parenthesised x in Python, not a tuple.
            if items.count == 1 && !sawComma { return items[0] }
            return .tuple(items)
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0") ... UInt8(ascii: "9"):
            return .int(try integer())
        default:
            let start = i
            while i < s.count, isIdent(s[i]) { i += 1 }
            let word = String(decoding: s[start ..< i], as: UTF8.self)
            if (word == "u" || word == "b" || word == "r" || word == "U" || word == "B" || word == "R"),
               i < s.count, s[i] == UInt8(ascii: "'") || s[i] == UInt8(ascii: "\"") {
                return .string(try string())
            }
            switch word {
            case "True": return .bool(true)
            case "False": return .bool(false)
            case "None": return .none
            default:
                i = start
                throw fail(word.isEmpty ? "unexpected character" : "unknown name '\(word)'")
            }
        }
    }

    private func isIdent(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_")
    }

    private mutating func string() throws -> String {
        let q = s[i]
        i += 1
        var out: [UInt8] = []
        while true {
            guard i < s.count else { throw fail("unterminated string") }
            let c = s[i]
            i += 1
            if c == q { break }
            if c == UInt8(ascii: "\n") { throw fail("newline inside a string") }
            if c == UInt8(ascii: "\\") {
                guard i < s.count else { throw fail("unterminated string") }
                let e = s[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "0"): out.append(0x00)
                case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): out.append(e)
                default: out.append(UInt8(ascii: "\\")); out.append(e)
                }
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private mutating func integer() throws -> Int {
        var negative = false
        if s[i] == UInt8(ascii: "-") || s[i] == UInt8(ascii: "+") {
            negative = s[i] == UInt8(ascii: "-")
            i += 1
            skipSpace()
        }
        let start = i
        var v = 0
        while i < s.count, s[i] >= UInt8(ascii: "0"), s[i] <= UInt8(ascii: "9") {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(s[i] - UInt8(ascii: "0")))
            guard !o1, !o2 else { throw fail("integer too large") }
            v = a
            i += 1
        }
        guard i > start else { throw fail("expected digits") }
        if i < s.count, s[i] == UInt8(ascii: "L") || s[i] == UInt8(ascii: "l") { i += 1 }  // Python 2 long
        if i < s.count, s[i] == UInt8(ascii: ".") || s[i] == UInt8(ascii: "e") || s[i] == UInt8(ascii: "E") {
            throw fail("expected an integer, found a float")
        }
        return negative ? -v : v
    }
}
