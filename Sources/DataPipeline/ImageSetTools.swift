import CaffeFormat
import Dispatch
import Foundation

/// Caffe's `convert_imageset`: the images of a list file, read (and resized) as `ReadImageToDatum`
/// does, stored as `Datum`s under keys `%08d_<path>` in list order (or Caffe's shuffled order) in
/// a new LMDB or LevelDB.
///
/// Images are decoded on several threads in chunks and written in order, so the database does not
/// depend on the thread count. An image that cannot be read is skipped with a warning naming the
/// list line, as Caffe skips it (its index is not reused). The database is built under
/// `<output>.incomplete` and renamed to `output` only when everything is written, so an
/// interrupted conversion never leaves a database that looks complete; a conversion that fails
/// removes its `.incomplete` folder, and the next run replaces one left by a killed process.
///
///     var conversion = ImageSetConversion(root: "images/", list: "train.txt", output: "train_lmdb")
///     conversion.shuffleSeed = 7
///     let summary = try conversion.run { done, total in print(done, total) }
public struct ImageSetConversion: Sendable {
    public var root: String
    public var list: String
    public var output: String
    public var resizeHeight = 0
    public var resizeWidth = 0
    /// `--gray`: decode as one channel.
    public var gray = false
    /// `--shuffle` with this seed: Caffe's `shuffle` over `Caffe::set_random_seed(seed)`'s generator.
    public var shuffleSeed: UInt32?
    public var backend = DatabaseBackend.lmdb
    /// `--encoded`: store the encoded file (re-encoded when resized or converted) instead of pixels.
    public var encoded = false
    /// `--encode_type`: `png` or `jpg`; empty takes each file's extension.
    public var encodeType = ""
    /// `--check_size`: every image must have the first one's size.
    public var checkSize = false
    /// Images decoded at once by the worker threads.
    public var chunkSize = 64
    public var threads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    public init(root: String, list: String, output: String) {
        self.root = root
        self.list = list
        self.output = output
    }

    /// What a conversion did.
    public struct Summary: Sendable, Equatable {
        public var written = 0
        /// `list line: reason` for each skipped image.
        public var skipped: [String] = []
    }

