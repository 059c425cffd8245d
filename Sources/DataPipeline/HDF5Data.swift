import CaffeFormat
import CHDF5
import Foundation

/// One dataset of an HDF5 file as float32 values, C order.
public struct HDF5Array: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }
}

/// Reading and writing the HDF5 files of Caffe's `HDF5Data` and `HDF5Output` layers (libhdf5):
/// root-level datasets of any numeric type, read as float32 as Caffe's `hdf5_load_nd_dataset` does.
public enum HDF5File {
    /// The most values one dataset may hold: Caffe's `Blob` refuses more than `INT_MAX`
    /// (`Blob::Reshape`), and so does `HDF5Data`'s `hdf5_load_nd_dataset`.
    public static let maxElements = Int(Int32.max)

    /// The datasets `names` of the file at `path`, each with at least one axis.
    ///
    /// Throws a one-line `Diagnostic` naming the file when it is missing, is not HDF5 or is
    /// truncated, lacks a dataset (listing the ones it has is left to h5ls), holds one that is
    /// not numeric or cannot be read, or declares one larger than `maxElements` values or than
    /// this machine's memory (checked before anything is allocated, with the shape in the message).
    /// libhdf5 runs in a child process (`HDF5ChildReader`): when a damaged file crashes it, that
    /// is a diagnostic too, naming the signal, and this process carries on.
    public static func read(path: String, datasets names: [String], maxElements: Int = maxElements) throws -> [HDF5Array] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw Diagnostic("no such HDF5 file", file: path, hint: "check the paths listed in hdf5_data_param.source")
        }
        return try HDF5ChildReader.read(.file(path), label: path, datasets: names, maxElements: maxElements)
    }

    /// The datasets `names` of an HDF5 file held in memory (`bytes`, e.g. a fuzzer's input or a
    /// file received whole), read exactly as `read(path:datasets:)` reads a file (in a child
    /// process too); `label` names it in diagnostics.
    public static func read(image bytes: Data, label: String, datasets names: [String],
                            maxElements: Int = maxElements) throws -> [HDF5Array] {
        try HDF5ChildReader.read(.image(bytes), label: label, datasets: names, maxElements: maxElements)
    }

    /// One dataset as the child reported it, checked in the order Caffe's reader would fail:
    /// lookup, description, element class, rank, size limits; returns its shape when it was read
    /// (its values follow in the pipe).
    static func check(_ report: swiftjit_h5_dataset_report, dataset name: String, label path: String,
                      maxElements: Int) throws -> [Int] {
        switch report.found {
        case 1: break
        case 0:
            throw Diagnostic("the file has no dataset '\(name)'", file: path,
                             hint: "HDF5Data reads one root dataset per top, named like the top")
        case -1:
            throw Diagnostic("the file is damaged: looking up dataset '\(name)' failed", file: path,
                             hint: "write it again")
        default:
            throw Diagnostic("the file is damaged: dataset '\(name)' cannot be described", file: path, hint: "write it again")
        }
        guard report.klass != Int32(SWIFTJIT_H5_OTHER) else {
            throw Diagnostic("dataset '\(name)' is not numeric (1-, 2-, 4- or 8-byte integers; 2-, 4- or 8-byte floats)", file: path,
                             hint: "store float or integer arrays")
        }
        guard (0...Int32(SWIFTJIT_H5_MAX_RANK)).contains(report.rank) else {
            throw Diagnostic("the file is damaged: dataset '\(name)' has \(report.rank) axes", file: path, hint: "write it again")
        }
        let extents = withUnsafeBytes(of: report.dims) { Array($0.bindMemory(to: Int64.self).prefix(Int(report.rank))) }
        guard !extents.isEmpty else {
            throw Diagnostic("dataset '\(name)' is a scalar; it needs at least one axis (the rows)", file: path,
                             hint: "store an array shaped (N, ...)")
        }
        _ = try checkedCount(extents[...], dataset: name, file: path, maxElements: maxElements)
        switch report.read {
        case 0: return extents.map { Int($0) }
        case -2:
            throw Diagnostic("dataset '\(name)' does not fit in memory", file: path, hint: "split it across files listed in hdf5_data_param.source")
        default:
            throw Diagnostic("dataset '\(name)' cannot be read (the file is truncated or damaged)", file: path,
                             hint: "write it again")
        }
    }

    /// The number of values `extents` declare, refused before allocating when it overflows, passes
    /// `maxElements`, or its float32 copy would not fit in this machine's memory. libhdf5 reads
    /// unwritten chunks as the fill value, so a file of a few hundred bytes can declare any size.
    private static func checkedCount(_ extents: ArraySlice<Int64>, dataset name: String, file path: String,
                                     maxElements: Int) throws -> Int {
        let shape = extents.map { $0 < 0 ? "\(UInt64(bitPattern: $0))" : "\($0)" }.joined(separator: "×")
        var count = 1, overflow = extents.contains { $0 < 0 }
        for extent in extents where !overflow {
            (count, overflow) = count.multipliedReportingOverflow(by: Int(extent))
        }
        guard !overflow, count <= maxElements else {
            throw Diagnostic("dataset '\(name)' is shaped \(shape) = \(overflow ? "more values than an Int holds" : "\(count) values"); "
                             + "at most \(maxElements) are read", file: path,
                             hint: "Caffe's HDF5Data refuses datasets beyond INT_MAX values too: split it across files")
        }
        let bytes = UInt64(count) * UInt64(MemoryLayout<Float>.size)
        guard bytes <= ProcessInfo.processInfo.physicalMemory else {
            throw Diagnostic("dataset '\(name)' is shaped \(shape): \(bytes) bytes as float32, beyond this machine's "
                             + "\(ProcessInfo.processInfo.physicalMemory) bytes of memory", file: path,
                             hint: "split it across files listed in hdf5_data_param.source")
        }
        return count
    }

    /// What `read` makes of the bytes the child process that runs libhdf5 sends back (the pipe
    /// protocol of Sources/CHDF5/isolated.h), `bytes` standing in for the pipe: for the fuzz
    /// harness `hdf5-pipe`, which checks that no stream, however damaged, crashes this process.
    public static func decodeChildOutput(_ bytes: Data, label: String, datasets names: [String],
                                         maxElements: Int = maxElements) throws -> [HDF5Array] {
        try HDF5ChildReader.decode(bytes, label: label, datasets: names, maxElements: maxElements)
    }

    /// How many libhdf5 objects (files, datasets, groups, types, attributes) this process has
    /// open: 0 whenever no `write` is under way, since reading happens in child processes and
    /// writing closes what it opens, on its error paths too. For tests and leak checks.
    public static var openObjectCount: Int {
        HDF5ChildReader.libraryLock.withLock { Int(swiftjit_h5_open_objects()) }
    }

    /// Writes `datasets` (name, array) as float32 datasets into a new file at `path`, replacing it.
    public static func write(path: String, datasets: [(name: String, array: HDF5Array)]) throws {
        try HDF5ChildReader.libraryLock.withLock { try writeLocked(path: path, datasets: datasets) }
    }

    private static func writeLocked(path: String, datasets: [(name: String, array: HDF5Array)]) throws {
        let file = swiftjit_h5_create(path)
        guard file >= 0 else {
            throw Diagnostic("cannot create the HDF5 file", file: path, hint: "check that its folder exists and is writable")
        }
        for (name, array) in datasets {
            guard array.values.count == array.shape.reduce(1, *) else {
                _ = swiftjit_h5_close(file)
                throw Diagnostic("dataset '\(name)' is shaped \(array.shape) but has \(array.values.count) values", file: path)
            }
            let dims = array.shape.map { Int64($0) }
            let status = array.values.withUnsafeBufferPointer { values in
                swiftjit_h5_write_float(file, name, Int32(dims.count), dims, values.baseAddress)
            }
            guard status == 0 else {
                _ = swiftjit_h5_close(file)
                throw Diagnostic("writing dataset '\(name)' failed", file: path)
            }
        }
        guard swiftjit_h5_close(file) == 0 else { throw Diagnostic("closing the HDF5 file failed", file: path) }
    }
}

