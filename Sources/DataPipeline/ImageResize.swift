/// OpenCV's `cv::resize(src, dst, Size(width, height))` with its default `INTER_LINEAR` on 8-bit
/// images, which Caffe's `ReadImageToCVMat` calls for `new_height`/`new_width` and
/// `convert_imageset --resize_*`.
///
/// The arithmetic is OpenCV's fixed-point path: source coordinates `(d + 0.5)·scale − 0.5` in
/// float, weights rounded to 11 bits (`INTER_RESIZE_COEF_SCALE` 2048), a horizontal pass into
/// integers, edges clamped, and the vertical pass as OpenCV's SIMD kernel computes it on x86
/// (`VResizeLinearVec_32s8u`: `((h₀>>4)·β₀>>16) + ((h₁>>4)·β₁>>16)`, then `(v + 2) >> 2`), which
/// rounds some pixels one level differently from the scalar `(v + 2²¹) >> 22`. `Tests/data`
/// checks the result equals the installed `cv2.resize` exactly.
public enum ImageResize {
    /// `image` resized to `height × width`; the image itself when the size already matches.
    public static func bilinear(_ image: DecodedImage, height: Int, width: Int) -> DecodedImage {
        let (sourceHeight, sourceWidth, channels) = (image.height, image.width, image.channels)
        if sourceHeight == height && sourceWidth == width { return image }
        let scaleX = Double(sourceWidth) / Double(width)
        let scaleY = Double(sourceHeight) / Double(height)

        var columns = [Int](repeating: 0, count: width)
        var columnWeights = [Int32](repeating: 0, count: 2 * width)
        for x in 0..<width {
            var fx = Float((Double(x) + 0.5) * scaleX - 0.5)
            var sx = Int(fx.rounded(.down))
            fx -= Float(sx)
            if sx < 0 { fx = 0; sx = 0 }
            if sx >= sourceWidth - 1 { fx = 0; sx = sourceWidth - 1 }
            columns[x] = sx
            columnWeights[2 * x] = fixedPoint(1 - fx)
            columnWeights[2 * x + 1] = fixedPoint(fx)
        }

        var out = [UInt8](repeating: 0, count: height * width * channels)
        var upper = [Int32](repeating: 0, count: width * channels)
        var lower = [Int32](repeating: 0, count: width * channels)
        image.pixels.withUnsafeBufferPointer { source in
            let rowLength = sourceWidth * channels
            func horizontal(_ row: Int, into buffer: inout [Int32]) {
                let base = row * rowLength
                for x in 0..<width {
                    let sx = columns[x]
                    let (a0, a1) = (columnWeights[2 * x], columnWeights[2 * x + 1])
                    let next = min(sx + 1, sourceWidth - 1)
                    for c in 0..<channels {
                        buffer[x * channels + c] = Int32(source[base + sx * channels + c]) * a0
                            + Int32(source[base + next * channels + c]) * a1
                    }
                }
            }
            var cachedRows = (-1, -1)
            for y in 0..<height {
                var fy = Float((Double(y) + 0.5) * scaleY - 0.5)
                let sy = Int(fy.rounded(.down))
                fy -= Float(sy)
                let (b0, b1) = (fixedPoint(1 - fy), fixedPoint(fy))
                let row0 = Swift.min(Swift.max(sy, 0), sourceHeight - 1)
                let row1 = Swift.min(Swift.max(sy + 1, 0), sourceHeight - 1)
                if cachedRows != (row0, row1) {
                    if row0 == cachedRows.1 {
                        swap(&upper, &lower)
                    } else {
                        horizontal(row0, into: &upper)
                    }
                    horizontal(row1, into: &lower)
                    cachedRows = (row0, row1)
                }
                let target = y * width * channels
                for i in 0..<(width * channels) {
                    // OpenCV's vectorised vertical pass (VResizeLinearVec_32s8u): 16-bit halves,
                    // v_mul_hi products, then a rounding shift by 2.
                    let top = (Int32(Int16(clamping: upper[i] >> 4)) * b0) >> 16
                    let bottom = (Int32(Int16(clamping: lower[i] >> 4)) * b1) >> 16
                    out[target + i] = UInt8(clamping: (top + bottom + 2) >> 2)
                }
            }
        }
        return DecodedImage(channels: channels, height: height, width: width, pixels: out)
    }

    /// OpenCV's `saturate_cast<short>(w · 2048)`, rounding half to even as `cvRound` does.
    private static func fixedPoint(_ weight: Float) -> Int32 {
        Int32((weight * 2048).rounded(.toNearestOrEven))
    }
}
