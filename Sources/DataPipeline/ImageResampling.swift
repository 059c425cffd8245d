import CaffeFormat
import Foundation

/// OpenCV's other `cv::resize` interpolations on 8-bit images, for SSD's `resize_param.interp_mode`
/// (weiliu89/caffe's `ApplyResize` draws one of LINEAR, AREA, NEAREST, CUBIC, LANCZOS4 per image).
///
/// LINEAR is `ImageResize.bilinear` and NEAREST `ImageResize.nearest`. CUBIC (Keys, A = −0.75)
/// and LANCZOS4 (8 taps) use OpenCV's source coordinates `(d + 0.5)·scale − 0.5`, its kernels and
/// edge replication — CUBIC in Float, LANCZOS4 in 11-bit fixed point, as OpenCV 4 runs them on
/// 8-bit images. AREA averages with OpenCV's area weights when shrinking (`(sum + 2) >> 2` for
/// exact halving, its fast path) and is OpenCV's area-flavoured bilinear when growing.
/// `Tests/DataPipelineTests/SSDAugmentationTests` compares every mode with `cv2.resize` (equal but
/// for rare one-level roundings, e.g. where OpenCV fuses a multiply-add).
extension ImageResize {
    /// `image` resized to `height × width` with `interpolation`.
    public static func resized(_ image: DecodedImage, height: Int, width: Int,
                               interpolation: Caffe_ResizeParameter.Interp_mode) -> DecodedImage {
        if image.height == height && image.width == width { return image }
        switch interpolation {
        case .linear: return bilinear(image, height: height, width: width)
        case .nearest: return nearest(image, height: height, width: width)
        case .cubic: return separable(image, height: height, width: width, taps: 4, fixedPoint: false, kernel: cubicWeights)
        case .lanczos4: return separable(image, height: height, width: width, taps: 8, fixedPoint: true, kernel: lanczosWeights)
        case .area:
            let scaleX = Double(image.width) / Double(width), scaleY = Double(image.height) / Double(height)
            if scaleX >= 1 && scaleY >= 1 { return areaShrink(image, height: height, width: width) }
            return areaGrow(image, height: height, width: width)
        }
    }

    /// OpenCV's `interpolateCubic` (A = −0.75) at fraction `x`.
    static func cubicWeights(_ x: Float) -> [Float] {
        let a: Float = -0.75
        let w0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
        let w1 = ((a + 2) * x - (a + 3)) * x * x + 1
        let w2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
        return [w0, w1, w2, 1 - w0 - w1 - w2]
    }

    /// OpenCV's `interpolateLanczos4` at fraction `x`: sinc(πt)·sinc(πt/4) over 8 taps, normalized.
    static func lanczosWeights(_ x: Float) -> [Float] {
        if x < Float.ulpOfOne { return [0, 0, 0, 1, 0, 0, 0, 0] }
        let s45 = 0.70710678118654752440084436210485
        let cs: [(Double, Double)] = [(1, 0), (-s45, -s45), (0, 1), (s45, -s45), (-1, 0), (s45, s45), (0, -1), (-s45, s45)]
        let y0 = -(Double(x) + 3) * Double.pi * 0.25
        let (s0, c0) = (sin(y0), cos(y0))
        var weights = [Float](repeating: 0, count: 8)
        var sum: Float = 0
        for i in 0..<8 {
            let y = -(Double(x) + 3 - Double(i)) * Double.pi * 0.25
            weights[i] = Float((cs[i].0 * s0 + cs[i].1 * c0) / (y * y))
            sum += weights[i]
        }
        let inverse = 1 / sum
        return weights.map { $0 * inverse }
    }

