import CaffeFormat
import Foundation

/// The batches of SegNet's and ENet's `DenseImageData` layer (`DenseImageDataLayer` of
/// alexgkendall/caffe-segnet and TimoSaemann/caffe-enet): a list file of `image label_image`
/// lines; each image is decoded (colour or grey, `is_color`) and resized bilinearly to
/// `new_height × new_width` when both are set, its label image decoded as one grey channel of
/// class ids and resized with nearest-neighbour interpolation (`ReadImageToCVMat(…, false, true)`),
/// both mirrored together (`mirror`) and cropped at the same offset (`crop_height × crop_width`).
/// The image then goes through the layer's `transform_param` (scale, mean); the label keeps its
/// pixel values (the fork's `preserve_pixel_vals`). Labels fill `DataBatch.labels`, N×H×W.
/// ENet's `label_divide_factor` f resizes the label image (nearest) to
/// `new_height / f × new_width / f` instead, so labels are N×⌊H/f⌋×⌊W/f⌋ (the encoder's output size).
///
/// Random draws follow Caffe's order with the layer first in the net: from a generator seeded with
/// `seed`, the shuffle generator's seed (`shuffle`), the `rand_skip` draw, then the seed of the
/// prefetch thread's generator (BVLC's `StartInternalThread`), which draws per item the mirror
/// (`% 2`) and then the crop offsets (`% (H − crop_height + 1)`, `% (W − crop_width + 1)`).
/// The fork refuses `transform_param`'s `mirror` and `crop_size` (they would transform image and
/// label differently); so does this, with a diagnostic. Every image must have the first one's size
/// (the fork reshapes per image only for batch 1 without resizing or cropping; here such a list
/// is refused too, naming the line, rather than changing the net's shapes between batches).
///
///     let reader = try DenseImageListReader(layer: denseImageDataLayer, phase: .train, seed: 1701, baseDirectory: netFolder)
///     var batch = DataBatch(shape: reader.batchShape)
///     try reader.fill(&batch)   // batch.data: N×C×H×W images, batch.labels: N×H×W class ids
public final class DenseImageListReader: BatchSource {
    /// One line of the list: the image, its label image, and where it is in the list file.
    public struct Entry: Sendable, Equatable {
        public var image: String
        public var label: String
        public var line: Int
    }

    /// The list file, resolved.
    public let listPath: String
    public let batchShape: [Int]
    /// `[N, 1, H, W]`, the label top (`[N, 1, H/f, W/f]` with `label_divide_factor` f).
    public let labelShape: [Int]
    /// The list in the order it is being read (shuffled when `shuffle` is set).
    public private(set) var entries: [Entry]
    public private(set) var position: Int
    private let parameter: Caffe_DenseImageDataParameter
    private let baseDirectory: String?
    private var shuffleGenerator: MersenneTwister
    private var itemGenerator: MersenneTwister
    private var transformer: DataTransformer
    private let imageSize: (height: Int, width: Int)
    private var failure = StickyFailure()

    public init(layer: Caffe_LayerParameter, phase: Caffe_Phase, seed: UInt32, baseDirectory: String? = nil) throws {
        let p = layer.denseImageDataParam
        parameter = p
        self.baseDirectory = baseDirectory
        guard !p.source.isEmpty else {
            throw Diagnostic("dense_image_data_param.source is empty", layer: layer.name, hint: "set it to the list file ('image label_image' per line)")
        }
        guard p.batchSize > 0 else {
            throw Diagnostic("dense_image_data_param.batch_size is \(p.batchSize); it must be positive", layer: layer.name)
        }
        guard (p.newHeight == 0) == (p.newWidth == 0), (p.cropHeight == 0) == (p.cropWidth == 0) else {
            throw Diagnostic("dense_image_data_param needs new_height and new_width, and crop_height and crop_width, set together",
                             layer: layer.name, hint: "the fork resizes and crops only when both sides are given")
        }
        guard !layer.transformParam.mirror, layer.transformParam.cropSize == 0 else {
            throw Diagnostic("DenseImageData cannot take transform_param's mirror or crop_size: they would move the image and not its labels",
                             layer: layer.name, hint: "use dense_image_data_param's mirror, crop_height and crop_width, which move both")
        }
        let factor = try layer.checkedLabelDivideFactor()
        listPath = resolve(p.source, against: baseDirectory)
        entries = try Self.readList(path: listPath, layer: layer.name)

        var global = MersenneTwister(seed: seed)
        shuffleGenerator = MersenneTwister(seed: p.shuffle ? global.next() : 0)
        if p.shuffle { entries.caffeShuffle(using: &shuffleGenerator) }
        position = 0
        if p.randSkip > 0 {
            let skip = Int(global.next() % p.randSkip)
            guard skip < entries.count else {
                throw Diagnostic("rand_skip drew \(skip) but the list has only \(entries.count) pairs", file: listPath, layer: layer.name)
            }
            position = skip
        }
        itemGenerator = MersenneTwister(seed: global.next())
        transformer = try DataTransformer(layer.transformParam, phase: phase, seed: 0, baseDirectory: baseDirectory, layer: layer.name)

        let (image, _) = try Self.load(entries[position], parameter: p, list: listPath, base: baseDirectory)
        imageSize = (image.height, image.width)
        var (height, width) = (image.height, image.width)
        if p.cropHeight > 0 {
            guard Int(p.cropHeight) <= height, Int(p.cropWidth) <= width else {
                throw Diagnostic("crop_height × crop_width \(p.cropHeight)×\(p.cropWidth) is larger than the first image, \(height)×\(width)",
                                 at: SourcePosition(file: listPath, line: entries[position].line, column: 1), layer: layer.name)
            }
            (height, width) = (Int(p.cropHeight), Int(p.cropWidth))
        }
        let channels = try transformer.outputShape(forInput: [image.channels, height, width])[0]
        batchShape = [Int(p.batchSize), channels, height, width]
        labelShape = [Int(p.batchSize), 1, height / factor, width / factor]
    }

