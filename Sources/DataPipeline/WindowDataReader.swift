import CaffeFormat
import Dispatch
import Foundation

/// The batches of R-CNN's `WindowData` layer (Caffe's `WindowDataLayer`): windows of images listed
/// in a window file, split into foreground (`overlap ≥ fg_threshold`, their class) and background
/// (`overlap < bg_threshold`, label 0); each batch samples `batch_size − ⌊batch_size·fg_fraction⌋`
/// background windows then the foreground ones, each cut out with `context_pad` (in `warp` or
/// `square` `crop_mode`), warped to `crop_size` (`transform_param`) with OpenCV's INTER_LINEAR,
/// mirrored at random, mean-subtracted and scaled by `window_data_param.scale`.
///
/// The window file repeats: `# image_index`, the image path (after `root_folder`), channels,
/// height, width, the window count, then `class overlap x1 y1 x2 y2` per window.
///
/// Random draws follow Caffe: one generator seeded with `seed` plays Caffe's global generator (the
/// transformer's `InitRand`, then the prefetch generator's seed); the prefetch generator draws a
/// window index (`rand % count`) and, with `mirror`, a coin, per item in order. The images of a
/// batch are then read, cropped and warped on several threads, which does not change the result.
///
/// Not thread-safe: one producer thread at a time. (`@unchecked Sendable` only so the decoding
/// threads of `fill` may call `crop`, which reads state that is never written after `init`.)
public final class WindowDataReader: BatchSource, @unchecked Sendable {
    /// One window of the file.
    public struct Window: Sendable, Equatable {
        public var image: Int
        public var label: Int
        public var overlap: Float
        public var x1, y1, x2, y2: Int
    }

    public let batchShape: [Int]
    public private(set) var foreground: [Window] = []
    public private(set) var background: [Window] = []
    /// Image paths by image index.
    public private(set) var images: [Int: String] = [:]
    private let cropSize: Int
    private let contextPad: Int
    private let square: Bool
    private let mirror: Bool
    private let fgFraction: Float
    private let scale: Float
    private let mean: DataTransformer.Mean
    private let windowFile: String
    private var generator: MersenneTwister
    private var failure = StickyFailure()
    public var decodingThreads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    public init(layer: Caffe_LayerParameter, phase: Caffe_Phase, seed: UInt32, baseDirectory: String? = nil) throws {
        let parameter = layer.windowDataParam
        let transform = layer.transformParam
        windowFile = resolve(parameter.source, against: baseDirectory)
        cropSize = Int(transform.cropSize)
        guard cropSize > 0 else {
            throw Diagnostic("WindowData needs transform_param.crop_size", layer: layer.name, hint: "R-CNN uses crop_size: 227")
        }
        guard parameter.batchSize > 0 else {
            throw Diagnostic("window_data_param.batch_size is \(parameter.batchSize); it must be positive", layer: layer.name)
        }
        guard ["warp", "square"].contains(parameter.cropMode) else {
            throw Diagnostic("window_data_param.crop_mode is '\(parameter.cropMode)'", layer: layer.name, hint: "use warp or square")
        }
        contextPad = Int(parameter.contextPad)
        guard 2 * contextPad < cropSize else {
            throw Diagnostic("context_pad \(contextPad) leaves nothing of a \(cropSize) crop", layer: layer.name)
        }
        square = parameter.cropMode == "square"
        mirror = transform.mirror
        fgFraction = parameter.fgFraction
        scale = parameter.scale
        var global = MersenneTwister(seed: seed)
        if transform.mirror || (phase == .train && transform.cropSize > 0) { _ = global.next() }
        generator = MersenneTwister(seed: global.next())

        let file = windowFile
        let layerName = layer.name
        var fg: [Window] = [], bg: [Window] = []
        var imageTable: [Int: String] = [:]
        guard let data = FileManager.default.contents(atPath: file) else {
            throw Diagnostic("cannot read the window file", file: file, layer: layerName,
                             hint: "check window_data_param.source")
        }
        let words = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        var cursor = 0
        func next(_ what: String) throws -> Substring {
            guard cursor < words.count else {
                throw Diagnostic("the window file ends where \(what) was expected", file: file, layer: layerName,
                                 hint: "each image is '# index', path, channels, height, width, count, then 'class overlap x1 y1 x2 y2' per window")
            }
            cursor += 1
            return words[cursor - 1]
        }
        func number<T: LosslessStringConvertible>(_ what: String) throws -> T {
            let word = try next(what)
            guard let value = T(String(word)) else {
                throw Diagnostic("the window file has '\(word)' where \(what) was expected", file: file, layer: layerName)
            }
            return value
        }
        var channels = 3
        while cursor < words.count {
            guard try next("'#'") == "#" else {
                throw Diagnostic("the window file has '\(words[cursor - 1])' where '#' starts an image", file: file, layer: layerName)
            }
            let index: Int = try number("an image index")
            imageTable[index] = resolve(parameter.rootFolder + String(try next("an image path")), against: baseDirectory)
            channels = try number("the channel count")
            let _: Int = try number("the height")
            let _: Int = try number("the width")
            let count: Int = try number("the window count")
            for _ in 0..<max(0, count) {
                var window = Window(image: index, label: try number("a class"), overlap: try number("an overlap"), x1: try number("x1"),
                                    y1: try number("y1"), x2: try number("x2"), y2: try number("y2"))
                if window.overlap >= parameter.fgThreshold {
                    guard window.label > 0 else {
                        throw Diagnostic("a foreground window of image \(index) has class \(window.label)", file: file,
                                         layer: layerName, hint: "class 0 is background; foreground classes start at 1")
                    }
                    fg.append(window)
                } else if window.overlap < parameter.bgThreshold {
                    window.label = 0
                    window.overlap = 0
                    bg.append(window)
                }
            }
        }
        guard !fg.isEmpty, !bg.isEmpty else {
            throw Diagnostic("the window file has \(fg.count) foreground and \(bg.count) background windows; "
                             + "WindowData samples both", file: file, layer: layerName,
                             hint: "check fg_threshold and bg_threshold against the overlaps")
        }
        foreground = fg
        background = bg
        images = imageTable
        if transform.hasMeanFile {
            mean = try DataTransformer.loadMean(path: resolve(transform.meanFile, against: baseDirectory), layer: layer.name)
        } else if !transform.meanValue.isEmpty {
            guard transform.meanValue.count == 1 || transform.meanValue.count == channels else {
                throw Diagnostic("\(transform.meanValue.count) mean_value entries for \(channels)-channel images", layer: layer.name)
            }
            mean = .perChannel(transform.meanValue)
        } else {
            mean = .none
        }
        batchShape = [Int(parameter.batchSize), channels, cropSize, cropSize]
    }