    /// Converts; `progress(done, total)` is called after each chunk, `warning` for each skipped image.
    public func run(progress: (Int, Int) -> Void = { _, _ in },
                    warning: (String) -> Void = { _ in }) throws -> Summary {
        var entries = try ImageList.read(path: list)
        if let shuffleSeed {
            var generator = MersenneTwister(seed: shuffleSeed)
            entries.caffeShuffle(using: &generator)
        }
        guard resizeHeight >= 0, resizeWidth >= 0 else {
            throw Diagnostic("resize sizes must not be negative (got \(resizeHeight)×\(resizeWidth))")
        }
        if FileManager.default.fileExists(atPath: output) {
            throw Diagnostic("the database already exists", file: output, hint: "remove it or choose another name; convert-imageset never overwrites")
        }
        let temporary = output + ".incomplete"
        try? FileManager.default.removeItem(atPath: temporary)
        let writer = try makeDatumWriter(path: temporary, backend: backend)
        do {
            let summary = try write(entries, into: writer, progress: progress, warning: warning)
            try writer.finish()
            do {
                try FileManager.default.moveItem(atPath: temporary, toPath: output)
            } catch {
                throw Diagnostic("cannot rename the finished database from \(temporary): \(error.localizedDescription)", file: output)
            }
            return summary
        } catch {
            try? writer.finish()
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    /// Converts `entries` in chunks and puts their Datums into `writer`, in order.
    private func write(_ entries: [ImageListEntry], into writer: any DatumWriter, progress: (Int, Int) -> Void,
                       warning: (String) -> Void) throws -> Summary {
        var summary = Summary()
        var firstSize: Int?
        var start = 0
        while start < entries.count {
            let chunk = Array(entries[start..<min(entries.count, start + chunkSize)])
            let records = convert(chunk, firstIndex: start)
            for (offset, record) in records.enumerated() {
                let entry = chunk[offset]
                switch record {
                case .failure(let reason):
                    let text = "\(list):\(entry.line): skipping image '\(root + entry.path)': \(reason.description)"
                    summary.skipped.append(text)
                    warning(text)
                case .success(let datum):
                    if checkSize, !datum.encoded {
                        let size = datum.data.count
                        if let firstSize, firstSize != size {
                            throw Diagnostic("image '\(root + entry.path)' gives \(size) bytes of pixels, the first image \(firstSize)",
                                             at: SourcePosition(file: list, line: entry.line, column: 1),
                                             hint: "--check-size wants one size; resize with --resize-height/--resize-width")
                        }
                        firstSize = firstSize ?? size
                    }
                    let key = String(format: "%08d", start + offset) + "_" + entry.path
                    let bytes: Data
                    do { bytes = try datum.serializedData() } catch {
                        throw Diagnostic("cannot serialize the Datum of '\(entry.path)': \(error)", file: list)
                    }
                    try writer.put(key: Data(key.utf8), value: bytes)
                    summary.written += 1
                }
            }
            start += chunk.count
            progress(start, entries.count)
        }
        return summary
    }

    /// The Datums of `chunk`, decoded on the worker threads.
    private func convert(_ chunk: [ImageListEntry], firstIndex: Int) -> [Result<Caffe_Datum, ImageDecodingError>] {
        let slots = IndexedResults<Caffe_Datum, ImageDecodingError>(count: chunk.count, missing: ImageDecodingError(description: "it was not decoded"))
        let workers = max(1, min(threads, chunk.count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var index = worker
            while index < chunk.count {
                slots.set(index, Result { () throws(ImageDecodingError) -> Caffe_Datum in try datum(for: chunk[index]) })
                index += workers
            }
        }
        return slots.values
    }

    /// Caffe's `ReadImageToDatum`.
    private func datum(for entry: ImageListEntry) throws(ImageDecodingError) -> Caffe_Datum {
        let path = root + entry.path
        let image = try ImageFile.read(path: path, height: resizeHeight, width: resizeWidth, color: !gray)
        var datum = Caffe_Datum()
        datum.label = entry.label
        if encoded || !encodeType.isEmpty {
            let type = encodeType.isEmpty ? ((entry.path as NSString).pathExtension.lowercased()) : encodeType.lowercased()
            let keepsFile = (image.channels == 3) == !gray && resizeHeight == 0 && resizeWidth == 0
                && ImageSetConversion.extensionMatches(entry.path, type)
            if keepsFile, let bytes = FileManager.default.contents(atPath: path) {
                datum.data = bytes
            } else {
                datum.data = try ImageEncoder.encode(image, as: type)
            }
            datum.encoded = true
            return datum
        }
        datum.channels = Int32(image.channels)
        datum.height = Int32(image.height)
        datum.width = Int32(image.width)
        datum.data = Data(image.planar())
        return datum
    }

    /// Caffe's `matchExt`: the file's extension is the encoding (jpeg also matches jpg).
    static func extensionMatches(_ path: String, _ encoding: String) -> Bool {
        let ext = (path as NSString).pathExtension.lowercased()
        return ext == encoding || (encoding == "jpg" && ext == "jpeg")
    }
}

/// Caffe's `compute_image_mean`: the per-pixel mean of every `Datum` in a database (encoded ones
/// decoded natively), as a 1×C×H×W `BlobProto`, plus each channel's mean value.
///
/// Sums are kept in Double (Caffe sums in float, which is exact up to 65 793 8-bit images and
/// drifts after). Every record must have the first one's size; one that does not is a `Diagnostic`
/// naming its key.
public enum ImageMean {
    /// The mean blob, the per-channel means, and the record count.
    public static func compute(database path: String, backend: DatabaseBackend,
                               progress: (Int) -> Void = { _ in }) throws -> (blob: Caffe_BlobProto, channelMeans: [Double], count: Int) {
        let cursor = try openDatumCursor(path: path, backend: backend)
        defer { cursor.close() }
        let first = try DatumImage(record: try cursor.peek(), source: path)
        var sums = [Double](repeating: 0, count: first.count)
        var count = 0
        while cursor.epochsCompleted == 0 {
            let record = try cursor.read()
            let image = try DatumImage(record: record, source: path)
            guard image.count == sums.count else {
                throw Diagnostic("record at key \(record.keyDescription) holds \(image.count) values, the first record \(sums.count)",
                                 file: path, hint: "compute_image_mean needs images of one size")
            }
            switch image.pixels {
            case .bytes(let bytes): bytes.withUnsafeBytes { raw in for i in 0..<sums.count { sums[i] += Double(raw[i]) } }
            case .floats(let values): for i in 0..<sums.count { sums[i] += Double(values[i]) }
            }
            count += 1
            if count % 10000 == 0 { progress(count) }
        }
        progress(count)
        var blob = Caffe_BlobProto()
        blob.num = 1
        blob.channels = Int32(first.channels)
        blob.height = Int32(first.height)
        blob.width = Int32(first.width)
        blob.data = sums.map { Float($0 / Double(count)) }
        let plane = first.height * first.width
        let channelMeans = (0..<first.channels).map { c in
            blob.data[(c * plane)..<((c + 1) * plane)].reduce(0.0) { $0 + Double($1) } / Double(plane)
        }
        return (blob, channelMeans, count)
    }
}
