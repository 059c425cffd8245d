import CaffeFormat

/// An 8-bit image with planar channels (`C×H×W`, as a Datum stores it), the form SSD's data
/// augmentation edits before the transformer turns it into floats.
public struct PlanarImage: Sendable, Equatable {
    public var channels: Int, height: Int, width: Int
    public var pixels: [UInt8]

    public init(channels: Int, height: Int, width: Int, pixels: [UInt8]) {
        (self.channels, self.height, self.width, self.pixels) = (channels, height, width, pixels)
    }

    /// The fork's `CropImage`: the pixels under `box` (clipped to the image; corners scaled to
    /// pixels and truncated as the fork's `static_cast<int>` does), at least one pixel each way.
    public func cropped(to box: NormalizedBox) -> PlanarImage {
        let clipped = box.clipped
        let (x0, y0) = (clipped.xmin * Float(width), clipped.ymin * Float(height))
        let (x1, y1) = (clipped.xmax * Float(width), clipped.ymax * Float(height))
        let left = min(Int(x0), width - 1), top = min(Int(y0), height - 1)
        let cropWidth = max(1, min(Int(x1 - x0), width - left)), cropHeight = max(1, min(Int(y1 - y0), height - top))
        var out = [UInt8](repeating: 0, count: channels * cropHeight * cropWidth)
        for c in 0..<channels {
            for y in 0..<cropHeight {
                let source = (c * height + top + y) * width + left, target = (c * cropHeight + y) * cropWidth
                for x in 0..<cropWidth { out[target + x] = pixels[source + x] }
            }
        }
        return PlanarImage(channels: channels, height: cropHeight, width: cropWidth, pixels: out)
    }

    /// The fork's `ExpandImage`: a canvas `ratio` times the size (sides truncated), filled with
    /// `fill` per channel, with this image at `(top, left)`; returns the canvas and the image's
    /// frame in canvas terms as the fork's `expand_bbox` (the canvas relative to the image).
    public func expanded(ratio: Float, top: Int, left: Int, fill: [UInt8]) -> (image: PlanarImage, frame: NormalizedBox) {
        let canvasHeight = Int(Float(height) * ratio), canvasWidth = Int(Float(width) * ratio)
        var out = [UInt8](repeating: 0, count: channels * canvasHeight * canvasWidth)
        for c in 0..<channels {
            let value = fill.isEmpty ? 0 : fill[fill.count == 1 ? 0 : c]
            let plane = c * canvasHeight * canvasWidth
            for i in 0..<(canvasHeight * canvasWidth) { out[plane + i] = value }
            for y in 0..<height {
                let source = (c * height + y) * width, target = plane + (top + y) * canvasWidth + left
                for x in 0..<width { out[target + x] = pixels[source + x] }
            }
        }
        let (h, w) = (Float(height), Float(width))
        let frame = NormalizedBox(xmin: -Float(left) / w, ymin: -Float(top) / h,
                                  xmax: (Float(canvasWidth) - Float(left)) / w, ymax: (Float(canvasHeight) - Float(top)) / h)
        return (PlanarImage(channels: channels, height: canvasHeight, width: canvasWidth, pixels: out), frame)
    }
}

/// SSD's photometric distortions (`distort_param`, weiliu89/caffe `im_transforms.cpp`
/// `ApplyDistort`) on 8-bit BGR images: brightness (add a delta), contrast (scale), saturation
/// (scale HSV's S), hue (shift HSV's H) — each with its own probability, in one of the fork's two
/// orders chosen at random (contrast first or last) — then a random channel order.
///
/// Arithmetic is OpenCV's: `convertTo` rounds `v·α + β` half to even and saturates to 0…255, and
/// HSV is OpenCV's 8-bit `COLOR_BGR2HSV`/`COLOR_HSV2BGR` (H in 0…180), written here from its
/// definition (`BGRToHSV`, `HSVToBGR`; `Tests/DataPipelineTests` compares them with `cv2`).
public struct PhotometricDistortion: Sendable {
    public let parameter: Caffe_DistortionParameter

