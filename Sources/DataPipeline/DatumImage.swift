import CaffeFormat
import Foundation

/// The pixels of one `Datum`, planar (channel, row, column) like Caffe's CHW blobs, validated
/// against the Datum's declared shape, with its label.
///
/// A raw Datum keeps its `data` bytes (no copy to floats until the transformer writes the batch);
/// `float_data` Datums keep their floats; encoded (JPEG/PNG) Datums are decoded to 8-bit BGR or grey
/// exactly as Caffe's OpenCV path would, then stored planar.
///
///     let image = try DatumImage(record: record, colorMode: .native, source: "train_lmdb")
///     image.shape         // [1, 28, 28]
///     image.floatCHW()    // 784 floats, 0...255
public struct DatumImage: Sendable, Equatable {
    /// Where the values are held.
    public enum Pixels: Sendable, Equatable {
        /// `channels × height × width` bytes, planar.
        case bytes(Data)
        /// `channels × height × width` floats, planar.
        case floats([Float])
    }

    public var channels: Int
    public var height: Int
    public var width: Int
    public var label: Int32
    public var pixels: Pixels

    public init(channels: Int, height: Int, width: Int, label: Int32, pixels: Pixels) {
        self.channels = channels
        self.height = height
        self.width = width
        self.label = label
        self.pixels = pixels
    }

    /// `[channels, height, width]`.
    public var shape: [Int] { [channels, height, width] }

    /// The number of values, `channels × height × width`.
    public var count: Int { channels * height * width }

    /// The values as floats, planar: what Caffe's transformer reads before mean, scale and crop.
    public func floatCHW() -> [Float] {
        switch pixels {
        case .floats(let values): return values
        case .bytes(let bytes): return bytes.map { Float($0) }
        }
    }

    /// Decodes a serialized `Datum` read from `source` under `key`.
    ///
    /// Throws a `Diagnostic` naming the key when the bytes are not a Datum ("corrupt record at key
    /// 00000123"), when its pixel count differs from `channels × height × width` (both sizes are
    /// given, also when the product overflows an Int), when its shape has a zero dimension, or when
    /// an encoded image cannot be decoded or declares more pixels than its bytes can describe.
    public init(serialized value: Data, key: String, colorMode: ImageColorMode = .native,
                source: String? = nil) throws {
        let datum: Caffe_Datum
        do {
            datum = try Caffe_Datum(serializedBytes: value)
        } catch {
            throw Diagnostic("corrupt record at key \(key): its \(value.count) bytes are not a valid Datum", file: source,
                             hint: "rebuild the LMDB; every value must be a serialized caffe.Datum")
        }
        try self.init(datum: datum, key: key, colorMode: colorMode, source: source)
    }

    /// Decodes one LMDB record holding a serialized `Datum`.
    public init(record: LMDBRecord, colorMode: ImageColorMode = .native, source: String? = nil) throws {
        try self.init(serialized: record.value, key: record.keyDescription, colorMode: colorMode, source: source)
    }

    /// Validates and decodes a `Datum` message; `key` and `source` only name it in diagnostics.
    public init(datum: Caffe_Datum, key: String, colorMode: ImageColorMode = .native, source: String? = nil) throws {
        label = datum.label
        if datum.encoded {
            let image: DecodedImage
            do {
                image = try ImageDecoder.decode(datum.data, mode: colorMode)
            } catch {
                throw Diagnostic("corrupt record at key \(key): \(error.description)", file: source,
                                 hint: "re-encode the image, or rebuild the LMDB with convert_imageset")
            }
            channels = image.channels
            height = image.height
            width = image.width
            pixels = .bytes(Data(image.planar()))
            return
        }
        channels = Int(datum.channels)
        height = Int(datum.height)
        width = Int(datum.width)
        let declared = "\(channels)×\(height)×\(width)"
        guard channels > 0, height > 0, width > 0 else {
            throw Diagnostic("corrupt record at key \(key): its shape \(declared) is empty", file: source,
                             hint: "every Datum needs positive channels, height and width")
        }
        let (area, areaOverflow) = height.multipliedReportingOverflow(by: width)
        let (expected, overflow) = area.multipliedReportingOverflow(by: channels)
        guard !areaOverflow && !overflow else {
            throw Diagnostic("mis-sized record at key \(key): its shape \(declared) has more values than an Int holds, "
                             + "but it stores \(datum.data.isEmpty ? datum.floatData.count : datum.data.count)", file: source,
                             hint: "rebuild the LMDB; a Datum's channels, height and width must describe the pixels it holds")
        }
        if !datum.data.isEmpty {
            guard datum.data.count == expected else {
                throw Diagnostic("mis-sized record at key \(key): it holds \(datum.data.count) bytes of pixels, "
                                 + "but its shape \(declared) needs \(expected)", file: source,
                                 hint: "rebuild the LMDB; a Datum's data must hold channels·height·width bytes")
            }
            pixels = .bytes(datum.data)
        } else {
            guard datum.floatData.count == expected else {
                throw Diagnostic("mis-sized record at key \(key): it holds \(datum.floatData.count) float_data values, "
                                 + "but its shape \(declared) needs \(expected)", file: source,
                                 hint: "rebuild the LMDB; a Datum's float_data must hold channels·height·width values")
            }
            pixels = .floats(datum.floatData)
        }
    }
}

extension ImageColorMode {
    /// The mode Caffe's transformer picks from `force_color` / `force_gray`; both set is an error.
    public init(_ parameter: Caffe_TransformationParameter, layer: String? = nil) throws {
        switch (parameter.forceColor, parameter.forceGray) {
        case (true, true):
            throw Diagnostic("transform_param sets both force_color and force_gray", layer: layer,
                             hint: "keep one: force_color decodes to 3 channels, force_gray to 1")
        case (true, false): self = .color
        case (false, true): self = .gray
        case (false, false): self = .native
        }
    }
}
