import Foundation

extension ImageDecoder {
    /// Decodes an uncompressed Windows BMP (8-bit paletted, 24-bit, or 32-bit `BI_RGB`/`BI_BITFIELDS`
    /// with the standard masks), bottom-up or top-down, as OpenCV's BMP decoder gives it:
    /// `.native` is 1 channel for a grey palette and 3 (BGR) otherwise, alpha is dropped, and grey
    /// conversion is OpenCV's `cvtColor(BGR2GRAY)` fixed-point formula. RLE-compressed BMPs are
    /// rejected with a description saying so.
    public static func decodeBMP(_ bytes: Data, mode: ImageColorMode) throws(ImageDecodingError) -> DecodedImage {
        let data = [UInt8](bytes)
        func u16(_ at: Int) -> Int { Int(data[at]) | Int(data[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 {
            let low = UInt32(data[at]) | UInt32(data[at + 1]) << 8
            let high = UInt32(data[at + 2]) << 16 | UInt32(data[at + 3]) << 24
            return low | high
        }
        guard data.count >= 54, data[0] == 0x42, data[1] == 0x4D else {
            throw ImageDecodingError(description: "its BMP header is truncated")
        }
        let offset = Int(u32(10)), headerSize = Int(u32(14))
        let width = Int(Int32(bitPattern: u32(18))), signedHeight = Int(Int32(bitPattern: u32(22)))
        let bits = u16(28), compression = u32(30)
        let height = abs(signedHeight)
        guard headerSize >= 40, width > 0, height > 0, width * height < 1 << 28 else {
            throw ImageDecodingError(description: "its BMP header is not supported (size \(width)×\(signedHeight), header \(headerSize) bytes)")
        }
        guard compression == 0 || (compression == 3 && bits == 32) else {
            throw ImageDecodingError(description: "its BMP is compressed (RLE), which is not supported; save it uncompressed")
        }
        guard [8, 24, 32].contains(bits) else {
            throw ImageDecodingError(description: "its BMP has \(bits)-bit pixels; 8, 24 and 32 are supported")
        }
        let stride = (width * bits + 31) / 32 * 4
        guard offset >= 0, offset + stride * height <= data.count else {
            throw ImageDecodingError(description: "its BMP is truncated (\(data.count) bytes, its pixels need \(offset + stride * height))")
        }
        var palette: [(UInt8, UInt8, UInt8)] = []
        if bits == 8 {
            let used = Int(u32(46))
            let entries = used == 0 ? 256 : min(used, 256)
            let start = 14 + headerSize
            guard start + entries * 4 <= offset else { throw ImageDecodingError(description: "its BMP palette is truncated") }
            palette = (0..<entries).map { (data[start + 4 * $0], data[start + 4 * $0 + 1], data[start + 4 * $0 + 2]) }
        }
        let greyPalette = bits == 8 && palette.allSatisfy { $0.0 == $0.1 && $0.1 == $0.2 }
        let channels: Int
        switch mode {
        case .native: channels = greyPalette ? 1 : 3
        case .color: channels = 3
        case .gray: channels = 1
        }
        var out = [UInt8](repeating: 0, count: width * height * channels)
        for y in 0..<height {
            let row = offset + (signedHeight > 0 ? height - 1 - y : y) * stride
            for x in 0..<width {
                let (b, g, r): (UInt8, UInt8, UInt8)
                switch bits {
                case 8:
                    let index = Int(data[row + x])
                    (b, g, r) = index < palette.count ? palette[index] : (0, 0, 0)
                default:
                    let at = row + x * (bits / 8)
                    (b, g, r) = (data[at], data[at + 1], data[at + 2])
                }
                let target = (y * width + x) * channels
                if channels == 3 {
                    (out[target], out[target + 1], out[target + 2]) = (b, g, r)
                } else {
                    out[target] = greyPalette ? b : grey(b, g, r)
                }
            }
        }
        return DecodedImage(channels: channels, height: height, width: width, pixels: out)
    }

    /// OpenCV's BGR → grey: `(B·1868 + G·9617 + R·4899 + 2¹³) >> 14`.
    static func grey(_ b: UInt8, _ g: UInt8, _ r: UInt8) -> UInt8 {
        let blue = Int(b) * 1868
        let green = Int(g) * 9617
        let red = Int(r) * 4899
        return UInt8((blue + green + red + 8192) >> 14)
    }
}