    /// Checks the deltas and bounds as the fork's CHECKs do, as diagnostics naming `layer`.
    public init(_ parameter: Caffe_DistortionParameter, layer: String?) throws {
        let p = parameter
        func fail(_ what: String) -> Diagnostic {
            Diagnostic("transform_param.distort_param: \(what)", layer: layer, hint: "ssd_pascal.py uses brightness_delta 32, contrast and saturation 0.5 … 1.5, hue_delta 18")
        }
        if p.brightnessDelta < 0 { throw fail("brightness_delta must be non-negative, got \(p.brightnessDelta)") }
        if p.hueDelta < 0 { throw fail("hue_delta must be non-negative, got \(p.hueDelta)") }
        if p.contrastProb > 0, !(p.contrastLower >= 0 && p.contrastUpper >= p.contrastLower) {
            throw fail("contrast needs 0 ≤ contrast_lower ≤ contrast_upper, got \(p.contrastLower) … \(p.contrastUpper)")
        }
        if p.saturationProb > 0, !(p.saturationLower >= 0 && p.saturationUpper >= p.saturationLower) {
            throw fail("saturation needs 0 ≤ saturation_lower ≤ saturation_upper, got \(p.saturationLower) … \(p.saturationUpper)")
        }
        self.parameter = parameter
    }

    /// Distorts `image` (3 channels, BGR) in place with the fork's draws from `generator`.
    public func apply(_ image: inout PlanarImage, using generator: inout MersenneTwister) {
        let p = parameter
        let contrastFirst = generator.uniform(0, 1) > 0.5
        func brightness() {
            if generator.uniform(0, 1) < p.brightnessProb {
                let delta = generator.uniform(-p.brightnessDelta, p.brightnessDelta)
                if abs(delta) > 0 { PhotometricDistortion.convert(&image.pixels, alpha: 1, beta: delta) }
            }
        }
        func contrast() {
            if generator.uniform(0, 1) < p.contrastProb {
                let delta = generator.uniform(p.contrastLower, p.contrastUpper)
                if abs(delta - 1) > 1e-3 { PhotometricDistortion.convert(&image.pixels, alpha: delta, beta: 0) }
            }
        }
        func saturation() {
            if generator.uniform(0, 1) < p.saturationProb {
                let delta = generator.uniform(p.saturationLower, p.saturationUpper)
                PhotometricDistortion.adjustHSV(&image, channel: 1, alpha: delta, beta: 0)
            }
        }
        func hue() {
            if generator.uniform(0, 1) < p.hueProb {
                let delta = generator.uniform(-p.hueDelta, p.hueDelta)
                if abs(delta) > 0 { PhotometricDistortion.adjustHSV(&image, channel: 0, alpha: 1, beta: delta) }
            }
        }
        brightness()
        if contrastFirst {
            contrast(); saturation(); hue()
        } else {
            saturation(); hue(); contrast()
        }
        if generator.uniform(0, 1) < p.randomOrderProb { PhotometricDistortion.shuffleChannels(&image, using: &generator) }
    }

    /// OpenCV's `convertTo(dst, -1, alpha, beta)` on 8-bit values: `v·α + β` in Float, rounded
    /// half to even, saturated.
    public static func convert(_ values: inout [UInt8], alpha: Float, beta: Float) {
        for i in values.indices { values[i] = saturate(Float(values[i]) * alpha + beta) }
    }

    /// `saturate_cast<uchar>(Float)`: rounded half to even, clamped to 0…255.
    @inline(__always) static func saturate(_ value: Float) -> UInt8 {
        let rounded = value.rounded(.toNearestOrEven)
        return rounded <= 0 ? 0 : rounded >= 255 ? 255 : UInt8(rounded)
    }

