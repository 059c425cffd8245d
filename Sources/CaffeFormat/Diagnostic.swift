/// A place in a source file, 1-based, as editors and compilers print it (`net.prototxt:12:5`).
public struct SourcePosition: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// The one error type users see from SwiftJIT's front end and compiler.
///
/// Every diagnostic says *where* (a file position, a file, or a layer and blob), *what* was expected
/// and what was found, and — when there is a standard remedy — a hint. It renders as a single
/// compiler-style line, optionally followed by an indented `hint:` line:
///
///     net.prototxt:12:5: layer 'conv1': caffe.ConvolutionParameter has no field 'kernal_size' — did you mean 'kernel_size'?
///
/// Diagnostics are values: nothing in the library calls `fatalError` on user input.
public struct Diagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    /// A position in a text file, when the problem is in one.
    public var location: SourcePosition?
    /// The file concerned, when there is no precise position (binary files, whole-file problems).
    public var file: String?
    /// The layer the problem belongs to, when there is one.
    public var layer: String?
    /// What is wrong, in one sentence.
    public var message: String
    /// What to do about it.
    public var hint: String?

    public init(_ message: String, at location: SourcePosition? = nil, file: String? = nil,
                layer: String? = nil, hint: String? = nil) {
        self.message = message
        self.location = location
        self.file = file ?? location?.file
        self.layer = layer
        self.hint = hint
    }

    /// The first line: position, layer, message.
    public var headline: String {
        var prefix = ""
        if let location { prefix = "\(location): " } else if let file { prefix = "\(file): " }
        if let layer { prefix += "layer '\(layer)': " }
        return prefix + message
    }

    public var description: String {
        guard let hint else { return headline }
        return headline + "\n  hint: " + hint
    }

    /// The same diagnostic attributed to `layer` unless it already names one.
    public func inLayer(_ layer: String?) -> Diagnostic {
        var copy = self
        if copy.layer == nil { copy.layer = layer }
        return copy
    }
}

extension Diagnostic {
    /// The candidates closest to `word` by edit distance, best first, for "did you mean" hints.
    /// A candidate qualifies when at most a third of its letters (and at least two) differ,
    /// or when one name contains the other.
    public static func closest(to word: String, among candidates: [String], limit: Int = 3) -> [String] {
        let lowered = word.lowercased()
        let scored = candidates.compactMap { candidate -> (String, Int)? in
            let other = candidate.lowercased()
            let distance = editDistance(lowered, other)
            let allowed = max(2, max(lowered.count, other.count) / 3)
            if distance <= allowed { return (candidate, distance) }
            if lowered.count >= 3, other.contains(lowered) || lowered.contains(other) { return (candidate, allowed + 1) }
            return nil
        }
        return scored.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(limit).map(\.0)
    }

    /// Levenshtein distance with transpositions counted as one edit (`kernal` → `kernel` is 1).
    public static func editDistance(_ a: String, _ b: String) -> Int {
        let x = Array(a.utf8), y = Array(b.utf8)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var previous2 = [Int](repeating: 0, count: y.count + 1)
        var previous = Array(0...y.count)
        var current = [Int](repeating: 0, count: y.count + 1)
        for i in 1...x.count {
            current[0] = i
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    current[j] = min(current[j], previous2[j - 2] + 1)
                }
            }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[y.count]
    }

    /// `— did you mean 'x'?` or `— did you mean 'x' or 'y'?`, or "" when nothing is close.
    public static func didYouMean(_ word: String, among candidates: [String]) -> String {
        let close = closest(to: word, among: candidates, limit: 2)
        switch close.count {
        case 0: return ""
        case 1: return " — did you mean '\(close[0])'?"
        default: return " — did you mean '\(close[0])' or '\(close[1])'?"
        }
    }
}
