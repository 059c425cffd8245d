import CaffeFormat
import Foundation

/// Caffe's `DataTransformer` for Datums: turns one `DatumImage` into the float CHW values a Data
/// layer puts in its batch, with Caffe's exact arithmetic and random draws.
///
/// For each value, in this order (BVLC `data_transformer.cpp`):
/// 1. mirror: if `mirror` is set, draw `Rand(2)` — in TRAIN *and* TEST, as Caffe does;
/// 2. crop: with `crop_size`, TRAIN draws `h_off = Rand(H − crop + 1)` then `w_off = Rand(W − crop + 1)`,
///    TEST takes the centre `((H − crop) / 2, (W − crop) / 2)`;
/// 3. `(value − mean) × scale` in Float, where the mean is the `mean_file` blob at the *uncropped*
///    position, or `mean_value[c]` (one value is replicated to every channel), or 0;
/// 4. the result lands at the cropped position, columns reversed when mirrored.
///
/// `Rand(n)` is `MersenneTwister.next() % n` on a generator owned by this transformer and seeded at
/// creation, so a run is reproducible for a seed, and a transformer given the seed Caffe drew for
/// its own generator reproduces Caffe's crops and mirrors.
///
///     var param = Caffe_TransformationParameter()
///     param.scale = 1 / 256; param.cropSize = 24; param.mirror = true
///     var transformer = try DataTransformer(param, phase: .train, seed: 7)
///     let values = try transformer.transform(image)   // 1×24×24 floats
public struct DataTransformer: Sendable {
    /// What is subtracted before scaling.
    public enum Mean: Sendable, Equatable {
        case none
        /// One value per channel (or one value for all channels).
        case perChannel([Float])
        /// A full mean image (`mean_file`), planar, the shape of the uncropped input.
        case perPixel(channels: Int, height: Int, width: Int, values: [Float])
    }

    public let phase: Caffe_Phase
    public let scale: Float
    /// 0 means no crop.
    public let cropSize: Int
    public let mirror: Bool
    public let mean: Mean
    /// How encoded Datums are decoded (`force_color` / `force_gray`).
    public let colorMode: ImageColorMode
    /// The layer named in diagnostics.
    public let layer: String?
    private var generator: MersenneTwister

    /// A transformer from plain values.
    public init(phase: Caffe_Phase, scale: Float = 1, cropSize: Int = 0, mirror: Bool = false, mean: Mean = .none,
                colorMode: ImageColorMode = .native, seed: UInt32, layer: String? = nil) {
        self.phase = phase
        self.scale = scale
        self.cropSize = cropSize
        self.mirror = mirror
        self.mean = mean
        self.colorMode = colorMode
        self.layer = layer
        generator = MersenneTwister(seed: seed)
    }

    /// A transformer for a layer's `transform_param`, loading its `mean_file` (resolved against
    /// `baseDirectory` when relative; Caffe resolves against the working directory).
    public init(_ parameter: Caffe_TransformationParameter, phase: Caffe_Phase, seed: UInt32,
                baseDirectory: String? = nil, layer: String? = nil) throws {
        let colorMode = try ImageColorMode(parameter, layer: layer)
        var mean = Mean.none
        if parameter.hasMeanFile {
            guard parameter.meanValue.isEmpty else {
                throw Diagnostic("transform_param sets both mean_file and mean_value", layer: layer,
                                 hint: "keep one: mean_file subtracts a mean image, mean_value one value per channel")
            }
            mean = try DataTransformer.loadMean(path: resolve(parameter.meanFile, against: baseDirectory), layer: layer)
        } else if !parameter.meanValue.isEmpty {
            mean = .perChannel(parameter.meanValue)
        }
        self.init(phase: phase, scale: parameter.scale, cropSize: Int(parameter.cropSize), mirror: parameter.mirror,
                  mean: mean, colorMode: colorMode, seed: seed, layer: layer)
    }

    /// Reads a `.binaryproto` mean image: one blob shaped (1, C, H, W) or (C, H, W).
    public static func loadMean(path: String, layer: String? = nil) throws -> Mean {
        try mean(from: try CaffeFiles.loadBlob(path: path), file: path, layer: layer)
    }

    /// A `.binaryproto` mean image already in memory (`file` names it in errors).
    public static func mean(fromBinaryproto data: Data, file: String, layer: String? = nil) throws -> Mean {
        try mean(from: try CaffeFiles.decodeBinary(data, file: file, what: "a .binaryproto (binary BlobProto)"), file: file, layer: layer)
    }

    static func mean(from blob: Caffe_BlobProto, file path: String, layer: String?) throws -> Mean {
        var dims = blob.hasShape && !blob.shape.dim.isEmpty
            ? blob.shape.dim.map(Int.init)
            : [Int(blob.num), Int(blob.channels), Int(blob.height), Int(blob.width)]
        while dims.count > 3, dims.first == 1 { dims.removeFirst() }
        let values = blob.data.isEmpty ? blob.doubleData.map { Float($0) } : blob.data
        let shapeText = dims.map(String.init).joined(separator: "×")
        guard dims.count == 3, dims.allSatisfy({ $0 > 0 }) else {
            throw Diagnostic("the mean file's blob is \(shapeText); expected one image, 1×C×H×W", file: path, layer: layer,
                             hint: "compute it with Caffe's compute_image_mean")
        }
        let (plane, planeOverflow) = dims[1].multipliedReportingOverflow(by: dims[2])
        let (total, totalOverflow) = dims[0].multipliedReportingOverflow(by: plane)
        guard !planeOverflow, !totalOverflow, values.count == total else {
            throw Diagnostic("the mean file's blob is \(shapeText) but holds \(values.count) values", file: path,
                             layer: layer, hint: "the file is damaged; compute it again with compute_image_mean")
        }
        return .perPixel(channels: dims[0], height: dims[1], width: dims[2], values: values)
    }