/// The batches of a Caffe `HDF5Data` layer (`hdf5_data_param`): `source` is a text file listing
/// .h5 files (whitespace-separated); each file holds one dataset per top, named like the top,
/// all with the same number of rows. Batches take `batch_size` consecutive rows, moving to the
/// next file at the end of one and wrapping after the last — Caffe's `HDF5DataLayer` order.
///
/// With `shuffle`, the file order is shuffled at set-up and at every wrap, and each file's rows are
/// shuffled when it is loaded and again when its rows are used up, as Caffe does; the permutations
/// come from `caffe::shuffle` over a Mersenne Twister seeded with `seed` (Caffe uses
/// `std::random_shuffle`, whose order depends on the C library, so it is not reproduced).
///
/// A file is loaded whole when reading reaches it, like Caffe. Every file's datasets must have the
/// first file's shape apart from the row count; a file that does not is a one-line `Diagnostic`.
///
///     let reader = try HDF5DataReader(layer: layer, seed: 1701, baseDirectory: netFolder)
///     let tops = try reader.next()      // one HDF5Array per top, shaped [batch_size, ...]
///
/// Not thread-safe.
public final class HDF5DataReader {
    public let listPath: String
    /// The .h5 files, resolved, in list order.
    public let files: [String]
    /// The tops (dataset names).
    public let tops: [String]
    public let batchSize: Int
    /// The shape of each top's batch.
    public let batchShapes: [[Int]]
    private let shuffles: Bool
    private var generator: MersenneTwister
    private var filePermutation: [Int]
    private var currentFile = 0
    private var rows: [Int] = []
    private var currentRow = 0
    private var loaded: [HDF5Array] = []
    private var loadedPath = ""

