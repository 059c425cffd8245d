import CPNG
import CTurboJPEG
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How an encoded image is turned into channels, as Caffe's `force_color` / `force_gray` choose
/// between OpenCV's `IMREAD_UNCHANGED`, `IMREAD_COLOR` and `IMREAD_GRAYSCALE`.
public enum ImageColorMode: Sendable, Equatable {
    /// Channels as stored: 1 for grey, 3 (BGR) for colour, 4 (BGRA) for PNGs with transparency.
    case native
    /// Always 3 channels, BGR; grey images are replicated.
    case color
    /// Always 1 channel; colour is converted the way OpenCV's decoders do it.
    case gray
}

/// An 8-bit image with interleaved channels in OpenCV's order (BGR, BGRA or grey), rows packed.
public struct DecodedImage: Sendable, Equatable {
    public var channels: Int
    public var height: Int
    public var width: Int
    /// `height × width × channels` bytes.
    public var pixels: [UInt8]

    public init(channels: Int, height: Int, width: Int, pixels: [UInt8]) {
        self.channels = channels
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    /// The same pixels planar (channel, row, column), the layout of a raw `Datum`.
    public func planar() -> [UInt8] {
        if channels == 1 { return pixels }
        let plane = height * width
        var out = [UInt8](repeating: 0, count: pixels.count)
        pixels.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                for p in 0..<plane {
                    for c in 0..<channels { target[c * plane + p] = source[p * channels + c] }
                }
            }
        }
        return out
    }
}

/// Why an encoded image could not be decoded, in words for a diagnostic.
public struct ImageDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
}

/// Decodes JPEG (libjpeg-turbo's TurboJPEG), PNG (libpng) and uncompressed BMP images into the pixels OpenCV's
/// `imdecode` gives Caffe: same colour order, same grey conversion, same channel count rules.
///
/// The format is recognised by its signature, as `imdecode` does. Other formats (TIFF, WebP…) that
/// OpenCV can also read are rejected with a description saying so.
///
///     let image = try ImageDecoder.decode(jpegBytes, mode: .color)   // 3 channels, BGR
///
/// Differences from OpenCV that remain: EXIF orientation is not applied, CMYK JPEGs are rejected, and
/// JPEGs whose header asks for more decoding work than their bytes can describe are rejected
/// (`JPEGWorkBound`: truncated decompression bombs, more than 500 progressive scans).
public enum ImageDecoder {
    /// Decodes `bytes`, recognising JPEG or PNG by signature.
    public static func decode(_ bytes: Data, mode: ImageColorMode) throws(ImageDecodingError) -> DecodedImage {
        let isJPEG = bytes.count >= 3 && bytes.starts(with: [0xFF, 0xD8, 0xFF])
        let isPNG = bytes.count >= 8 && bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        if isJPEG { return try decodeJPEG(bytes, mode: mode) }
        if isPNG { return try decodePNG(bytes, mode: mode) }
        if bytes.count >= 2 && bytes.starts(with: [0x42, 0x4D]) { return try decodeBMP(bytes, mode: mode) }
        let head = bytes.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")
        throw ImageDecodingError(description: bytes.isEmpty
            ? "its encoded image is empty"
            : "its encoded image is not JPEG, PNG or BMP (it starts with bytes \(head))")
    }