    public func fill(_ batch: inout DataBatch) throws {
        try failure.run { try load(&batch) }
    }

    private func load(_ batch: inout DataBatch) throws {
        let batchSize = batchShape[0], itemCount = batchShape.dropFirst().reduce(1, *)
        let (height, width) = (batchShape[2], batchShape[3])
        let labelCount = labelShape[2] * labelShape[3]
        if batch.shape != batchShape || batch.data.count != batchSize * itemCount { batch = DataBatch(shape: batchShape) }
        if batch.labels.count != batchSize * labelCount { batch.labels = [Float](repeating: 0, count: batchSize * labelCount) }
        batch.keys.removeAll(keepingCapacity: true)
        for item in 0..<batchSize {
            let entry = entries[position]
            let place = SourcePosition(file: listPath, line: entry.line, column: 1)
            var (image, label) = try Self.load(entry, parameter: parameter, list: listPath, base: baseDirectory)
            guard (image.height, image.width) == imageSize else {
                throw Diagnostic("image '\(entry.image)' is \(image.height)×\(image.width), but the first image is \(imageSize.height)×\(imageSize.width)",
                                 at: place, hint: "set new_height and new_width to resize every image, or crop_height and crop_width")
            }
            if parameter.mirror, itemGenerator.next() % 2 == 1 {
                image = Self.flipped(image)
                label = Self.flipped(label)
            }
            if parameter.cropHeight > 0 {
                let top = Int(itemGenerator.next() % UInt32(image.height - height + 1))
                let left = Int(itemGenerator.next() % UInt32(image.width - width + 1))
                image = Self.cropped(image, top: top, left: left, height: height, width: width)
                label = Self.cropped(label, top: top, left: left, height: height, width: width)
            }
            let datum = DatumImage(channels: image.channels, height: height, width: width, label: 0, pixels: .bytes(Data(image.planar())))
            do {
                try batch.data.withUnsafeMutableBufferPointer { all in
                    try transformer.transform(datum, into: UnsafeMutableBufferPointer(rebasing: all[(item * itemCount)..<((item + 1) * itemCount)]))
                }
            } catch var diagnostic as Diagnostic {
                diagnostic.location = place
                diagnostic.file = listPath
                throw diagnostic
            }
            for i in 0..<labelCount { batch.labels[item * labelCount + i] = Float(label.pixels[i]) }
            batch.keys.append(entry.image)
            position += 1
            if position >= entries.count {
                position = 0
                if parameter.shuffle { entries.caffeShuffle(using: &shuffleGenerator) }
            }
        }
    }