    /// To HSV, `convertTo` on one HSV channel, back to BGR (the fork's AdjustSaturation/AdjustHue).
    static func adjustHSV(_ image: inout PlanarImage, channel: Int, alpha: Float, beta: Float) {
        let plane = image.height * image.width
        image.pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<plane {
                var hsv = bgrToHSV(p[i], p[plane + i], p[2 * plane + i])
                let adjusted = saturate(Float(channel == 0 ? hsv.h : hsv.s) * alpha + beta)
                if channel == 0 { hsv.h = adjusted } else { hsv.s = adjusted }
                let bgr = hsvToBGR(hsv.h, hsv.s, hsv.v)
                (p[i], p[plane + i], p[2 * plane + i]) = (bgr.b, bgr.g, bgr.r)
            }
        }
    }

    /// The fork's `RandomOrderChannels`: the three planes in a random order (Fisher–Yates).
    static func shuffleChannels(_ image: inout PlanarImage, using generator: inout MersenneTwister) {
        var order = Array(0..<image.channels)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, generator.next(below: i + 1)) }
        let plane = image.height * image.width
        let old = image.pixels
        for (target, source) in order.enumerated() {
            for i in 0..<plane { image.pixels[target * plane + i] = old[source * plane + i] }
        }
    }

    private static let shift = 12
    /// OpenCV's `sdiv_table`: `round(255·2¹² / v)`.
    private static let saturationDivisors: [Int] = (0..<256).map { $0 == 0 ? 0 : Int((Double(255 << shift) / Double($0)).rounded(.toNearestOrEven)) }
    /// OpenCV's `hdiv_table180`: `round(180·2¹² / (6·d))`.
    private static let hueDivisors: [Int] = (0..<256).map { $0 == 0 ? 0 : Int((Double(180 << shift) / (6 * Double($0))).rounded(.toNearestOrEven)) }

    /// OpenCV's 8-bit `COLOR_BGR2HSV`: V = max, S = round(255·(V − min)/V), H = round(30·sector
    /// offset), in fixed point with 12 fractional bits and its division tables.
    public static func bgrToHSV(_ b: UInt8, _ g: UInt8, _ r: UInt8) -> (h: UInt8, s: UInt8, v: UInt8) {
        let (bi, gi, ri) = (Int(b), Int(g), Int(r))
        let v = max(bi, gi, ri), vmin = min(bi, gi, ri)
        let diff = v - vmin
        let s = (diff * saturationDivisors[v] + (1 << (shift - 1))) >> shift
        var h: Int
        if v == ri {
            h = gi - bi
        } else if v == gi {
            h = bi - ri + 2 * diff
        } else {
            h = ri - gi + 4 * diff
        }
        h = (h * hueDivisors[diff] + (1 << (shift - 1))) >> shift
        if h < 0 { h += 180 }
        return (UInt8(clamping: h), UInt8(s), UInt8(v))
    }

    /// OpenCV's 8-bit `COLOR_HSV2BGR` (its scalar definition): S and V scaled to 0…1, H·(6/180)
    /// taken modulo 6 into a sector, the sector's mix of V, V(1−S), V(1−S·f), V(1−S(1−f)), times
    /// 255, rounded. OpenCV 4's vector blocks truncate instead, so on wide rows cv2 is sometimes one
    /// level lower; the fork's OpenCV 2/3 rounded as here.
    public static func hsvToBGR(_ h: UInt8, _ s: UInt8, _ v: UInt8) -> (b: UInt8, g: UInt8, r: UInt8) {
        let sf = Float(s) * (1 / Float(255)), vf = Float(v) * (1 / Float(255))
        var (bf, gf, rf) = (vf, vf, vf)
        if sf != 0 {
            var hue = Float(h) * (Float(6) / 180)
            hue = hue.truncatingRemainder(dividingBy: 6)
            var sector = Int(hue.rounded(.down))
            hue -= Float(sector)
            if sector < 0 || sector >= 6 { (sector, hue) = (0, 0) }
            let table = [vf, vf * (1 - sf), vf * (1 - sf * hue), vf * (1 - sf * (1 - hue))]
            let pick: [(Int, Int, Int)] = [(1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0)]
            let (bi, gi, ri) = pick[sector]
            (bf, gf, rf) = (table[bi], table[gi], table[ri])
        }
        return (saturate(bf * 255), saturate(gf * 255), saturate(rf * 255))
    }
}
