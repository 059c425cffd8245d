import CaffeFormat
import Foundation

/// The one reader of a Python layer's `param_str` for the layers SwiftJIT runs natively
/// (`PythonLayerMapping`): py-faster-rcnn's YAML (`"'feat_stride': 16"`, `'scales': [8, 16, 32]`,
/// `!!python/tuple` lists) and ENet's Python dict (`"{'phase': 'TRAIN', 'p': '0.01'}"`) are the
/// same flow mapping: `key: value` entries separated by commas or newlines, optionally in braces;
/// keys and scalar values bare or quoted; a value may be a `[…]`/`(…)` list of scalars. Each value
/// comes back as its scalars, unquoted, in order; the layer converts them.
///
///     try ParamString.entries("{'phase': 'TRAIN', 'p': '0.01'}")   // ["phase": ["TRAIN"], "p": ["0.01"]]
///     try ParamString.numbers("'scales': (8, 16)")                 // ["scales": [8, 16]]
public enum ParamString {
    /// Each key's scalars (one for a scalar value, the items of a list).
    public static func entries(_ text: String) throws -> [String: [String]] {
        var body = trimmed(Substring(text), " \t\r\n")
        if body.hasPrefix("{") {
            guard body.hasSuffix("}") else { throw Diagnostic("param_str \"\(text)\" opens '{' but does not close it") }
            body = String(body.dropFirst().dropLast())
        }
        // Split at commas and newlines outside brackets.
        var pieces: [String] = [], current = "", depth = 0
        for character in body {
            switch character {
            case "[", "(": depth += 1; current.append(character)
            case "]", ")": depth -= 1; current.append(character)
            case ",", "\n", "\r\n":
                if depth == 0 { pieces.append(current); current = "" } else { current.append(character) }
            default: current.append(character)
            }
        }
        pieces.append(current)
        var result: [String: [String]] = [:]
        for piece in pieces {
            let entry = trimmed(Substring(piece), " \t\r")
            if entry.isEmpty { continue }
            guard let colon = entry.firstIndex(of: ":") else {
                throw Diagnostic("param_str entry \"\(entry)\" is not 'key: value'", hint: "e.g. param_str: \"'feat_stride': 16\"")
            }
            let key = unquoted(trimmed(entry[..<colon], " \t"))
            var value = trimmed(entry[entry.index(after: colon)...], " \t")
            if value.hasPrefix("!!python/tuple") { value = trimmed(value.dropFirst("!!python/tuple".count), " \t") }
            let items: [String]
            if let first = value.first, first == "[" || first == "(" {
                guard let last = value.last, last == (first == "[" ? "]" : ")") else {
                    throw Diagnostic("param_str value for '\(key)' \"\(value)\" is not a closed list")
                }
                items = value.dropFirst().dropLast().split(separator: ",").map { unquoted(trimmed($0, " \t")) }.filter { !$0.isEmpty }
            } else {
                items = [unquoted(value)]
            }
            guard !items.isEmpty, !items.contains(where: \.isEmpty) else {
                throw Diagnostic("param_str value for '\(key)' is empty")
            }
            guard result[key] == nil else { throw Diagnostic("param_str gives '\(key)' twice") }
            result[key] = items
        }
        return result
    }

    /// `entries` with every value read as numbers (py-faster-rcnn's layers).
    public static func numbers(_ text: String) throws -> [String: [Float]] {
        var result: [String: [Float]] = [:]
        for (key, items) in try entries(text) {
            let numbers = items.compactMap { Float($0) }
            guard numbers.count == items.count else {
                throw Diagnostic("param_str value for '\(key)' must be a number or a list of numbers, got \(items.count == 1 ? "\"\(items[0])\"" : "[\(items.joined(separator: ", "))]")")
            }
            result[key] = numbers
        }
        return result
    }

    private static func unquoted(_ text: String) -> String {
        if text.count >= 2, let first = text.first, first == "'" || first == "\"", text.last == first {
            return String(text.dropFirst().dropLast())
        }
        return text
    }

    private static func trimmed(_ text: Substring, _ set: String) -> String {
        var view = text
        while let first = view.first, set.contains(first) { view = view.dropFirst() }
        while let last = view.last, set.contains(last) { view = view.dropLast() }
        return String(view)
    }
}
