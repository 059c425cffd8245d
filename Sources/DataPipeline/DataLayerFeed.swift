import CaffeFormat
import Foundation

/// The batches of one Caffe `Data` layer (read from its LMDB or LevelDB), `ImageData` layer (its
/// list of image files) or `WindowData` layer (its window file), produced on a background thread into a bounded queue, as Caffe's
/// `BasePrefetchingDataLayer` does (`data_param.prefetch` batches, default 4).
///
/// Everything that can be checked up front — the layer's parameters, the database path, the first
/// record and the batch shape — is checked in `init`, on the caller's thread. Later errors (a corrupt
/// or mis-sized record) travel through the queue in order and are thrown by `next()` on the
/// consumer's thread, after the good batches before them; the feed then stops, and every later
/// `next()` throws the same error. `close()` (or `deinit`) stops the thread and waits for it.
///
/// Memory is bounded: at most `prefetch` queued batches plus one being filled and one delivered,
/// each reused once the consumer lets go of it; the LMDB is streamed, never loaded whole.
///
///     let feed = try DataLayerFeed(layer: dataLayer, phase: .train, seed: 1, baseDirectory: netFolder)
///     defer { feed.close() }
///     let batch = try feed.next()     // batch.shape == feed.batchShape, e.g. [64, 1, 28, 28]
///
/// Batches are identical with and without prefetching, for the same seed.
public final class DataLayerFeed: @unchecked Sendable {
    /// The layer's name, for diagnostics.
    public let layerName: String
    /// The resolved database path.
    public let source: String
    /// `[N, C, H, W]` of every batch.
    public let batchShape: [Int]
    /// How many batches are read ahead (0: read on the caller's thread).
    public let prefetch: Int
    /// For an SSD `AnnotatedData` layer: the rows of its `1×1×rows×8` label top (`AnnotatedDataReader.labelRows`).
    public let annotatedLabelRows: Int?
    private let synchronousReader: (any BatchSource)?
    private let queue: PrefetchQueue?
    private let consumerLock = NSLock()

    /// A feed for a `Data`, `ImageData` or `WindowData` layer.
    ///
    /// - Parameters:
    ///   - phase: TRAIN draws random crops; both phases mirror at random when `mirror` is set.
    ///   - seed: for `Data`, seeds the transformer's generator (and, derived from it, `rand_skip`);
    ///     for `ImageData` and `WindowData`, plays Caffe's global generator after
    ///     `Caffe::set_random_seed(seed)` (see `ImageListReader`, `WindowDataReader`).
    ///   - baseDirectory: resolves a relative `source` and `mean_file` (Caffe uses the working directory).
    ///   - prefetch: overrides `data_param.prefetch`; 0 reads synchronously in `next()`.
    public init(layer: Caffe_LayerParameter, phase: Caffe_Phase, seed: UInt32 = 0, baseDirectory: String? = nil,
                prefetch: Int? = nil) throws {
        layerName = layer.name
        let reader: any BatchSource
        let depth: Int
        do {
            switch layer.type {
            case "Data":
                let parameter = layer.dataParam
                guard !parameter.source.isEmpty else {
                    throw Diagnostic("data_param.source is empty", layer: layer.name, hint: "set it to the LMDB folder")
                }
                source = resolve(parameter.source, against: baseDirectory)
                depth = prefetch ?? Int(parameter.prefetch)
                let transformer = try DataTransformer(layer.transformParam, phase: phase, seed: seed,
                                                      baseDirectory: baseDirectory, layer: layer.name)
                reader = try DataBatchReader(source: source, batchSize: Int(parameter.batchSize), transformer: transformer,
                                             randSkip: Int(parameter.randSkip), skipSeed: seed ^ 0x9E37_79B9,
                                             backend: DatabaseBackend.forDataLayer(parameter, source: source))
            case "ImageData":
                let list = try ImageListReader(layer: layer, phase: phase, seed: seed, baseDirectory: baseDirectory)
                source = list.listPath
                depth = prefetch ?? Int(layer.dataParam.prefetch)
                reader = list
            case "DenseImageData":
                let list = try DenseImageListReader(layer: layer, phase: phase, seed: seed, baseDirectory: baseDirectory)
                source = list.listPath
                depth = prefetch ?? Int(layer.dataParam.prefetch)
                reader = list
            case "AnnotatedData":
                let annotated = try AnnotatedDataReader(layer: layer, phase: phase, seed: seed, baseDirectory: baseDirectory)
                source = annotated.source
                depth = prefetch ?? Int(layer.dataParam.prefetch)
                reader = annotated
            case "WindowData":
                let windows = try WindowDataReader(layer: layer, phase: phase, seed: seed, baseDirectory: baseDirectory)
                source = resolve(layer.windowDataParam.source, against: baseDirectory)
                depth = prefetch ?? Int(layer.dataParam.prefetch)
                reader = windows
            default:
                throw Diagnostic("a DataLayerFeed reads Data, ImageData, DenseImageData, WindowData and AnnotatedData layers, not \(layer.type)", layer: layer.name)
            }
        } catch let diagnostic as Diagnostic {
            throw diagnostic.inLayer(layer.name)
        }
        self.prefetch = max(0, depth)
        batchShape = reader.batchShape
        annotatedLabelRows = (reader as? AnnotatedDataReader)?.labelRows
        if self.prefetch == 0 {
            synchronousReader = reader
            queue = nil
        } else {
            synchronousReader = nil
            let queue = PrefetchQueue(reader: reader, capacity: self.prefetch, layer: layer.name)
            self.queue = queue
            let thread = Thread { queue.produce() }
            thread.name = "swiftjit.data.\(layer.name)"
            thread.start()
        }
    }

