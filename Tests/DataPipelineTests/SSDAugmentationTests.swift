import CaffeFormat
@testable import DataPipeline
import Foundation
import Testing

/// SSD's data augmentations (issue 14): OpenCV's 8-bit HSV conversions and `convertTo`, the
/// `cv::resize` interpolations of `interp_mode`, the fork's box geometry (`ProjectBBox`,
/// `MeetEmitConstraint`, Jaccard, coverage) and `SampleBBox` constraints, expansion and crops —
/// each against `cv2`/NumPy run in the test, or against properties the fork's code guarantees.
@Suite("SSD augmentation")
struct SSDAugmentationTests {
    /// Runs `script` under python3 with numpy and cv2, in `folder`; fails (not skips) without them.
    static func python(_ script: String, in folder: ScratchFolder) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import numpy as np, cv2, os\nos.chdir(\(quoted(folder.path)))\n" + script]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SharedFixtures.MissingFixture(path: "python3 with numpy and cv2 (the reference) failed: \(output)")
        }
    }

    static func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "\\'") + "'" }

    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    static func floats(_ path: String) throws -> [Float] {
        try Data(contentsOf: URL(fileURLWithPath: path)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
    static func write(_ values: [UInt8], _ path: String) throws { try Data(values).write(to: URL(fileURLWithPath: path)) }
    static func write(_ values: [Float], _ path: String) throws {
        try values.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: path))
    }

    /// OpenCV 4 converts HSV→BGR in blocks of 4 SIMD vectors that truncate, and the rest of each row
    /// with its scalar code, which rounds (the fork's OpenCV 2/3 rounded everywhere). We run the
    /// scalar definition, so rows shorter than the smallest block (16 pixels) must match cv2 on any
    /// ISA — but for a rare one-level rounding (1 pixel in 60 000 here: the compiler may fuse
    /// OpenCV's `v·(1 − s·h)` into a multiply-add) — and wide rows within one level.
    @Test("BGR→HSV equals cv2.cvtColor; HSV→BGR equals its scalar definition (H past 180 included)")
    func hsvMatchesOpenCV() throws {
        let folder = try ScratchFolder("hsv")
        defer { folder.remove() }
        // Every BGR triple on a grid of step 5 plus the extremes, and HSV triples with H in 0…255.
        var bgr: [UInt8] = []
        let levels = Array(stride(from: 0, through: 255, by: 5)).map(UInt8.init) + [1, 254]
        for b in levels { for g in levels { for r in levels { bgr += [b, g, r] } } }
        var generator = MersenneTwister(seed: 11)
        var hsv: [UInt8] = []
        for _ in 0..<(15 * 4000) { hsv += [UInt8(generator.next(below: 256)), UInt8(generator.next(below: 256)), UInt8(generator.next(below: 256))] }
        try Self.write(bgr, folder.file("bgr.bin"))
        try Self.write(hsv, folder.file("hsv.bin"))
        try Self.python("""
            bgr = np.fromfile('bgr.bin', np.uint8).reshape(1, -1, 3)
            cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).tofile('bgr2hsv.bin')
            hsv = np.fromfile('hsv.bin', np.uint8).reshape(-1, 15, 3)
            cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).tofile('hsv2bgr.bin')
            cv2.cvtColor(hsv.reshape(1, -1, 3), cv2.COLOR_HSV2BGR).tofile('hsv2bgr_wide.bin')
            """, in: folder)
        let wantHSV = try Self.bytes(folder.file("bgr2hsv.bin")), wantBGR = try Self.bytes(folder.file("hsv2bgr.bin"))
        let wideBGR = try Self.bytes(folder.file("hsv2bgr_wide.bin"))
        var mismatches = 0
        for p in 0..<(bgr.count / 3) {
            let got = PhotometricDistortion.bgrToHSV(bgr[3 * p], bgr[3 * p + 1], bgr[3 * p + 2])
            if [got.h, got.s, got.v] != Array(wantHSV[(3 * p)..<(3 * p + 3)]) { mismatches += 1 }
        }
        #expect(mismatches == 0, "BGR→HSV: \(mismatches) of \(bgr.count / 3) pixels differ from cv2")
        mismatches = 0
        var worstWide = 0, worst = 0
        for p in 0..<(hsv.count / 3) {
            let got = PhotometricDistortion.hsvToBGR(hsv[3 * p], hsv[3 * p + 1], hsv[3 * p + 2])
            if [got.b, got.g, got.r] != Array(wantBGR[(3 * p)..<(3 * p + 3)]) { mismatches += 1 }
            for (k, value) in [got.b, got.g, got.r].enumerated() { worst = max(worst, abs(Int(value) - Int(wantBGR[3 * p + k]))) }
            for (k, value) in [got.b, got.g, got.r].enumerated() { worstWide = max(worstWide, abs(Int(value) - Int(wideBGR[3 * p + k]))) }
        }
        #expect(mismatches * 10_000 <= hsv.count / 3 && worst <= 1,
                "HSV→BGR: \(mismatches) of \(hsv.count / 3) pixels differ from cv2's scalar rows, by up to \(worst)")
        #expect(worstWide <= 1, "HSV→BGR on one wide row (cv2's SIMD blocks truncate): worst difference \(worstWide)")
    }

    @Test("brightness, contrast, saturation and hue on fixed deltas equal the fork's OpenCV calls")
    func distortOpsMatchOpenCV() throws {
        let folder = try ScratchFolder("distort")
        defer { folder.remove() }
        let (h, w) = (23, 15)  // rows shorter than OpenCV's HSV→BGR SIMD block (see above)
        var generator = MersenneTwister(seed: 5)
        let planar = (0..<(3 * h * w)).map { _ in UInt8(generator.next(below: 256)) }
        try Self.write(planar, folder.file("image.bin"))
        // The fork: convertTo(-1, 1, δ) / convertTo(-1, δ, 0) on the BGR image; saturation and hue
        // convertTo on HSV's S (×δ) or H (+δ) between cvtColor calls. convertTo rounds half to even.
        try Self.python("""
            img = np.fromfile('image.bin', np.uint8).reshape(3, \(h), \(w)).transpose(1, 2, 0).copy()
            def convert(a, alpha, beta):
                return np.clip(np.rint(a.astype(np.float32) * np.float32(alpha) + np.float32(beta)), 0, 255).astype(np.uint8)
            def planar(a, name):
                a.transpose(2, 0, 1).copy().tofile(name)
            planar(convert(img, 1, 23.7), 'brightness.bin')
            planar(convert(img, 1, -17.25), 'darker.bin')
            planar(convert(img, 1.37, 0), 'contrast.bin')
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            s = hsv.copy(); s[..., 1] = convert(s[..., 1], 0.63, 0); planar(cv2.cvtColor(s, cv2.COLOR_HSV2BGR), 'saturation.bin')
            u = hsv.copy(); u[..., 0] = convert(u[..., 0], 1, 12.4); planar(cv2.cvtColor(u, cv2.COLOR_HSV2BGR), 'hue.bin')
            d = hsv.copy(); d[..., 0] = convert(d[..., 0], 1, -15.6); planar(cv2.cvtColor(d, cv2.COLOR_HSV2BGR), 'hue_down.bin')
            """, in: folder)
        func run(_ edit: (inout PlanarImage) -> Void) -> [UInt8] {
            var image = PlanarImage(channels: 3, height: h, width: w, pixels: planar)
            edit(&image)
            return image.pixels
        }
        #expect(run { PhotometricDistortion.convert(&$0.pixels, alpha: 1, beta: 23.7) } == (try Self.bytes(folder.file("brightness.bin"))))
        #expect(run { PhotometricDistortion.convert(&$0.pixels, alpha: 1, beta: -17.25) } == (try Self.bytes(folder.file("darker.bin"))))
        #expect(run { PhotometricDistortion.convert(&$0.pixels, alpha: 1.37, beta: 0) } == (try Self.bytes(folder.file("contrast.bin"))))
        #expect(run { PhotometricDistortion.adjustHSV(&$0, channel: 1, alpha: 0.63, beta: 0) } == (try Self.bytes(folder.file("saturation.bin"))))
        #expect(run { PhotometricDistortion.adjustHSV(&$0, channel: 0, alpha: 1, beta: 12.4) } == (try Self.bytes(folder.file("hue.bin"))))
        #expect(run { PhotometricDistortion.adjustHSV(&$0, channel: 0, alpha: 1, beta: -15.6) } == (try Self.bytes(folder.file("hue_down.bin"))))
    }

    @Test("a full distortion is reproducible for a seed, permutes channels with random_order_prob 1, and never touches the geometry")
    func distortionDraws() throws {
        var parameter = Caffe_DistortionParameter()
        (parameter.brightnessProb, parameter.brightnessDelta) = (0.5, 32)
        (parameter.contrastProb, parameter.contrastLower, parameter.contrastUpper) = (0.5, 0.5, 1.5)
        (parameter.hueProb, parameter.hueDelta) = (0.5, 18)
        (parameter.saturationProb, parameter.saturationLower, parameter.saturationUpper) = (0.5, 0.5, 1.5)
        let distortion = try PhotometricDistortion(parameter, layer: "data")
        var source = MersenneTwister(seed: 9)
        let image = PlanarImage(channels: 3, height: 8, width: 9, pixels: (0..<216).map { _ in UInt8(source.next(below: 256)) })
        var (a, b) = (MersenneTwister(seed: 1), MersenneTwister(seed: 1))
        var changed = 0
        for _ in 0..<10 {
            var (x, y) = (image, image)
            distortion.apply(&x, using: &a)
            distortion.apply(&y, using: &b)
            #expect(x == y)
            #expect((x.channels, x.height, x.width) == (3, 8, 9))
            if x != image { changed += 1 }
        }
        #expect(changed >= 5, "most draws change the image: \(changed) of 10")

        var shuffle = Caffe_DistortionParameter()
        shuffle.randomOrderProb = 1
        let planes = PlanarImage(channels: 3, height: 2, width: 2, pixels: [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
        var orders = Set<[UInt8]>()
        var generator = MersenneTwister(seed: 4)
        for _ in 0..<40 {
            var copy = planes
            try PhotometricDistortion(shuffle, layer: nil).apply(&copy, using: &generator)
            orders.insert([copy.pixels[0], copy.pixels[4], copy.pixels[8]])
        }
        #expect(orders.count == 6, "all six channel orders appear: \(orders)")
        var bad = parameter
        bad.brightnessDelta = -1
        #expect(throws: Diagnostic.self) { try PhotometricDistortion(bad, layer: "data") }
    }

    @Test("interp_mode resizes: NEAREST and LINEAR equal cv2.resize, AREA, CUBIC and LANCZOS4 within one level")
    func resizeModesMatchOpenCV() throws {
        let folder = try ScratchFolder("resize")
        defer { folder.remove() }
        let cases = [(37, 53, 30, 30), (20, 16, 30, 30), (40, 60, 20, 30), (45, 31, 30, 40), (13, 17, 41, 29)]
        var generator = MersenneTwister(seed: 21)
        var script = "res = {}\n"
        var images: [DecodedImage] = []
        for (i, (h, w, oh, ow)) in cases.enumerated() {
            // Smooth content plus noise, as photographs have both.
            let pixels = (0..<(h * w * 3)).map { p -> UInt8 in
                let (y, x) = ((p / 3) / w, (p / 3) % w)
                return UInt8(clamping: (x * 5 + y * 3 + (p % 3) * 40) % 200 + Int(generator.next(below: 40)))
            }
            images.append(DecodedImage(channels: 3, height: h, width: w, pixels: pixels))
            try Self.write(pixels, folder.file("in\(i).bin"))
            script += """
                img = np.fromfile('in\(i).bin', np.uint8).reshape(\(h), \(w), 3)
                for name, mode in [('nearest', cv2.INTER_NEAREST), ('linear', cv2.INTER_LINEAR), ('area', cv2.INTER_AREA), ('cubic', cv2.INTER_CUBIC), ('lanczos4', cv2.INTER_LANCZOS4)]:
                    cv2.resize(img, (\(ow), \(oh)), interpolation=mode).tofile('out\(i)_' + name + '.bin')

                """
        }
        try Self.python(script, in: folder)
        let modes: [(String, Caffe_ResizeParameter.Interp_mode, Int)] = [("nearest", .nearest, 0), ("linear", .linear, 0), ("area", .area, 1),
                                                                        ("cubic", .cubic, 1), ("lanczos4", .lanczos4, 1)]
        for (i, (_, _, oh, ow)) in cases.enumerated() {
            for (name, mode, tolerance) in modes {
                let want = try Self.bytes(folder.file("out\(i)_\(name).bin"))
                let got = ImageResize.resized(images[i], height: oh, width: ow, interpolation: mode).pixels
                let differences = zip(got, want).map { abs(Int($0) - Int($1)) }
                let worst = differences.max() ?? 0, off = differences.filter { $0 > 0 }.count
                #expect(got.count == want.count && worst <= tolerance,
                        "case \(i) \(name): worst difference \(worst) levels, \(off) of \(want.count) values differ")
                #expect(off * 50 <= want.count, "case \(i) \(name): \(off) of \(want.count) values differ (at most 2%)")
            }
        }
    }

    @Test("ProjectBBox, MeetEmitConstraint, Jaccard overlap and coverage equal a NumPy port of bbox_util.cpp")
    func boxGeometryMatchesNumPy() throws {
        let folder = try ScratchFolder("boxes")
        defer { folder.remove() }
        var generator = MersenneTwister(seed: 3)
        func box(_ low: Float, _ high: Float, size: Float) -> NormalizedBox {
            let (x, y) = (generator.uniform(low, high), generator.uniform(low, high))
            return NormalizedBox(xmin: x, ymin: y, xmax: x + generator.uniform(0.01, size), ymax: y + generator.uniform(0.01, size))
        }
        // Large crops (reaching past the image) and boxes anywhere near them.
        let pairs = (0..<400).map { _ in (box(-0.3, 0.5, size: 1), box(-0.3, 1, size: 0.8)) }
        try Self.write(pairs.flatMap { [$0.0.xmin, $0.0.ymin, $0.0.xmax, $0.0.ymax, $0.1.xmin, $0.1.ymin, $0.1.xmax, $0.1.ymax] }, folder.file("pairs.bin"))
        try Self.python("""
            p = np.fromfile('pairs.bin', np.float32).reshape(-1, 2, 4)
            f = np.float32
            def size(b):
                return f(0) if b[2] < b[0] or b[3] < b[1] else f((b[2] - b[0]) * (b[3] - b[1]))
            def inter(a, b):
                if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
                    return np.zeros(4, f)
                return np.array([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])], f)
            def jaccard(a, b):
                i = inter(a, b); w = i[2] - i[0]; h = i[3] - i[1]
                if w > 0 and h > 0:
                    s = f(w * h); return f(s / (size(a) + size(b) - s))
                return f(0)
            def coverage(a, b):
                s = size(inter(a, b))
                return f(s / size(a)) if s > 0 else f(0)
            def project(src, b):
                if b[0] >= src[2] or b[2] <= src[0] or b[1] >= src[3] or b[3] <= src[1]:
                    return np.full(4, -1, f)
                w = src[2] - src[0]; h = src[3] - src[1]
                q = np.array([(b[0] - src[0]) / w, (b[1] - src[1]) / h, (b[2] - src[0]) / w, (b[3] - src[1]) / h], f)
                q = np.clip(q, 0, 1).astype(f)
                return q if size(q) > 0 else np.full(4, -1, f)
            def center(src, b):
                x = f((b[0] + b[2]) / 2); y = f((b[1] + b[3]) / 2)
                return f(1) if src[0] <= x <= src[2] and src[1] <= y <= src[3] else f(0)
            out = []
            for a, b in p:
                crop = np.clip(a, 0, 1).astype(f)
                out += [jaccard(a, b), coverage(a, b), coverage(b, a)] + list(project(crop, b)) + [center(crop, b), f(1) if coverage(b, crop) > f(0.4) else f(0)]
            np.array(out, f).tofile('want.bin')
            """, in: folder)
        let want = try Self.floats(folder.file("want.bin"))
        var emitCenter = Caffe_EmitConstraint(), emitOverlap = Caffe_EmitConstraint()
        emitCenter.emitType = .center
        (emitOverlap.emitType, emitOverlap.emitOverlap) = (.minOverlap, 0.4)
        var projectedCount = 0
        for (i, (a, b)) in pairs.enumerated() {
            let crop = a.clipped
            let projected = b.projected(onto: crop)
            if projected != nil { projectedCount += 1 }
            let p = projected ?? NormalizedBox(xmin: -1, ymin: -1, xmax: -1, ymax: -1)
            let got: [Float] = [a.jaccardOverlap(b), a.coverage(by: b), b.coverage(by: a), p.xmin, p.ymin, p.xmax, p.ymax,
                                b.meets(emitCenter, in: crop) ? 1 : 0, b.meets(emitOverlap, in: crop) ? 1 : 0]
            let expected = Array(want[(i * 9)..<(i * 9 + 9)])
            #expect(zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-6 }, "pair \(i) \(a) \(b): \(got) vs NumPy \(expected)")
        }
        #expect(projectedCount > 100 && projectedCount < 390, "both outcomes are exercised: \(projectedCount) of 400 project")
    }

    @Test("SampleBBox boxes respect scale and aspect bounds; kept samples satisfy their constraint; max_sample and max_trials bound them")
    func samplerProperties() throws {
        var generator = MersenneTwister(seed: 17)
        var sampler = Caffe_Sampler()
        (sampler.minScale, sampler.maxScale, sampler.minAspectRatio, sampler.maxAspectRatio) = (0.3, 1, 0.5, 2)
        for _ in 0..<2000 {
            let b = CropSampler.sampleBox(sampler, using: &generator)
            let (w, h) = (b.xmax - b.xmin, b.ymax - b.ymin)
            let scale = (w * h).squareRoot(), ratio = w / h
            // Float rounding can leave a full-width box a few ulps past the edge, as in the fork.
            #expect(b.xmin >= -1e-6 && b.ymin >= -1e-6 && b.xmax <= 1 + 1e-6 && b.ymax <= 1 + 1e-6, "\(b) leaves the image")
            #expect(scale >= 0.3 - 1e-5 && scale <= 1 + 1e-5, "scale \(scale)")
            #expect(ratio >= 0.5 - 1e-4 && ratio <= 2 + 1e-4, "aspect \(ratio)")
        }
        let objects = [NormalizedBox(xmin: 0.1, ymin: 0.1, xmax: 0.4, ymax: 0.5), NormalizedBox(xmin: 0.5, ymin: 0.3, xmax: 0.9, ymax: 0.95)]
        for (minimum, maximum) in [(Float(0.1), Float?.none), (0.3, nil), (0.5, nil), (nil, 1.0), (0.2, 0.6)] as [(Float?, Float?)] {
            var batch = Caffe_BatchSampler()
            batch.sampler = sampler
            if let minimum { batch.sampleConstraint.minJaccardOverlap = minimum }
            if let maximum { batch.sampleConstraint.maxJaccardOverlap = maximum }
            (batch.maxTrials, batch.maxSample) = (50, 3)
            let crops = try CropSampler([batch], layer: "data")
            var total = 0
            for _ in 0..<50 {
                let kept = crops.samples(objects: objects, using: &generator)
                #expect(kept.count <= 3)
                total += kept.count
                for sample in kept {
                    #expect(objects.contains { o in
                        let j = sample.jaccardOverlap(o)
                        return j >= (minimum ?? -1) && j <= (maximum ?? 2)
                    }, "a kept sample \(sample) has no object with Jaccard overlap in \(String(describing: minimum))…\(String(describing: maximum))")
                }
            }
            #expect(total > 0, "the constraint \(String(describing: minimum))…\(String(describing: maximum)) keeps some samples")
        }
        // Coverage constraints: the object must lie wholly inside the sample.
        var covering = Caffe_BatchSampler()
        covering.sampler = sampler
        (covering.sampleConstraint.minObjectCoverage, covering.maxTrials) = (1, 200)
        for sample in try CropSampler([covering], layer: nil).samples(objects: objects, using: &generator) {
            #expect(objects.contains { $0.coverage(by: sample) >= 1 })
        }
        // A sampler without constraints keeps every trial up to max_sample; use_original_image false keeps none.
        var plain = Caffe_BatchSampler()
        (plain.maxTrials, plain.maxSample) = (10, 4)
        #expect(try CropSampler([plain], layer: nil).samples(objects: objects, using: &generator).count == 4)
        plain.useOriginalImage = false
        #expect(try CropSampler([plain], layer: nil).samples(objects: objects, using: &generator).isEmpty)
        var wrong = Caffe_BatchSampler()
        wrong.sampler.minScale = 0
        do {
            _ = try CropSampler([wrong], layer: "data")
            Issue.record("min_scale 0 must be refused")
        } catch let error as Diagnostic {
            #expect(error.message.contains("batch_sampler[0]") && error.message.contains("min_scale"), "\(error)")
        }
    }

    @Test("expansion puts the image on a mean-filled canvas and boxes follow (NumPy canvas); crops cut pixels and boxes together")
    func expandAndCrop() throws {
        let folder = try ScratchFolder("expand")
        defer { folder.remove() }
        let (h, w) = (10, 14)
        var generator = MersenneTwister(seed: 8)
        let pixels = (0..<(3 * h * w)).map { _ in UInt8(generator.next(below: 256)) }
        let image = PlanarImage(channels: 3, height: h, width: w, pixels: pixels)
        let (canvas, frame) = image.expanded(ratio: 2.37, top: 5, left: 9, fill: [104, 117, 123])
        try Self.write(pixels, folder.file("image.bin"))
        try Self.python("""
            img = np.fromfile('image.bin', np.uint8).reshape(3, \(h), \(w))
            H, W = int(\(h) * np.float32(2.37)), int(\(w) * np.float32(2.37))
            canvas = np.empty((3, H, W), np.uint8)
            canvas[:] = np.array([104, 117, 123], np.uint8)[:, None, None]
            canvas[:, 5:5 + \(h), 9:9 + \(w)] = img
            canvas.tofile('canvas.bin')
            img[:, 2:7, 3:12].copy().tofile('crop.bin')
            """, in: folder)
        #expect((canvas.height, canvas.width) == (23, 33))
        #expect(canvas.pixels == (try Self.bytes(folder.file("canvas.bin"))))
        // A box in the image lands where its pixels went on the canvas.
        let object = AnnotatedBox(label: 1, instance: 0, xmin: 0.25, ymin: 0.1, xmax: 0.75, ymax: 0.6, difficult: false)
        var emit = Caffe_EmitConstraint()
        emit.emitType = .center
        let moved = AnnotatedBox.transform([object], crop: frame, emit: emit)
        #expect(moved.count == 1)
        let m = moved[0]
        for (got, want) in [(m.xmin, (0.25 * 14 + 9) / 33), (m.xmax, (0.75 * 14 + 9) / 33), (m.ymin, (0.1 * 10 + 5) / 23), (m.ymax, (0.6 * 10 + 5) / 23)] as [(Float, Float)] {
            #expect(abs(got - want) < 1e-6, "\(got) vs \(want)")
        }
        // Crop rows 2..<7, columns 3..<12 of the 10×14 image (corners truncated to pixels).
        let crop = NormalizedBox(xmin: 3.2 / 14, ymin: 2.2 / 10, xmax: 12.3 / 14, ymax: 7.4 / 10)
        let cut = image.cropped(to: crop)
        #expect((cut.height, cut.width) == (5, 9))
        #expect(cut.pixels == (try Self.bytes(folder.file("crop.bin"))))
        // Boxes: one kept and clipped, one whose centre leaves the crop dropped by CENTER.
        let boxes = [AnnotatedBox(label: 1, instance: 0, xmin: 0.1, ymin: 0.3, xmax: 0.5, ymax: 0.6, difficult: false),
                     AnnotatedBox(label: 2, instance: 1, xmin: 0.8, ymin: 0.0, xmax: 1.0, ymax: 0.3, difficult: true)]
        let kept = AnnotatedBox.transform(boxes, crop: crop, emit: emit)
        #expect(kept.count == 1 && kept[0].label == 1)
        #expect(abs(kept[0].xmin - 0) < 1e-6 && abs(kept[0].xmax - (0.5 - 3.2 / 14) / (9.1 / 14)) < 1e-5)
        #expect(abs(kept[0].ymin - (0.3 - 0.22) / 0.52) < 1e-5 && abs(kept[0].ymax - (0.6 - 0.22) / 0.52) < 1e-5)
        #expect(AnnotatedBox.transform(boxes, crop: crop, emit: nil).count == 2, "without emit_constraint the second box is clipped, not dropped")
    }
}
