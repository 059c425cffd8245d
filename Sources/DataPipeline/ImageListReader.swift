import CaffeFormat
import Dispatch
import Foundation

/// Reads an image file as Caffe's `ReadImageToCVMat(filename, height, width, is_color)` does:
/// `cv::imread` with `IMREAD_COLOR` (3 channels, BGR) or `IMREAD_GRAYSCALE`, then `cv::resize`
/// (`INTER_LINEAR`) when both `height` and `width` are positive.
public enum ImageFile {
    /// The decoded (and resized) image; the error says what went wrong in words ("no such file").
    public static func read(path: String, height: Int = 0, width: Int = 0, color: Bool) throws(ImageDecodingError) -> DecodedImage {
        guard let bytes = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw ImageDecodingError(description: exists ? "it cannot be read (permissions?)" : "no such file")
        }
        let image = try ImageDecoder.decode(bytes, mode: color ? .color : .gray)
        guard height > 0, width > 0 else { return image }
        return ImageResize.bilinear(image, height: height, width: width)
    }
}

/// The batches of a Caffe `ImageData` layer: images named by a list file, decoded, optionally
/// resized, transformed, with their labels — Caffe's `ImageDataLayer::load_batch`.
///
/// Caffe's order is kept exactly. The layer's random draws come from one generator seeded with
/// `seed`, in the order Caffe's global generator makes them when the layer is the first of the
/// train net (after `Caffe::set_random_seed(random_seed)`): the transformer's first `InitRand`
/// (when it needs randomness), the shuffle generator's seed (`shuffle: true`), the `rand_skip`
/// draw, the transformer's second `InitRand`, whose seed it keeps. The list is shuffled with
/// `caffe::shuffle` at set-up and after every epoch, and items wrap around at the end of the list.
///
/// Each batch's images are read and decoded on several threads at once (`decodingThreads`, by
/// default one per core); the transformer then runs in item order, so batches do not depend on
/// the number of threads. All images must have the first one's size unless `crop_size` is set.
/// A missing or corrupt image is a `Diagnostic` at the list file's line, naming the image.
///
///     let reader = try ImageListReader(layer: imageDataLayer, phase: .train, seed: 1701, baseDirectory: netFolder)
///     var batch = DataBatch(shape: reader.batchShape)
///     try reader.fill(&batch)
///
/// Not thread-safe: one producer thread at a time (`DataLayerFeed` runs it on its prefetch thread).
public final class ImageListReader: BatchSource {
    /// The list file, resolved.
    public let listPath: String
    /// Prepended to every path of the list as text, like Caffe (so it usually ends in '/'); the
    /// result, when relative, resolves against the base directory.
    public let rootFolder: String
    public let batchSize: Int
    public let batchShape: [Int]
    /// `new_height`, `new_width` (0: keep each image's size).
    public let newHeight: Int
    public let newWidth: Int
    public let isColor: Bool
    public let shuffles: Bool
    /// How many threads decode a batch's images.
    public var decodingThreads = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// The list in the order it is being read (shuffled when `shuffle` is set).
    public private(set) var entries: [ImageListEntry]
    /// The index in `entries` of the next image.
    public private(set) var position: Int
    /// How many times reading wrapped from the last image to the first.
    public private(set) var epochsCompleted = 0
    private var shuffleGenerator: MersenneTwister
    private var transformer: DataTransformer
    private let firstShape: [Int]
    private let layer: String?
    private let baseDirectory: String?
    private var failure = StickyFailure()

    /// A reader for an `ImageData` layer's `image_data_param` and `transform_param`; relative
    /// `source`, `root_folder` and `mean_file` resolve against `baseDirectory`.
    public init(layer: Caffe_LayerParameter, phase: Caffe_Phase, seed: UInt32, baseDirectory: String? = nil) throws {
        let parameter = layer.imageDataParam
        self.layer = layer.name
        guard !parameter.source.isEmpty else {
            throw Diagnostic("image_data_param.source is empty", layer: layer.name, hint: "set it to the list file ('path label' per line)")
        }
        guard parameter.batchSize > 0 else {
            throw Diagnostic("image_data_param.batch_size is \(parameter.batchSize); it must be positive", layer: layer.name)
        }
        let (height, width) = (Int(parameter.newHeight), Int(parameter.newWidth))
        guard (height == 0 && width == 0) || (height > 0 && width > 0) else {
            throw Diagnostic("image_data_param sets new_height \(height) and new_width \(width); give both or neither",
                             layer: layer.name, hint: "Caffe resizes only when both are positive")
        }
        listPath = resolve(parameter.source, against: baseDirectory)
        rootFolder = parameter.rootFolder
        self.baseDirectory = baseDirectory
        batchSize = Int(parameter.batchSize)
        newHeight = height
        newWidth = width
        isColor = parameter.isColor
        shuffles = parameter.shuffle
        entries = try ImageList.read(path: listPath)
        guard !entries.isEmpty else {
            throw Diagnostic("the image list is empty", file: listPath, layer: layer.name, hint: "add lines 'path label'")
        }

        let transform = layer.transformParam
        let needsRandom = transform.mirror || (phase == .train && transform.cropSize > 0)
        var global = MersenneTwister(seed: seed)
        if needsRandom { _ = global.next() }
        shuffleGenerator = MersenneTwister(seed: shuffles ? global.next() : 0)
        if shuffles { entries.caffeShuffle(using: &shuffleGenerator) }
        position = 0
        if parameter.randSkip > 0 {
            let skip = Int(global.next() % parameter.randSkip)
            guard skip < entries.count else {
                throw Diagnostic("rand_skip drew \(skip) but the list has only \(entries.count) images", file: listPath,
                                 layer: layer.name, hint: "use a rand_skip no larger than the list")
            }
            position = skip
        }
        let transformerSeed = needsRandom ? global.next() : 0
        transformer = try DataTransformer(transform, phase: phase, seed: transformerSeed, baseDirectory: baseDirectory,
                                          layer: layer.name)
        let first = try ImageListReader.load(entries[position], root: rootFolder, base: baseDirectory, list: listPath,
                                             height: height, width: width, color: isColor)
        firstShape = first.shape
        batchShape = [batchSize] + (try transformer.outputShape(forInput: first.shape, key: "image '\(entries[position].path)'"))
    }