    /// Decodes a JPEG. Libjpeg warnings (such as a truncated scan) are tolerated, as OpenCV does.
    public static func decodeJPEG(_ bytes: Data, mode: ImageColorMode) throws(ImageDecodingError) -> DecodedImage {
        guard let handle = tjInitDecompress() else {
            throw ImageDecodingError(description: "TurboJPEG could not start a decompressor")
        }
        defer { tjDestroy(handle) }
        let result: Result<DecodedImage, ImageDecodingError> = bytes.withUnsafeBytes { raw in
            let source = raw.bindMemory(to: UInt8.self).baseAddress
            var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            if tjDecompressHeader3(handle, source, UInt(raw.count), &width, &height, &subsampling, &colorspace) != 0 {
                return .failure(jpegError(handle, doing: "reading its JPEG header"))
            }
            if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
                return .failure(ImageDecodingError(description: "its JPEG is CMYK, which is not supported; convert it to RGB"))
            }
            let channels: Int
            switch mode {
            case .native: channels = colorspace == Int32(TJCS_GRAY.rawValue) ? 1 : 3
            case .color: channels = 3
            case .gray: channels = 1
            }
            let format = channels == 1 ? TJPF_GRAY : TJPF_BGR
            let count = Int(width) * Int(height) * channels
            guard width > 0, height > 0, count < Int(Int32.max) else {
                return .failure(ImageDecodingError(description: "its JPEG claims an impossible size \(width)×\(height)"))
            }
            if let excess = JPEGWorkBound(bytes: raw, width: Int(width), height: Int(height)).excess {
                return .failure(ImageDecodingError(description: excess))
            }
            var pixels = [UInt8](repeating: 0, count: count)
            // TJFLAG_LIMITSCANS: more than 500 progressive scans is an error (libjpeg-turbo ≥ 2.1).
            let code = pixels.withUnsafeMutableBufferPointer { target in
                tjDecompress2(handle, source, UInt(raw.count), target.baseAddress, width, 0, height,
                              Int32(format.rawValue), TJFLAG_LIMITSCANS)
            }
            if code != 0 && tjGetErrorCode(handle) != Int32(TJERR_WARNING.rawValue) {
                return .failure(jpegError(handle, doing: "decoding its JPEG"))
            }
            return .success(DecodedImage(channels: channels, height: Int(height), width: Int(width), pixels: pixels))
        }
        return try result.get()
    }

    /// Decodes a PNG with OpenCV's transformations (see `Sources/CPNG/shim.h`).
    public static func decodePNG(_ bytes: Data, mode: ImageColorMode) throws(ImageDecodingError) -> DecodedImage {
        let modeCode: Int32
        switch mode {
        case .native: modeCode = Int32(SWIFTJIT_PNG_NATIVE)
        case .color: modeCode = Int32(SWIFTJIT_PNG_COLOR)
        case .gray: modeCode = Int32(SWIFTJIT_PNG_GRAY)
        }
        var message = [CChar](repeating: 0, count: 256)
        var pixels: UnsafeMutablePointer<UInt8>?
        var channels: Int32 = 0, height: Int32 = 0, width: Int32 = 0
        let status = bytes.withUnsafeBytes { raw in
            message.withUnsafeMutableBufferPointer { text in
                swiftjit_png_decode(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, modeCode,
                                    &pixels, &channels, &height, &width, text.baseAddress)
            }
        }
        defer { free(pixels) }
        switch Int(status) {
        case SWIFTJIT_PNG_OK:
            let count = Int(channels) * Int(height) * Int(width)
            let copied = [UInt8](UnsafeBufferPointer(start: pixels, count: count))
            return DecodedImage(channels: Int(channels), height: Int(height), width: Int(width), pixels: copied)
        case SWIFTJIT_PNG_SIXTEEN_BIT:
            throw ImageDecodingError(description: "its PNG has 16-bit samples, which Caffe reads only with force_color or force_gray")
        case SWIFTJIT_PNG_TOO_LARGE:
            throw ImageDecodingError(description: "its PNG is too large for a Datum")
        default:
            let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw ImageDecodingError(description: "its PNG cannot be decoded (libpng: \(reason))")
        }
    }

    private static func jpegError(_ handle: tjhandle, doing what: String) -> ImageDecodingError {
        let reason = tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown error"
        return ImageDecodingError(description: "\(what) failed (libjpeg-turbo: \(reason))")
    }
}

/// How much decoding work a JPEG's bytes can honestly ask for, checked before TurboJPEG runs.
///
/// libjpeg decodes a truncated or corrupt JPEG to the end anyway (the rest grey, as OpenCV shows
/// it), so a few hundred bytes whose header declares 30000×20000 pixels cost seconds of decoding
/// and gigabytes of memory, and a progressive JPEG repeats that work once per scan. A complete
/// Huffman-coded JPEG spends at least one bit on every 8×8 block of its full-resolution component,
/// so it holds at least `pixels / 512` bytes; real progressive JPEGs have about 10 scans. A JPEG
/// that declares more pixels than its bytes can hold, or whose pixels × scans exceed `bytes × 8192`
/// (16 scans at that densest possible coding), is rejected. The densest real images, uniform
/// colour, reach half the first bound and a fifth of the second (libjpeg's progressive 4000×3000
/// white: 254 pixels and 1,525 pixel-scans per byte); photos are 50–500 times less dense. It is rejected
/// with both sizes in the message. What this refuses that OpenCV would decode: a JPEG truncated to
/// under a 512th of its pixel count, and arithmetic-coded images of (nearly) uniform colour.
struct JPEGWorkBound {
    /// Pixels one byte of a complete Huffman-coded JPEG can at most describe (1 bit per 64 pixels).
    static let pixelsPerByte = 512
    /// Pixel-scans (pixels decoded once per scan) one byte may ask for.
    static let pixelScansPerByte = 8192

    let bytes: Int
    let pixels: Int
    /// Start-of-scan markers; byte stuffing keeps them out of entropy-coded data, so this never
    /// undercounts (markers inside an APPn payload, an EXIF thumbnail's, only count more).
    let scans: Int

    init(bytes raw: UnsafeRawBufferPointer, width: Int, height: Int) {
        bytes = raw.count
        pixels = width * height
        var scans = 0
        var index = 0
        while index + 1 < raw.count {
            if raw[index] == 0xFF && raw[index + 1] == 0xDA { scans += 1 }
            index += 1
        }
        self.scans = max(scans, 1)
    }

    /// Why the JPEG is refused, or nil when its declared work fits its bytes.
    var excess: String? {
        let size = "\(bytes) bytes"
        if pixels / Self.pixelsPerByte > bytes {
            return "its JPEG declares \(pixels) pixels but holds only \(size); a complete JPEG that large needs at least "
                + "\(pixels / Self.pixelsPerByte) bytes (1 bit per 8×8 block), so the data is truncated or corrupt"
        }
        let (work, overflow) = pixels.multipliedReportingOverflow(by: scans)
        if overflow || work / Self.pixelScansPerByte > bytes {
            return "its JPEG declares \(pixels) pixels in \(scans) progressive scans, more decoding work than its \(size) "
                + "can describe (at most \(Self.pixelScansPerByte) pixel-scans per byte), so the data is corrupt"
        }
        return nil
    }
}