    /// The list's `image label_image` pairs (whitespace-separated, as the fork's `infile >> a >> b`),
    /// one per line; a line with another count of fields is a diagnostic at that line.
    static func readList(path: String, layer: String) throws -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Diagnostic("cannot read the image list (no such file, or it is unreadable)", file: path, layer: layer,
                             hint: "check dense_image_data_param.source; relative paths start at the working directory")
        }
        var entries: [Entry] = []
        for (index, line) in String(decoding: data, as: UTF8.self).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.isEmpty { continue }
            guard fields.count == 2 else {
                throw Diagnostic("list line '\(line)' has \(fields.count) field\(fields.count == 1 ? "" : "s"); DenseImageData needs 'image label_image'",
                                 at: SourcePosition(file: path, line: index + 1, column: 1), layer: layer)
            }
            entries.append(Entry(image: String(fields[0]), label: String(fields[1]), line: index + 1))
        }
        guard !entries.isEmpty else { throw Diagnostic("the image list is empty", file: path, layer: layer, hint: "add lines 'image label_image'") }
        return entries
    }

    /// One pair, decoded and resized; the label must have the image's size (divided by
    /// `label_divide_factor`, which the caller has checked).
    static func load(_ entry: Entry, parameter p: Caffe_DenseImageDataParameter, list: String, base: String?) throws -> (DecodedImage, DecodedImage) {
        let place = SourcePosition(file: list, line: entry.line, column: 1)
        let factor = max(1, Int(p.labelDivideFactor))
        func read(_ name: String, color: Bool, nearest: Bool) throws -> DecodedImage {
            let path = resolve(p.rootFolder + name, against: base)
            do {
                if nearest {
                    let image = try ImageFile.read(path: path, color: false)
                    return p.newHeight > 0 ? ImageResize.nearest(image, height: Int(p.newHeight) / factor, width: Int(p.newWidth) / factor) : image
                }
                return try ImageFile.read(path: path, height: Int(p.newHeight), width: Int(p.newWidth), color: color)
            } catch {
                let why = error.description == "no such file" ? "does not exist" : "cannot be read: \(error.description)"
                throw Diagnostic("\(nearest ? "label image" : "image") '\(path)' listed here \(why)", at: place,
                                 hint: "check the list's paths and dense_image_data_param.root_folder (prepended as text)")
            }
        }
        let image = try read(entry.image, color: p.isColor, nearest: false)
        let label = try read(entry.label, color: false, nearest: true)
        guard (label.height, label.width) == (image.height / factor, image.width / factor) else {
            throw Diagnostic("label image '\(entry.label)' is \(label.height)×\(label.width), but its image '\(entry.image)' is \(image.height)×\(image.width)",
                             at: place, hint: "a label image must have its image's size (the fork's 'Input and label image heights and widths must match')")
        }
        return (image, label)
    }

    /// `image` mirrored left to right (`cv::flip(…, 1)`).
    static func flipped(_ image: DecodedImage) -> DecodedImage {
        var out = image
        let (c, w) = (image.channels, image.width)
        for y in 0..<image.height {
            for x in 0..<w {
                for k in 0..<c { out.pixels[(y * w + x) * c + k] = image.pixels[(y * w + (w - 1 - x)) * c + k] }
            }
        }
        return out
    }

    /// The `height × width` region of `image` at (`top`, `left`).
    static func cropped(_ image: DecodedImage, top: Int, left: Int, height: Int, width: Int) -> DecodedImage {
        let c = image.channels
        var pixels: [UInt8] = []
        pixels.reserveCapacity(height * width * c)
        for y in top..<(top + height) {
            let start = (y * image.width + left) * c
            pixels += image.pixels[start..<(start + width * c)]
        }
        return DecodedImage(channels: c, height: height, width: width, pixels: pixels)
    }
}

extension ImageResize {
    /// OpenCV's `cv::resize` with `INTER_NEAREST` (`resizeNN`): destination pixel (x, y) takes source
    /// pixel (⌊x·sw/dw⌋, ⌊y·sh/dh⌋), clamped to the image, the scales computed as OpenCV does
    /// (`1 / (dw/sw)` in double).
    public static func nearest(_ image: DecodedImage, height: Int, width: Int) -> DecodedImage {
        if image.height == height && image.width == width { return image }
        let c = image.channels
        let inverseX = 1 / (Double(width) / Double(image.width)), inverseY = 1 / (Double(height) / Double(image.height))
        let columns = (0..<width).map { min(Int((Double($0) * inverseX).rounded(.down)), image.width - 1) }
        var pixels = [UInt8](repeating: 0, count: height * width * c)
        for y in 0..<height {
            let sy = min(Int((Double(y) * inverseY).rounded(.down)), image.height - 1)
            for x in 0..<width {
                for k in 0..<c { pixels[(y * width + x) * c + k] = image.pixels[(sy * image.width + columns[x]) * c + k] }
            }
        }
        return DecodedImage(channels: c, height: height, width: width, pixels: pixels)
    }
}