    public func fill(_ batch: inout DataBatch) throws {
        try failure.run { try load(&batch) }
    }

    private func load(_ batch: inout DataBatch) throws {
        let itemCount = batchShape.dropFirst().reduce(1, *)
        if batch.shape != batchShape || batch.data.count != batchSize * itemCount { batch = DataBatch(shape: batchShape) }
        if batch.labels.count != batchSize { batch.labels = [Float](repeating: 0, count: batchSize) }
        batch.keys.removeAll(keepingCapacity: true)
        var items: [ImageListEntry] = []
        items.reserveCapacity(batchSize)
        for _ in 0..<batchSize {
            items.append(entries[position])
            position += 1
            if position >= entries.count {
                position = 0
                epochsCompleted += 1
                if shuffles { entries.caffeShuffle(using: &shuffleGenerator) }
            }
        }
        let images = decode(items)
        for (item, entry) in items.enumerated() {
            let image = try images[item].get()
            let place = SourcePosition(file: listPath, line: entry.line, column: 1)
            if transformer.cropSize == 0, image.shape != firstShape {
                throw Diagnostic("image '\(resolve(rootFolder + entry.path, against: baseDirectory))' is \(image.shape.map(String.init).joined(separator: "×")), "
                                 + "but the first image is \(firstShape.map(String.init).joined(separator: "×"))", at: place,
                                 hint: "set new_height and new_width to resize every image, or crop_size to crop them")
            }
            do {
                try batch.data.withUnsafeMutableBufferPointer { all in
                    let slot = UnsafeMutableBufferPointer(rebasing: all[(item * itemCount)..<((item + 1) * itemCount)])
                    try transformer.transform(image, into: slot)
                }
            } catch var diagnostic as Diagnostic {
                diagnostic.location = place
                diagnostic.file = listPath
                throw diagnostic
            }
            batch.labels[item] = Float(entry.label)
            batch.keys.append(entry.path)
        }
    }

    /// The images of `items`, decoded on up to `decodingThreads` threads, in item order.
    private func decode(_ items: [ImageListEntry]) -> [Result<DatumImage, Diagnostic>] {
        let (root, base, list, height, width, color) = (rootFolder, baseDirectory, listPath, newHeight, newWidth, isColor)
        let threads = max(1, min(decodingThreads, items.count))
        let results = IndexedResults<DatumImage, Diagnostic>(count: items.count, missing: Diagnostic("an image was not decoded"))
        DispatchQueue.concurrentPerform(iterations: threads) { worker in
            var index = worker
            while index < items.count {
                results.set(index, Result { () throws(Diagnostic) -> DatumImage in
                    try ImageListReader.load(items[index], root: root, base: base, list: list, height: height, width: width,
                                             color: color)
                })
                index += threads
            }
        }
        return results.values
    }

    /// One list entry's image as a planar `DatumImage` with its label.
    static func load(_ entry: ImageListEntry, root: String, base: String?, list: String, height: Int, width: Int,
                     color: Bool) throws(Diagnostic) -> DatumImage {
        let path = resolve(root + entry.path, against: base)
        let image: DecodedImage
        do {
            image = try ImageFile.read(path: path, height: height, width: width, color: color)
        } catch {
            let place = SourcePosition(file: list, line: entry.line, column: 1)
            if error.description == "no such file" {
                throw Diagnostic("image '\(path)' listed here does not exist", at: place,
                                 hint: "check the list's paths and image_data_param.root_folder (prepended as text)")
            }
            throw Diagnostic("image '\(path)' listed here cannot be read: \(error.description)", at: place,
                             hint: "re-encode or remove the image")
        }
        return DatumImage(channels: image.channels, height: image.height, width: image.width, label: entry.label,
                          pixels: .bytes(Data(image.planar())))
    }
}
