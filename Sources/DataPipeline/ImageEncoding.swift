import CTurboJPEG
import CZlib
import Foundation

/// Encodes 8-bit images the way `convert_imageset --encode_type` asks OpenCV's `imencode` to:
/// JPEG at OpenCV's default quality 95 (libjpeg-turbo, 4:2:0 for colour) and PNG (zlib, no row
/// filter). Decoding the result gives the same pixels back for PNG; JPEG is lossy, as in Caffe.
public enum ImageEncoder {
    /// `image` (BGR or grey, interleaved) as a file of `type` (`png`, `jpg`/`jpeg`).
    public static func encode(_ image: DecodedImage, as type: String) throws(ImageDecodingError) -> Data {
        switch type.lowercased() {
        case "png": return try png(image)
        case "jpg", "jpeg": return try jpeg(image)
        default: throw ImageDecodingError(description: "encoding images as '\(type)' is not supported (use png or jpg)")
        }
    }

    /// A PNG of `image` (grey or BGR → RGB).
    public static func png(_ image: DecodedImage) throws(ImageDecodingError) -> Data {
        guard image.channels == 1 || image.channels == 3 else {
            throw ImageDecodingError(description: "PNG encoding takes 1 or 3 channels, not \(image.channels)")
        }
        let rowBytes = image.width * image.channels
        var raw = [UInt8](repeating: 0, count: image.height * (rowBytes + 1))
        for y in 0..<image.height {
            for x in 0..<image.width {
                for c in 0..<image.channels {
                    let sourceChannel = image.channels == 3 ? 2 - c : c
                    raw[y * (rowBytes + 1) + 1 + x * image.channels + c] = image.pixels[(y * image.width + x) * image.channels + sourceChannel]
                }
            }
        }
        var compressedLength = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
        guard compress2(&compressed, &compressedLength, raw, uLong(raw.count), 1) == Z_OK else {
            throw ImageDecodingError(description: "zlib could not compress the PNG")
        }
        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = Data()
        header.appendBigEndian(UInt32(image.width))
        header.appendBigEndian(UInt32(image.height))
        header.append(contentsOf: [8, image.channels == 3 ? 2 : 0, 0, 0, 0])
        out.appendChunk("IHDR", header)
        out.appendChunk("IDAT", Data(compressed.prefix(Int(compressedLength))))
        out.appendChunk("IEND", Data())
        return out
    }

    /// A JPEG of `image` at quality 95.
    public static func jpeg(_ image: DecodedImage) throws(ImageDecodingError) -> Data {
        guard image.channels == 1 || image.channels == 3 else {
            throw ImageDecodingError(description: "JPEG encoding takes 1 or 3 channels, not \(image.channels)")
        }
        guard let handle = tjInitCompress() else { throw ImageDecodingError(description: "TurboJPEG could not start a compressor") }
        defer { tjDestroy(handle) }
        var buffer: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let format = image.channels == 1 ? TJPF_GRAY : TJPF_BGR
        let sampling = image.channels == 1 ? TJSAMP_GRAY : TJSAMP_420
        let code = image.pixels.withUnsafeBufferPointer { pixels in
            tjCompress2(handle, pixels.baseAddress, Int32(image.width), 0, Int32(image.height), Int32(format.rawValue),
                        &buffer, &size, Int32(sampling.rawValue), 95, 0)
        }
        defer { if let buffer { tjFree(buffer) } }
        guard code == 0, let buffer else {
            throw ImageDecodingError(description: "libjpeg-turbo could not encode the JPEG")
        }
        return Data(bytes: buffer, count: Int(size))
    }
}

private extension Data {
    mutating func appendBigEndian(_ value: UInt32) {
        append(contentsOf: [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)])
    }

    mutating func appendChunk(_ type: String, _ body: Data) {
        appendBigEndian(UInt32(body.count))
        let typed = Data(type.utf8) + body
        append(typed)
        let crc = typed.withUnsafeBytes { crc32(0, $0.bindMemory(to: Bytef.self).baseAddress, uInt($0.count)) }
        appendBigEndian(UInt32(crc))
    }
}