    deinit { close() }

    /// The next batch. Blocks until the prefetch thread has one; throws the first read error.
    public func next() throws -> DataBatch {
        consumerLock.lock()
        defer { consumerLock.unlock() }
        if let queue { return try queue.take() }
        guard let synchronousReader else { throw Diagnostic("the data feed was closed", layer: layerName) }
        do {
            var batch = DataBatch(shape: synchronousReader.batchShape)
            try synchronousReader.fill(&batch)
            return batch
        } catch let diagnostic as Diagnostic {
            throw diagnostic.inLayer(layerName)
        }
    }

    /// Stops the prefetch thread and waits for it to finish. Idempotent.
    public func close() {
        queue?.stop()
    }
}

/// The bounded queue between the prefetch thread and the consumer, with Caffe's free/full batch
/// recycling. The `reader` is touched only by the producer thread once it runs; everything else
/// is guarded by `condition`.
private final class PrefetchQueue: @unchecked Sendable {
    private let reader: any BatchSource
    private let capacity: Int
    private let layer: String
    private let condition = NSCondition()
    private var full: [Result<DataBatch, any Error>] = []
    private var free: [DataBatch] = []
    private var delivered: DataBatch?
    private var failure: (any Error)?
    private var stopping = false
    private var producerDone = false

    init(reader: any BatchSource, capacity: Int, layer: String) {
        self.reader = reader
        self.capacity = capacity
        self.layer = layer
    }

    /// The producer thread's loop: fill a free batch, queue it, until stopped or failed.
    func produce() {
        while true {
            condition.lock()
            while full.count >= capacity && !stopping { condition.wait() }
            if stopping {
                producerDone = true
                condition.broadcast()
                condition.unlock()
                return
            }
            var batch = free.popLast() ?? DataBatch(shape: reader.batchShape)
            condition.unlock()

            let outcome: Result<DataBatch, any Error>
            do {
                try reader.fill(&batch)
                outcome = .success(batch)
            } catch let diagnostic as Diagnostic {
                outcome = .failure(diagnostic.inLayer(layer))
            } catch {
                outcome = .failure(error)
            }

            condition.lock()
            full.append(outcome)
            let failed: Bool
            if case .failure = outcome { failed = true } else { failed = false }
            if failed { producerDone = true }
            condition.broadcast()
            condition.unlock()
            if failed { return }
        }
    }

    /// The oldest queued batch; recycles the one delivered before it.
    func take() throws -> DataBatch {
        condition.lock()
        defer { condition.unlock() }
        if let previous = delivered {
            delivered = nil
            free.append(previous)
        }
        if let failure { throw failure }
        while full.isEmpty && !producerDone { condition.wait() }
        if full.isEmpty {
            throw Diagnostic("the data feed was closed", layer: layer)
        }
        let outcome = full.removeFirst()
        condition.broadcast()
        switch outcome {
        case .success(let batch):
            delivered = batch
            return batch
        case .failure(let error):
            failure = error
            throw error
        }
    }

    /// Asks the producer to stop and waits until it has.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !producerDone { condition.wait() }
        full.removeAll()
        free.removeAll()
        delivered = nil
        condition.unlock()
    }
}