    public func fill(_ batch: inout DataBatch) throws {
        try failure.run { try load(&batch) }
    }

    private func load(_ batch: inout DataBatch) throws {
        let batchSize = batchShape[0]
        let itemCount = batchShape.dropFirst().reduce(1, *)
        batch = DataBatch(shape: batchShape)
        let foregroundCount = Int(Float(batchSize) * fgFraction)
        var picks: [(window: Window, mirrored: Bool)] = []
        for (isForeground, count) in [(false, batchSize - foregroundCount), (true, foregroundCount)] {
            for _ in 0..<count {
                let draw = Int(generator.next())
                let window = isForeground ? foreground[draw % foreground.count] : background[draw % background.count]
                let mirrored = mirror && generator.next() % 2 == 1
                picks.append((window, mirrored))
            }
        }
        let chosen = picks
        let slots = IndexedResults<[Float], any Error>(count: chosen.count, missing: Diagnostic("a window was not cropped"))
        let workers = max(1, min(decodingThreads, chosen.count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            var index = worker
            while index < chosen.count {
                slots.set(index, Result { try self.crop(chosen[index].window, mirrored: chosen[index].mirrored) })
                index += workers
            }
        }
        for (item, result) in slots.values.enumerated() {
            let values = try result.get()
            batch.data.replaceSubrange((item * itemCount)..<((item + 1) * itemCount), with: values)
            batch.labels[item] = Float(picks[item].window.label)
            batch.keys.append("\(picks[item].window.image)")
        }
    }

    /// One window's `channels × crop × crop` values, Caffe's `load_batch` body.
    private func crop(_ window: Window, mirrored: Bool) throws -> [Float] {
        let (channels, size) = (batchShape[1], cropSize)
        guard let path = images[window.image] else {
            throw Diagnostic("a window names image \(window.image), which the file does not list", file: windowFile)
        }
        let image: DecodedImage
        do {
            image = try ImageFile.read(path: path, color: true)
        } catch {
            throw Diagnostic("image '\(path)' (index \(window.image)) cannot be read: \(error.description)", file: windowFile)
        }
        var (x1, y1, x2, y2) = (window.x1, window.y1, window.x2, window.y2)
        var target = (width: size, height: size)
        var pad = (w: 0, h: 0)
        if contextPad > 0 || square {
            let contextScale = Float(size) / Float(size - 2 * contextPad)
            var halfHeight = Float(y2 - y1 + 1) / 2, halfWidth = Float(x2 - x1 + 1) / 2
            let centerX = Float(x1) + halfWidth, centerY = Float(y1) + halfHeight
            if square { if halfHeight > halfWidth { halfWidth = halfHeight } else { halfHeight = halfWidth } }
            x1 = Int((centerX - halfWidth * contextScale).rounded())
            x2 = Int((centerX + halfWidth * contextScale).rounded())
            y1 = Int((centerY - halfHeight * contextScale).rounded())
            y2 = Int((centerY + halfHeight * contextScale).rounded())
            let (unclippedHeight, unclippedWidth) = (y2 - y1 + 1, x2 - x1 + 1)
            var padX1 = max(0, -x1), padY1 = max(0, -y1)
            var padX2 = max(0, x2 - image.width + 1)
            let padY2 = max(0, y2 - image.height + 1)
            x1 += padX1; x2 -= padX2; y1 += padY1; y2 -= padY2
            let scaleX = Float(size) / Float(unclippedWidth), scaleY = Float(size) / Float(unclippedHeight)
            target.width = Int((Float(x2 - x1 + 1) * scaleX).rounded())
            target.height = Int((Float(y2 - y1 + 1) * scaleY).rounded())
            padX1 = Int((Float(padX1) * scaleX).rounded())
            padX2 = Int((Float(padX2) * scaleX).rounded())
            padY1 = Int((Float(padY1) * scaleY).rounded())
            pad.h = padY1
            pad.w = mirrored ? padX2 : padX1
            if pad.h + target.height > size { target.height = size - pad.h }
            if pad.w + target.width > size { target.width = size - pad.w }
        }
        guard x1 >= 0, y1 >= 0, x2 < image.width, y2 < image.height, x2 >= x1, y2 >= y1, target.width > 0, target.height > 0 else {
            throw Diagnostic("window (\(window.x1), \(window.y1), \(window.x2), \(window.y2)) does not fit image '\(path)' "
                             + "(\(image.width)×\(image.height))", file: windowFile, hint: "windows are 0-based x1 y1 x2 y2, inclusive")
        }
        var region = [UInt8](repeating: 0, count: (y2 - y1 + 1) * (x2 - x1 + 1) * image.channels)
        let regionWidth = x2 - x1 + 1
        for y in y1...y2 {
            let source = (y * image.width + x1) * image.channels
            let destination = (y - y1) * regionWidth * image.channels
            region.replaceSubrange(destination..<(destination + regionWidth * image.channels),
                                   with: image.pixels[source..<(source + regionWidth * image.channels)])
        }
        let warped = ImageResize.bilinear(DecodedImage(channels: image.channels, height: y2 - y1 + 1, width: regionWidth, pixels: region),
                                          height: target.height, width: target.width)
        var out = [Float](repeating: 0, count: channels * size * size)
        for h in 0..<warped.height {
            for w in 0..<warped.width {
                let sourceColumn = mirrored ? warped.width - 1 - w : w
                for c in 0..<channels {
                    let pixel = Float(warped.pixels[(h * warped.width + sourceColumn) * warped.channels + c])
                    let top = (c * size + h + pad.h) * size + w + pad.w
                    switch mean {
                    case .none: out[top] = pixel * scale
                    case .perChannel(let values): out[top] = (pixel - values[values.count == 1 ? 0 : c]) * scale
                    case .perPixel(_, let meanHeight, let meanWidth, let values):
                        let offset = (meanWidth - size) / 2
                        out[top] = (pixel - values[(c * meanHeight + h + offset + pad.h) * meanWidth + w + offset + pad.w]) * scale
                    }
                }
            }
        }
        return out
    }
}