    public init(layer: Caffe_LayerParameter, seed: UInt32, baseDirectory: String? = nil) throws {
        let parameter = layer.hdf5DataParam
        guard !parameter.source.isEmpty else {
            throw Diagnostic("hdf5_data_param.source is empty", layer: layer.name, hint: "set it to a text file listing .h5 files")
        }
        guard parameter.batchSize > 0 else {
            throw Diagnostic("hdf5_data_param.batch_size is \(parameter.batchSize); it must be positive", layer: layer.name)
        }
        guard !layer.top.isEmpty else { throw Diagnostic("HDF5Data needs at least one top", layer: layer.name) }
        listPath = resolve(parameter.source, against: baseDirectory)
        guard let listData = FileManager.default.contents(atPath: listPath) else {
            throw Diagnostic("cannot read the list of HDF5 files (no such file, or it is unreadable)", file: listPath,
                             layer: layer.name, hint: "check hdf5_data_param.source; relative paths start at the working directory")
        }
        files = String(decoding: listData, as: UTF8.self).split(whereSeparator: \.isWhitespace)
            .map { resolve(String($0), against: baseDirectory) }
        guard !files.isEmpty else {
            throw Diagnostic("the list of HDF5 files is empty", file: listPath, layer: layer.name, hint: "list one .h5 path per line")
        }
        tops = layer.top
        batchSize = Int(parameter.batchSize)
        shuffles = parameter.shuffle
        generator = MersenneTwister(seed: seed)
        filePermutation = Array(files.indices)
        if shuffles { filePermutation.caffeShuffle(using: &generator) }
        let firstPath = files[filePermutation[0]]
        let first: [HDF5Array]
        do {
            first = try HDF5DataReader.read(firstPath, tops: layer.top, like: nil)
        } catch let diagnostic as Diagnostic {
            throw diagnostic.inLayer(layer.name)
        }
        batchShapes = first.map { [Int(parameter.batchSize)] + $0.shape.dropFirst() }
        install(first, from: firstPath)
    }

    /// The next batch: one array per top, shaped `batchShapes`.
    public func next() throws -> [HDF5Array] {
        var out = batchShapes.map { HDF5Array(shape: $0, values: [Float](repeating: 0, count: $0.reduce(1, *))) }
        for item in 0..<batchSize {
            for top in tops.indices {
                let width = loaded[top].values.count / loaded[top].shape[0]
                let row = rows[currentRow]
                out[top].values.withUnsafeMutableBufferPointer { target in
                    loaded[top].values.withUnsafeBufferPointer { source in
                        for i in 0..<width { target[item * width + i] = source[row * width + i] }
                    }
                }
            }
            try advance()
        }
        return out
    }

    private func advance() throws {
        currentRow += 1
        guard currentRow == rows.count else { return }
        if files.count > 1 {
            currentFile += 1
            if currentFile == files.count {
                currentFile = 0
                if shuffles { filePermutation.caffeShuffle(using: &generator) }
            }
            try load(files[filePermutation[currentFile]])
        }
        currentRow = 0
        if shuffles { rows.caffeShuffle(using: &generator) }
    }

    private func load(_ path: String) throws {
        install(try HDF5DataReader.read(path, tops: tops, like: (loaded, loadedPath)), from: path)
    }

    private func install(_ arrays: [HDF5Array], from path: String) {
        loaded = arrays
        loadedPath = path
        rows = Array(0..<arrays[0].shape[0])
        if shuffles { rows.caffeShuffle(using: &generator) }
    }

    /// A file's datasets for `tops`, checked: equal row counts, and the shapes of `reference`
    /// (the previous file's) after the first axis.
    private static func read(_ path: String, tops: [String], like reference: ([HDF5Array], String)?) throws -> [HDF5Array] {
        let arrays = try HDF5File.read(path: path, datasets: tops)
        let count = arrays[0].shape[0]
        for (top, array) in zip(tops, arrays) {
            if array.shape[0] != count {
                throw Diagnostic("dataset '\(top)' has \(array.shape[0]) rows but '\(tops[0])' has \(count)", file: path,
                                 hint: "every top's dataset needs one row per example")
            }
        }
        guard count > 0 else { throw Diagnostic("dataset '\(tops[0])' has no rows", file: path) }
        if let (previous, previousPath) = reference {
            for (index, (top, array)) in zip(tops, arrays).enumerated() where Array(array.shape.dropFirst()) != Array(previous[index].shape.dropFirst()) {
                throw Diagnostic("dataset '\(top)' is shaped \(shapeText(array.shape)) but in \(previousPath) it is "
                                 + "\(shapeText(previous[index].shape)); only the row count may differ between files", file: path,
                                 hint: "write every file's '\(top)' with the same shape after the first axis")
            }
        }
        return arrays
    }
}

private func shapeText(_ shape: [Int]) -> String { shape.map(String.init).joined(separator: "×") }