    /// The transformed shape `[C, H', W']` for inputs shaped `[C, H, W]`; checks crop and mean fit.
    public func outputShape(forInput shape: [Int], key: String? = nil) throws -> [Int] {
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let what = key.map { "record at key \($0)" } ?? "input"
        if cropSize > 0, cropSize > h || cropSize > w {
            throw Diagnostic("crop_size \(cropSize) is larger than the \(what)'s \(h)×\(w) image", layer: layer,
                             hint: "use a crop_size no larger than the smallest image side")
        }
        switch mean {
        case .none: break
        case .perChannel(let values):
            if values.count != 1 && values.count != c {
                throw Diagnostic("transform_param has \(values.count) mean_value entries for \(c)-channel images",
                                 layer: layer, hint: "give one mean_value, or one per channel")
            }
        case .perPixel(let mc, let mh, let mw, _):
            if (mc, mh, mw) != (c, h, w) {
                throw Diagnostic("the mean image is \(mc)×\(mh)×\(mw) but the \(what) is \(c)×\(h)×\(w)", layer: layer,
                                 hint: "compute the mean file from this database (compute_image_mean)")
            }
        }
        return cropSize > 0 ? [c, cropSize, cropSize] : [c, h, w]
    }

    /// Transforms `image` into a new array of `outputShape` values.
    public mutating func transform(_ image: DatumImage) throws -> [Float] {
        let shape = try outputShape(forInput: image.shape)
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        try out.withUnsafeMutableBufferPointer { try transform(image, into: $0) }
        return out
    }

    /// Transforms `image` into `output`, which must hold exactly `outputShape` values.
    public mutating func transform(_ image: DatumImage, into output: UnsafeMutableBufferPointer<Float>) throws {
        let shape = try outputShape(forInput: image.shape)
        let (channels, height, width) = (image.channels, image.height, image.width)
        let (outHeight, outWidth) = (shape[1], shape[2])
        precondition(output.count == channels * outHeight * outWidth, "output buffer does not match outputShape")

        let mirrored = mirror && generator.next(below: 2) == 1
        var offsets = (h: 0, w: 0)
        if cropSize > 0 {
            if phase == .train {
                offsets.h = generator.next(below: height - cropSize + 1)
                offsets.w = generator.next(below: width - cropSize + 1)
            } else {
                offsets = ((height - cropSize) / 2, (width - cropSize) / 2)
            }
        }
        let plan = Plan(channels: channels, height: height, width: width, outHeight: outHeight, outWidth: outWidth,
                        offsets: offsets, mirrored: mirrored, scale: scale)
        switch image.pixels {
        case .bytes(let data):
            data.withUnsafeBytes { raw in plan.run(raw.bindMemory(to: UInt8.self), mean: mean, into: output) }
        case .floats(let values):
            values.withUnsafeBufferPointer { plan.run($0, mean: mean, into: output) }
        }
    }
}

/// One image's crop, mirror and scale, applied row by row.
private struct Plan {
    let channels, height, width, outHeight, outWidth: Int
    let offsets: (h: Int, w: Int)
    let mirrored: Bool
    let scale: Float

    func run<Element: PixelValue>(_ source: UnsafeBufferPointer<Element>, mean: DataTransformer.Mean,
                                  into output: UnsafeMutableBufferPointer<Float>) {
        switch mean {
        case .none:
            for c in 0..<channels { copyPlane(c, source, into: output) { value, _ in value } }
        case .perChannel(let values):
            for c in 0..<channels {
                let m = values.count == 1 ? values[0] : values[c]
                copyPlane(c, source, into: output) { value, _ in value - m }
            }
        case .perPixel(_, _, _, let values):
            values.withUnsafeBufferPointer { meanImage in
                for c in 0..<channels { copyPlane(c, source, into: output) { value, index in value - meanImage[index] } }
            }
        }
    }

    @inline(__always)
    private func copyPlane<Element: PixelValue>(_ c: Int, _ source: UnsafeBufferPointer<Element>,
                                                into output: UnsafeMutableBufferPointer<Float>,
                                                centre: (Float, Int) -> Float) {
        for h in 0..<outHeight {
            let sourceRow = (c * height + offsets.h + h) * width + offsets.w
            let targetRow = (c * outHeight + h) * outWidth
            if mirrored {
                for w in 0..<outWidth {
                    let index = sourceRow + w
                    output[targetRow + outWidth - 1 - w] = centre(source[index].floatValue, index) * scale
                }
            } else {
                for w in 0..<outWidth {
                    let index = sourceRow + w
                    output[targetRow + w] = centre(source[index].floatValue, index) * scale
                }
            }
        }
    }
}

/// A stored pixel type the transformer reads (uint8 `data` or `float_data`).
private protocol PixelValue { var floatValue: Float { get } }
extension UInt8: PixelValue { fileprivate var floatValue: Float { Float(self) } }
extension Float: PixelValue { fileprivate var floatValue: Float { self } }

/// `path` itself when absolute or when there is no base, else `base/path`.
func resolve(_ path: String, against base: String?) -> String {
    guard let base, !path.hasPrefix("/") else { return path }
    return (base as NSString).appendingPathComponent(path)
}
