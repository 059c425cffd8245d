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

/// `swiftjit extract-features`: Caffe's `extract_features` tool — the TEST-phase forward of a net
/// over its own data layers for N batches, saving named blobs' values per item.
struct ExtractFeaturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract-features",
        abstract: "Save blobs of a net's forward passes over its data, per item (Caffe's extract_features).",
        discussion: """
        BLOBS and DBS are comma-separated and paired: blob i goes to database i. A database whose name
        ends in .npz is a NumPy archive holding the blob (all items stacked) under its name; any
        other is a new LMDB or LevelDB (--backend) of float Datums keyed by the item index (%010d),
        shaped by Caffe's legacy channels/height/width, as Caffe writes them.
        """
    )

    @Argument(help: "The net (.prototxt) with TEST-phase data layers.") var net: String
    @Argument(help: "The trained .caffemodel.") var weights: String
    @Argument(help: "Blob names, comma-separated.") var blobs: String
    @Argument(help: "Output databases or .npz files, comma-separated, one per blob.") var databases: String
    @Argument(help: "Number of mini-batches.") var batches: Int
    @Option(name: [.customLong("backend")], help: "lmdb or leveldb, for outputs that are not .npz.")
    var backend = "lmdb"
    @Flag(name: [.customLong("quiet")], help: "No progress lines.")
    var quiet = false
    @OptionGroup var kernelCache: KernelCacheOptions

    func run() throws {
        do {
            let names = blobs.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let outputs = databases.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard !names.isEmpty, names.count == outputs.count else {
                throw Diagnostic("\(names.count) blobs but \(outputs.count) databases", hint: "give one database per blob, in the same order")
            }
            guard batches > 0 else { throw Diagnostic("the number of mini-batches must be positive") }
            let kind = try DatabaseBackend(argument: backend)
            let definition = try CaffeFiles.loadNet(path: net)
            let shapes = try TrainingFeeds.dataShapes(definition, phase: .test, level: 0, stages: [], baseDirectory: nil)
            let graph = try GraphBuilder(phase: .test, inputShapes: shapes, insertsSplits: true).build(definition)
            for name in names where graph.value(named: name) == nil {
                throw Diagnostic("the net has no blob '\(name)'", file: net)
            }
            let values = try TrainedLayers.copy(from: weights, into: graph) { try ParameterInitializer.initialize(graph, seed: 1) }
            let compiled = try Compiler(cache: kernelCache.makeCache()).compileTraining(graph: graph, parameters: values, keepingAllBlobs: true)
            let feeds = try TrainingFeeds(graph: graph, seed: 1, baseDirectory: nil)
            defer { feeds.close() }
            var writers: [(any DatumWriter)?] = []
            var temporaries: [String] = []
            for output in outputs {
                if output.hasSuffix(".npz") {
                    writers.append(nil)
                    temporaries.append(output)
                } else {
                    if FileManager.default.fileExists(atPath: output) {
                        throw Diagnostic("the database already exists", file: output, hint: "remove it or choose another name")
                    }
                    let temporary = output + ".incomplete"
                    try? FileManager.default.removeItem(atPath: temporary)
                    writers.append(try makeDatumWriter(path: temporary, backend: kind))
                    temporaries.append(temporary)
                }
            }
            var stacked: [[Float]] = Array(repeating: [], count: names.count)
            var itemShapes: [[Int]] = Array(repeating: [], count: names.count)
            var items = Array(repeating: 0, count: names.count)
            let progress = ProgressLine(what: "batches", quiet: quiet)
            for batch in 0..<batches {
                _ = try compiled.run(try feeds.next(), backward: false)
                for (index, name) in names.enumerated() {
                    guard let blob = compiled.blob(name) else { throw Diagnostic("the net did not keep blob '\(name)'", file: net) }
                    let num = blob.shape.first ?? 1
                    let width = blob.data.count / max(1, num)
                    itemShapes[index] = Array(blob.shape.dropFirst())
                    guard let writer = writers[index] else {
                        stacked[index] += blob.data
                        items[index] += num
                        continue
                    }
                    let legacy = (1...3).map { $0 < blob.shape.count ? blob.shape[$0] : 1 }
                    for item in 0..<num {
                        var datum = Caffe_Datum()
                        datum.channels = Int32(blob.shape.count > 4 ? width : legacy[0])
                        datum.height = Int32(blob.shape.count > 4 ? 1 : legacy[1])
                        datum.width = Int32(blob.shape.count > 4 ? 1 : legacy[2])
                        datum.floatData = Array(blob.data[(item * width)..<((item + 1) * width)])
                        try writer.put(key: Data(String(format: "%010d", items[index]).utf8), value: try datum.serializedData())
                        items[index] += 1
                    }
                }
                progress.update(batch + 1, batches)
            }
            progress.finish()
            for (index, name) in names.enumerated() {
                if let writer = writers[index] {
                    try writer.finish()
                    try FileManager.default.moveItem(atPath: temporaries[index], toPath: outputs[index])
                } else {
                    try NumPyFile.write(archive: [(name, NDArray(shape: [items[index]] + itemShapes[index], data: stacked[index]))],
                                        to: outputs[index])
                }
                log("wrote \(items[index]) items of '\(name)' to \(outputs[index])")
            }
        } catch {
            throw fail(error)
        }
    }
}
