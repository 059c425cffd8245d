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
/// Differences from OpenCV that remain: EXIF orientation is not applied, and CMYK JPEGs are rejected.
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
            var pixels = [UInt8](repeating: 0, count: count)
            let code = pixels.withUnsafeMutableBufferPointer { target in
                tjDecompress2(handle, source, UInt(raw.count), target.baseAddress, width, 0, height,
                              Int32(format.rawValue), 0)
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