    /// A separable `taps`-tap kernel resize as OpenCV 4 runs it on 8-bit images: LANCZOS4 in
    /// fixed point (weights × 2048 rounded, an integer horizontal pass, the vertical pass
    /// `(Σ + 2²¹) >> 22`), CUBIC in Float (`fixedPoint` false: weighted sums left to right, rounded
    /// half to even); source coordinates `(d + 0.5)·scale − 0.5`, edges replicated.
    static func separable(_ image: DecodedImage, height: Int, width: Int, taps: Int, fixedPoint: Bool,
                          kernel: (Float) -> [Float]) -> DecodedImage {
        let c = image.channels
        let half = taps / 2 - 1
        func plan(_ destination: Int, _ source: Int) -> (first: [Int], weights: [Float]) {
            let scale = Double(source) / Double(destination)
            var first = [Int](repeating: 0, count: destination), weights = [Float](repeating: 0, count: destination * taps)
            for d in 0..<destination {
                var f = Float((Double(d) + 0.5) * scale - 0.5)
                let s = Int(f.rounded(.down))
                f -= Float(s)
                first[d] = s - half
                for (k, w) in kernel(f).enumerated() { weights[d * taps + k] = fixedPoint ? (w * 2048).rounded(.toNearestOrEven) : w }
            }
            return (first, weights)
        }
        let (columns, columnWeights) = plan(width, image.width)
        let (rows, rowWeights) = plan(height, image.height)
        /// The two passes in `T`: horizontal over every source row, then vertical, each output
        /// turned to 8 bits by `store`.
        func passes<T: Numeric>(_ columnTaps: [T], _ rowTaps: [T], lift: (UInt8) -> T, store: (T) -> UInt8) -> [UInt8] {
            var horizontal = [T](repeating: 0, count: image.height * width * c)
            for sy in 0..<image.height {
                for x in 0..<width {
                    for k in 0..<c {
                        var sum: T = 0
                        for t in 0..<taps {
                            let sx = min(max(columns[x] + t, 0), image.width - 1)
                            sum += lift(image.pixels[(sy * image.width + sx) * c + k]) * columnTaps[x * taps + t]
                        }
                        horizontal[(sy * width + x) * c + k] = sum
                    }
                }
            }
            var out = [UInt8](repeating: 0, count: height * width * c)
            for y in 0..<height {
                for i in 0..<(width * c) {
                    var sum: T = 0
                    for t in 0..<taps {
                        sum += horizontal[min(max(rows[y] + t, 0), image.height - 1) * width * c + i] * rowTaps[y * taps + t]
                    }
                    out[y * width * c + i] = store(sum)
                }
            }
            return out
        }
        let out = fixedPoint
            ? passes(columnWeights.map { Int64($0) }, rowWeights.map { Int64($0) }, lift: { Int64($0) },
                     store: { UInt8(clamping: ($0 + (1 << 21)) >> 22) })
            : passes(columnWeights, rowWeights, lift: { Float($0) }, store: PhotometricDistortion.saturate)
        return DecodedImage(channels: c, height: height, width: width, pixels: out)
    }

