import CaffeFormat
import CPNG
import CTurboJPEG
import DataPipeline
import Foundation

/// Where the team's shared reference material lives: `../shared` beside the checkout.
/// Tests that need it fail loudly when it is missing, rather than skipping.
enum SharedFixtures {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let trainGolden = shared.appendingPathComponent("golden/train")

    /// `path` under `golden/train`, or a thrown error naming what is missing.
    static func train(_ path: String) throws -> String {
        let url = trainGolden.appendingPathComponent(path)
        guard FileManager.default.fileExists(atPath: url.path) else { throw MissingFixture(path: url.path) }
        return url.path
    }

    struct MissingFixture: Error, CustomStringConvertible {
        var path: String
        var description: String { "missing \(path): clone the repository next to the team's shared/ folder (../shared)" }
    }
}

/// A fresh folder under the system temporary directory, removed by `remove()`.
struct ScratchFolder {
    let path: String

    init(_ name: String) throws {
        path = (NSTemporaryDirectory() as NSString)
            .appendingPathComponent("swiftjit-data-\(name)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Datums and databases built in-test.
enum Fixtures {
    static func key(_ index: Int) -> String { String(format: "%08d", index) }

    static func rawDatum(channels: Int, height: Int, width: Int, bytes: [UInt8], label: Int32) -> Caffe_Datum {
        var datum = Caffe_Datum()
        datum.channels = Int32(channels)
        datum.height = Int32(height)
        datum.width = Int32(width)
        datum.data = Data(bytes)
        datum.label = label
        return datum
    }

    static func floatDatum(channels: Int, height: Int, width: Int, values: [Float], label: Int32) -> Caffe_Datum {
        var datum = Caffe_Datum()
        datum.channels = Int32(channels)
        datum.height = Int32(height)
        datum.width = Int32(width)
        datum.floatData = values
        datum.label = label
        return datum
    }

    static func encodedDatum(_ bytes: Data, label: Int32) -> Caffe_Datum {
        var datum = Caffe_Datum()
        datum.data = bytes
        datum.encoded = true
        datum.label = label
        return datum
    }

    /// Writes `values` under keys 00000000, 00000001, … into a new LMDB at `path`.
    static func writeLMDB(_ path: String, _ values: [Data]) throws {
        let writer = try LMDBWriter(path: path, initialMapSize: 1 << 20)
        for (index, value) in values.enumerated() { try writer.put(key: key(index), value: value) }
        try writer.finish()
    }

    static func writeLMDB(_ path: String, datums: [Caffe_Datum]) throws {
        try writeLMDB(path, datums.map { try $0.serializedData() })
    }

    /// A Data layer reading `source` with `batchSize`, the given transform, no shuffling.
    static func dataLayer(source: String, batchSize: Int, transform: Caffe_TransformationParameter = .init(),
                          prefetch: Int? = nil) -> Caffe_LayerParameter {
        var layer = Caffe_LayerParameter()
        layer.name = "data"
        layer.type = "Data"
        layer.top = ["data", "label"]
        layer.dataParam.source = source
        layer.dataParam.batchSize = UInt32(batchSize)
        layer.dataParam.backend = .lmdb
        if let prefetch { layer.dataParam.prefetch = UInt32(prefetch) }
        layer.transformParam = transform
        return layer
    }

    /// Encodes interleaved 8-bit pixels (`channels` 1 = grey, 3 = RGB, 4 = RGBA) as a PNG with libpng.
    static func png(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws -> Data {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        switch channels {
        case 1: image.format = UInt32(PNG_FORMAT_GRAY)
        case 3: image.format = UInt32(PNG_FORMAT_RGB)
        default: image.format = UInt32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)  // RGBA
        }
        var size: png_alloc_size_t = 0
        guard pixels.withUnsafeBytes({ png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, 0, nil) }) != 0 else {
            throw EncodingFailed(what: "PNG size")
        }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let written = bytes.withUnsafeMutableBytes { target in
            pixels.withUnsafeBytes { png_image_write_to_memory(&image, target.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        guard written != 0 else { throw EncodingFailed(what: "PNG") }
        return Data(bytes.prefix(Int(size)))
    }

    /// `png` without its colour-space chunks (gAMA, sRGB, cHRM, iCCP), so decoders apply no gamma.
    static func withoutColorspace(_ png: Data) -> Data {
        let bytes = [UInt8](png)
        var out = Array(bytes[0..<8])
        var offset = 8
        while offset + 12 <= bytes.count {
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let end = offset + 12 + length
            if !["gAMA", "sRGB", "cHRM", "iCCP"].contains(type) { out += bytes[offset..<end] }
            offset = end
        }
        return Data(out)
    }

    /// Encodes interleaved RGB (or grey when `channels` is 1) pixels as a quality-100, 4:4:4 JPEG.
    static func jpeg(width: Int, height: Int, channels: Int, pixels: [UInt8]) throws -> Data {
        guard let handle = tjInitCompress() else { throw EncodingFailed(what: "JPEG compressor") }
        defer { tjDestroy(handle) }
        var buffer: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let format = channels == 1 ? TJPF_GRAY : TJPF_RGB
        let subsampling = channels == 1 ? TJSAMP_GRAY : TJSAMP_444
        let code = pixels.withUnsafeBufferPointer {
            tjCompress2(handle, $0.baseAddress, Int32(width), 0, Int32(height), Int32(format.rawValue), &buffer, &size,
                        Int32(subsampling.rawValue), 100, 0)
        }
        defer { tjFree(buffer) }
        guard code == 0, let buffer else { throw EncodingFailed(what: "JPEG") }
        return Data(bytes: buffer, count: Int(size))
    }

    struct EncodingFailed: Error { var what: String }
}

extension Diagnostic {
    /// Everything a user would read, for `contains` checks.
    var text: String { description }
}
