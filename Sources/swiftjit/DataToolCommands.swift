import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit convert-imageset`: Caffe's `convert_imageset` tool (same flags, in Caffe's underscore
/// spelling too), building an LMDB or LevelDB of Datums from a folder of images and a list file.
struct ConvertImagesetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert-imageset",
        abstract: "Convert a set of images to an LMDB or LevelDB of Caffe Datums (Caffe's convert_imageset).",
        discussion: """
        LIST has one 'path label' per line; ROOT is prepended to each path as text (end it with '/').
        Keys are %08d_<path> in list order, or in Caffe's shuffled order with --shuffle (--seed makes
        it reproducible: it is the seed Caffe::set_random_seed would get). Unreadable images are
        skipped with a warning, as in Caffe. The database is written as DB.incomplete and renamed
        when done, so an interrupted conversion leaves nothing that looks finished.
        """
    )

    @Flag(name: [.customLong("gray")], help: "Decode images as grayscale.")
    var gray = false
    @Flag(name: [.customLong("shuffle")], help: "Shuffle the list with Caffe's shuffle.")
    var shuffle = false
    @Option(name: [.customLong("seed")], help: "The shuffle's seed (default: random, printed).")
    var seed: UInt32?
    @Option(name: [.customLong("backend")], help: "lmdb or leveldb.")
    var backend = "lmdb"
    @Option(name: [.customLong("resize-width"), .customLong("resize_width")], help: "Width images are resized to (0: keep).")
    var resizeWidth = 0
    @Option(name: [.customLong("resize-height"), .customLong("resize_height")], help: "Height images are resized to (0: keep).")
    var resizeHeight = 0
    @Flag(name: [.customLong("check-size"), .customLong("check_size")], help: "Check that all images have the same size.")
    var checkSize = false
    @Flag(name: [.customLong("encoded")], help: "Store the encoded image in the Datum.")
    var encoded = false
    @Option(name: [.customLong("encode-type"), .customLong("encode_type")], help: "png or jpg (implies --encoded).")
    var encodeType = ""
    @Flag(name: [.customLong("quiet")], help: "No progress lines.")
    var quiet = false

    @Argument(help: "The folder prepended to every listed path.") var root: String
    @Argument(help: "The list file ('path label' per line).") var list: String
    @Argument(help: "The database to create.") var database: String

    func run() throws {
        do {
            var conversion = ImageSetConversion(root: root, list: list, output: database)
            conversion.gray = gray
            conversion.backend = try DatabaseBackend(argument: backend)
            conversion.resizeHeight = max(0, resizeHeight)
            conversion.resizeWidth = max(0, resizeWidth)
            conversion.checkSize = checkSize
            conversion.encoded = encoded
            conversion.encodeType = encodeType
            if shuffle {
                let chosen = seed ?? UInt32.random(in: 0...UInt32.max)
                conversion.shuffleSeed = chosen
                log("shuffling the list with seed \(chosen)")
            }
            let progress = ProgressLine(what: "images", quiet: quiet)
            let summary = try conversion.run(progress: progress.update, warning: { log("warning: " + $0) })
            progress.finish()
            log("wrote \(summary.written) images to \(database)" + (summary.skipped.isEmpty ? "" : " (\(summary.skipped.count) skipped)"))
        } catch {
            throw fail(error)
        }
    }
}

/// `swiftjit compute-image-mean`: Caffe's `compute_image_mean` (the mean image of a database as a
/// `.binaryproto`, and each channel's mean value).
struct ComputeImageMeanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compute-image-mean",
        abstract: "Compute the mean image of an LMDB or LevelDB of Datums (Caffe's compute_image_mean)."
    )

    @Option(name: [.customLong("backend")], help: "lmdb or leveldb (default: recognised from the folder).")
    var backend: String?
    @Flag(name: [.customLong("quiet")], help: "No progress lines.")
    var quiet = false
    @Argument(help: "The database.") var database: String
    @Argument(help: "Where to write the mean .binaryproto (optional, as in Caffe).") var output: String?

    func run() throws {
        do {
            let kind = try backend.map(DatabaseBackend.init(argument:)) ?? DatabaseBackend.detect(database) ?? .lmdb
            let progress = ProgressLine(what: "images", quiet: quiet)
            let (blob, means, count) = try ImageMean.compute(database: database, backend: kind) { progress.update($0, nil) }
            progress.finish()
            if let output {
                try CaffeFiles.writeAtomically(try blob.serializedData(), to: output)
                log("wrote the mean of \(count) images to \(output)")
            }
            for (channel, mean) in means.enumerated() { print("mean_value channel [\(channel)]: \(mean)") }
        } catch {
            throw fail(error)
        }
    }
}

/// A progress line on stderr, at most once a second: done/total, rate and time left.
final class ProgressLine {
    private let what: String
    private let quiet: Bool
    private let start = Date()
    private var lastPrint = Date.distantPast

    init(what: String, quiet: Bool) {
        self.what = what
        self.quiet = quiet
    }

    func update(_ done: Int, _ total: Int?) {
        guard !quiet, Date().timeIntervalSince(lastPrint) >= 1 else { return }
        lastPrint = Date()
        let elapsed = max(1e-6, Date().timeIntervalSince(start))
        let rate = Double(done) / elapsed
        var text = "\(done)" + (total.map { "/\($0)" } ?? "") + " \(what), \(String(format: "%.1f", rate))/s"
        if let total, rate > 0 { text += ", ETA \(Self.duration(Double(total - done) / rate))" }
        log(text)
    }

    func finish() {
        guard !quiet else { return }
        log("done in \(Self.duration(Date().timeIntervalSince(start)))")
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}

private func log(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