    /// INTER_AREA shrinking: each output pixel the area-weighted mean of the source pixels its
    /// cell covers (OpenCV's `computeResizeAreaTab` weights); exact halving rounds `(Σ + 2) >> 2`.
    static func areaShrink(_ image: DecodedImage, height: Int, width: Int) -> DecodedImage {
        let c = image.channels
        if image.width == 2 * width && image.height == 2 * height {
            var out = [UInt8](repeating: 0, count: height * width * c)
            for y in 0..<height {
                for x in 0..<width {
                    for k in 0..<c {
                        func at(_ yy: Int, _ xx: Int) -> Int { Int(image.pixels[(yy * image.width + xx) * c + k]) }
                        let sum = at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1)
                        out[(y * width + x) * c + k] = UInt8((sum + 2) >> 2)
                    }
                }
            }
            return DecodedImage(channels: c, height: height, width: width, pixels: out)
        }
        func table(_ destination: Int, _ source: Int) -> [[(index: Int, weight: Float)]] {
            let scale = Double(source) / Double(destination)
            return (0..<destination).map { d in
                let start = Double(d) * scale, end = start + scale
                let cell = min(scale, Double(source) - start)
                var first = Int(start.rounded(.up))
                let last = min(Int(end.rounded(.down)), source - 1)
                first = min(first, last)
                var entries: [(Int, Float)] = []
                if Double(first) - start > 1e-3 { entries.append((first - 1, Float((Double(first) - start) / cell))) }
                for s in first..<max(first, last) { entries.append((s, Float(1 / cell))) }
                if end - Double(last) > 1e-3 { entries.append((last, Float(min(min(end - Double(last), 1), cell) / cell))) }
                return entries
            }
        }
        let columns = table(width, image.width), rows = table(height, image.height)
        var out = [UInt8](repeating: 0, count: height * width * c)
        var buffer = [Float](repeating: 0, count: width * c), sum = [Float](repeating: 0, count: width * c)
        for y in 0..<height {
            for i in sum.indices { sum[i] = 0 }
            for (sy, beta) in rows[y] {
                for x in 0..<width {
                    for k in 0..<c {
                        var value: Float = 0
                        for (sx, alpha) in columns[x] { value += alpha * Float(image.pixels[(sy * image.width + sx) * c + k]) }
                        buffer[x * c + k] = value
                    }
                }
                for i in sum.indices { sum[i] += beta * buffer[i] }
            }
            for i in sum.indices { out[y * width * c + i] = PhotometricDistortion.saturate(sum[i]) }
        }
        return DecodedImage(channels: c, height: height, width: width, pixels: out)
    }

    /// INTER_AREA growing: OpenCV's bilinear with area coefficients (`sx = ⌊d·scale⌋`, fraction
    /// `(d + 1) − (sx + 1)/scale`, clipped at 0), in 11-bit fixed point with `bilinear`'s vertical pass.
    static func areaGrow(_ image: DecodedImage, height: Int, width: Int) -> DecodedImage {
        func plan(_ destination: Int, _ source: Int) -> (first: [Int], weights: [Int32]) {
            let scale = Double(source) / Double(destination), inverse = Double(destination) / Double(source)
            var first = [Int](repeating: 0, count: destination), weights = [Int32](repeating: 0, count: 2 * destination)
            for d in 0..<destination {
                var s = Int((Double(d) * scale).rounded(.down))
                var f = Float(Double(d + 1) - Double(s + 1) * inverse)
                f = f <= 0 ? 0 : f - f.rounded(.down)
                if s < 0 { (f, s) = (0, 0) }
                if s >= source - 1 { (f, s) = (0, source - 1) }
                first[d] = s
                weights[2 * d] = Int32(((1 - f) * 2048).rounded(.toNearestOrEven))
                weights[2 * d + 1] = Int32((f * 2048).rounded(.toNearestOrEven))
            }
            return (first, weights)
        }
        let c = image.channels
        let (columns, columnWeights) = plan(width, image.width)
        let (rows, rowWeights) = plan(height, image.height)
        var out = [UInt8](repeating: 0, count: height * width * c)
        for y in 0..<height {
            let (r0, r1) = (rows[y], min(rows[y] + 1, image.height - 1))
            for x in 0..<width {
                let (c0, c1) = (columns[x], min(columns[x] + 1, image.width - 1))
                for k in 0..<c {
                    func at(_ yy: Int, _ xx: Int) -> Int64 { Int64(image.pixels[(yy * image.width + xx) * c + k]) }
                    let top = Int32(at(r0, c0) * Int64(columnWeights[2 * x]) + at(r0, c1) * Int64(columnWeights[2 * x + 1]))
                    let bottom = Int32(at(r1, c0) * Int64(columnWeights[2 * x]) + at(r1, c1) * Int64(columnWeights[2 * x + 1]))
                    // OpenCV's vectorised vertical pass, as in `bilinear`.
                    let upper = (Int32(Int16(clamping: top >> 4)) * rowWeights[2 * y]) >> 16
                    let lower = (Int32(Int16(clamping: bottom >> 4)) * rowWeights[2 * y + 1]) >> 16
                    out[(y * width + x) * c + k] = UInt8(clamping: (upper + lower + 2) >> 2)
                }
            }
        }
        return DecodedImage(channels: c, height: height, width: width, pixels: out)
    }
}
