import CaffeFormat
import Foundation

/// One batch as a Caffe Data layer outputs it: `data` shaped N×C×H×W (float32, C order) and one
/// float label per item, with the LMDB keys the items came from.
public struct DataBatch: Sendable, Equatable {
    /// `[N, C, H, W]`.
    public var shape: [Int]
    /// `N·C·H·W` values.
    public var data: [Float]
    /// `N` labels, `Float(datum.label)`.
    public var labels: [Float]
    /// The key of each item, in order.
    public var keys: [String]

    public init(shape: [Int], data: [Float], labels: [Float], keys: [String]) {
        self.shape = shape
        self.data = data
        self.labels = labels
        self.keys = keys
    }

    /// An all-zero batch of `shape`.
    public init(shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)),
                  labels: [Float](repeating: 0, count: shape[0]), keys: [])
    }
}

/// Something that fills `DataBatch`es one after the other on one thread: the producer a
/// `DataLayerFeed` runs on its prefetch thread (`DataBatchReader` for databases, `ImageListReader`
/// for `ImageData` lists).
public protocol BatchSource: AnyObject {
    /// `[N, C, H, W]` of every batch.
    var batchShape: [Int] { get }
    /// Overwrites `batch` with the next batch, reusing its storage when it is uniquely held.
    func fill(_ batch: inout DataBatch) throws
}

/// Reads batches synchronously from an LMDB or LevelDB of Datums, the way Caffe's `DataLayer::load_batch` does:
/// records in key order, wrapping at the end, each decoded and run through a `DataTransformer`.
///
/// The batch shape comes from the first record (after `rand_skip`), like Caffe's `DataLayerSetUp`;
/// every later record must have the same shape. Any error names the key and the database, and
/// the reader then stops: later calls throw the same error.
///
///     let reader = try DataBatchReader(source: "train_lmdb", batchSize: 64,
///                                      transformer: DataTransformer(phase: .train, scale: 1 / 256, seed: 1))
///     let batch = try reader.nextBatch()     // shape [64, 1, 28, 28]
///
/// `DataLayerFeed` runs one of these on a background thread. Not thread-safe: one thread at a time.
public final class DataBatchReader: BatchSource {
    /// The database path.
    public let source: String
    public let batchSize: Int
    /// `[N, C, H, W]` of every batch.
    public let batchShape: [Int]
    /// The shape `[C, H, W]` every record must have, and the key of the record that set it.
    public let recordShape: [Int]
    public let firstKey: String
    private let reader: any DatumCursor
    private var transformer: DataTransformer
    private var failure = StickyFailure()

    /// Opens `source`, skips `randSkip` draws' worth of records (`MersenneTwister(seed: skipSeed)`,
    /// one draw modulo `randSkip`, as Caffe's `rand_skip`), and infers the batch shape.
    public init(source: String, batchSize: Int, transformer: DataTransformer, randSkip: Int = 0,
                skipSeed: UInt32 = 0, backend: DatabaseBackend = .lmdb) throws {
        guard batchSize > 0 else {
            throw Diagnostic("data_param.batch_size is \(batchSize); it must be positive", layer: transformer.layer)
        }
        self.source = source
        self.batchSize = batchSize
        self.transformer = transformer
        reader = try openDatumCursor(path: source, backend: backend)
        if randSkip > 0 {
            var generator = MersenneTwister(seed: skipSeed)
            try reader.skip(generator.next(below: randSkip))
        }
        let first = try reader.peek()
        let image = try DatumImage(record: first, colorMode: transformer.colorMode, source: source)
        firstKey = first.keyDescription
        recordShape = image.shape
        let itemShape = try transformer.outputShape(forInput: image.shape, key: firstKey)
        batchShape = [batchSize] + itemShape
    }

    /// How many times reading wrapped from the last record to the first.
    public var epochsCompleted: Int { reader.epochsCompleted }

    /// The number of records in the database.
    public var recordCount: Int {
        switch reader {
        case let lmdb as LMDBReader: return lmdb.count
        case let leveldb as LevelDBReader: return leveldb.count
        default: return 0
        }
    }

    /// The next batch, in a new `DataBatch`.
    public func nextBatch() throws -> DataBatch {
        var batch = DataBatch(shape: batchShape)
        try fill(&batch)
        return batch
    }

    /// Overwrites `batch` with the next batch, reusing its storage when it is uniquely held.
    public func fill(_ batch: inout DataBatch) throws {
        try failure.run({ try load(&batch) }, cleanUp: { reader.close() })
    }

    private func load(_ batch: inout DataBatch) throws {
        let itemCount = batchShape.dropFirst().reduce(1, *)
        if batch.shape != batchShape || batch.data.count != batchSize * itemCount {
            batch = DataBatch(shape: batchShape)
        }
        if batch.labels.count != batchSize { batch.labels = [Float](repeating: 0, count: batchSize) }
        batch.keys.removeAll(keepingCapacity: true)
        for item in 0..<batchSize {
            let record = try reader.read()
            let key = record.keyDescription
            let image = try DatumImage(record: record, colorMode: transformer.colorMode, source: source)
            if image.shape != recordShape {
                let shape = image.shape.map(String.init).joined(separator: "×")
                let expected = recordShape.map(String.init).joined(separator: "×")
                throw Diagnostic("record at key \(key) is \(shape), but the first record (key \(firstKey)) is \(expected)",
                                 file: source,
                                 hint: "a Data layer needs records of one shape; resize the images when building the LMDB")
            }
            try batch.data.withUnsafeMutableBufferPointer { all in
                let slot = UnsafeMutableBufferPointer(rebasing: all[(item * itemCount)..<((item + 1) * itemCount)])
                try transformer.transform(image, into: slot)
            }
            batch.labels[item] = Float(image.label)
            batch.keys.append(key)
        }
    }
}
