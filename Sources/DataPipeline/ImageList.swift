import CaffeFormat
import Foundation

/// One line of a Caffe image list (`path label`), with the 1-based line it came from.
public struct ImageListEntry: Sendable, Equatable {
    /// The image path as written (Caffe prepends `root_folder` to it as plain text).
    public var path: String
    public var label: Int32
    /// The line of the list file, for diagnostics.
    public var line: Int

    public init(path: String, label: Int32, line: Int) {
        self.path = path
        self.label = label
        self.line = line
    }
}

/// The list files of Caffe's `ImageData` layer and `convert_imageset` tool: one image per line,
/// `path label`, split at the *last* space (so paths may hold spaces), as both read it.
///
/// Blank lines are skipped; `\r\n` line ends work. Where Caffe would silently read a
/// missing or non-numeric label as 0 (`atoi`), this reports the line instead.
///
///     let entries = try ImageList.read(path: "train.txt")   // [ImageListEntry(path: "cat/1.jpg", label: 3, line: 1), …]
public enum ImageList {
    /// Reads and parses the list file at `path`.
    public static func read(path: String) throws -> [ImageListEntry] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Diagnostic("cannot read the image list (no such file, or it is unreadable)", file: path,
                             hint: "check image_data_param.source (or the LIST argument); relative paths start at the working directory")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path)
    }

    /// Parses list text; `file` names it in diagnostics.
    public static func parse(_ text: String, file: String) throws -> [ImageListEntry] {
        var entries: [ImageListEntry] = []
        // Split on any line break: "\r\n" is one Character in Swift, so splitting on "\n" would miss it.
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let position = SourcePosition(file: file, line: index + 1, column: 1)
            guard let space = line.lastIndex(of: " ") else {
                throw Diagnostic("list line '\(line)' has no label", at: position,
                                 hint: "each line is 'path label', separated by a space, e.g. 'cats/1.jpg 3'")
            }
            let labelText = line[line.index(after: space)...]
            guard let label = Int32(labelText) else {
                throw Diagnostic("list line '\(line)' ends in '\(labelText)', which is not an integer label", at: position,
                                 hint: "each line is 'path label', separated by a space, e.g. 'cats/1.jpg 3'")
            }
            entries.append(ImageListEntry(path: String(line[..<space]), label: label, line: index + 1))
        }
        return entries
    }
}

extension MutableCollection where Self: RandomAccessCollection, Index == Int {
    /// Caffe's `caffe::shuffle` (`util/rng.hpp`): Fisher–Yates from the back, the swap partner of
    /// position `i` drawn by `boost::uniform_int<>(0, i)` over a `boost::mt19937`. With the same
    /// generator state this reproduces Caffe's order exactly (used by `convert_imageset --shuffle`
    /// and `ImageData`'s `shuffle`).
    public mutating func caffeShuffle(using generator: inout MersenneTwister) {
        guard count > 1 else { return }
        var i = endIndex - 1
        while i > startIndex {
            swapAt(i, startIndex + generator.boostUniform(upTo: i - startIndex))
            i -= 1
        }
    }
}

extension MersenneTwister {
    /// `boost::random::uniform_int_distribution<>(0, range)` over this 32-bit engine: the output
    /// is divided into `range + 1` equal buckets and draws past the last whole bucket are rejected
    /// (boost's `generate_uniform_int`), so the value matches Boost's, not `next() % n`.
    public mutating func boostUniform(upTo range: Int) -> Int {
        precondition(range >= 0, "boostUniform needs a non-negative range")
        if range == 0 { return 0 }
        let brange = UInt64(UInt32.max)
        if UInt64(range) >= brange { return Int(next()) }
        let divisor = UInt64(range) + 1
        var bucketSize = brange / divisor
        if brange % divisor == UInt64(range) { bucketSize += 1 }
        while true {
            let result = UInt64(next()) / bucketSize
            if result <= UInt64(range) { return Int(result) }
        }
    }
}
