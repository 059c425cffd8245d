import CaffeFormat
import DataPipeline
import Foundation
import Testing

/// Caffe's transformer semantics, checked against values worked out by hand.
@Suite("DataTransformer")
struct DataTransformerTests {
    /// A 1×4×4 image holding 0, 1, …, 15 row by row.
    static let ramp = DatumImage(channels: 1, height: 4, width: 4, label: 0, pixels: .bytes(Data((0..<16).map { UInt8($0) })))

    @Test("MersenneTwister is MT19937: seed 5489 gives 3499211612 first and 4123659995 as the 10000th output")
    func mersenneTwisterMatchesReference() {
        var generator = MersenneTwister(seed: 5489)
        #expect(generator.next() == 3_499_211_612)
        for _ in 0..<9998 { _ = generator.next() }
        #expect(generator.next() == 4_123_659_995)
    }

    @Test("without parameters a Datum passes through as floats")
    func identity() throws {
        var transformer = DataTransformer(phase: .train, seed: 1)
        #expect(try transformer.transform(Self.ramp) == (0..<16).map(Float.init))
    }

    @Test("mean_value is subtracted before scaling: (x − 2) × 0.5")
    func meanValueThenScale() throws {
        var parameter = Caffe_TransformationParameter()
        parameter.meanValue = [2]
        parameter.scale = 0.5
        var transformer = try DataTransformer(parameter, phase: .test, seed: 1)
        #expect(try transformer.transform(Self.ramp) == (0..<16).map { (Float($0) - 2) * 0.5 })
    }

    @Test("one mean_value per channel, or one for all channels")
    func meanValuePerChannel() throws {
        let image = DatumImage(channels: 2, height: 1, width: 2, label: 0, pixels: .floats([10, 20, 30, 40]))
        var perChannel = DataTransformer(phase: .test, mean: .perChannel([1, 2]), seed: 1)
        #expect(try perChannel.transform(image) == [9, 19, 28, 38])
        var shared = DataTransformer(phase: .test, mean: .perChannel([5]), seed: 1)
        #expect(try shared.transform(image) == [5, 15, 25, 35])
        var wrongCount = DataTransformer(phase: .test, mean: .perChannel([1, 2, 3]), seed: 1)
        #expect(throws: Diagnostic.self) { try wrongCount.transform(image) }
    }

    @Test("mean_file: the mean image is read from a .binaryproto and indexed at the uncropped position")
    func meanFileWithCentreCrop() throws {
        let scratch = try ScratchFolder("mean")
        defer { scratch.remove() }
        var blob = Caffe_BlobProto()
        blob.num = 1
        blob.channels = 1
        blob.height = 4
        blob.width = 4
        blob.data = (0..<16).map { Float($0) * 0.25 }
        try CaffeFiles.write(blob, to: scratch.file("mean.binaryproto"))

        var parameter = Caffe_TransformationParameter()
        parameter.meanFile = "mean.binaryproto"
        parameter.cropSize = 2
        parameter.scale = 2
        var transformer = try DataTransformer(parameter, phase: .test, seed: 1, baseDirectory: scratch.path)
        // Centre crop of a 4×4 image with crop 2: offsets (1, 1), source indices 5, 6, 9, 10.
        let expected: [Float] = [5, 6, 9, 10].map { (Float($0) - Float($0) * 0.25) * 2 }
        #expect(try transformer.transform(Self.ramp) == expected)
    }

    @Test("mean_file and mean_value together, or a mean of the wrong shape, are diagnosed")
    func meanConflicts() throws {
        let scratch = try ScratchFolder("mean-conflict")
        defer { scratch.remove() }
        var blob = Caffe_BlobProto()
        blob.shape.dim = [1, 3, 4, 4]
        blob.data = [Float](repeating: 0, count: 48)
        try CaffeFiles.write(blob, to: scratch.file("mean.binaryproto"))

        var both = Caffe_TransformationParameter()
        both.meanFile = scratch.file("mean.binaryproto")
        both.meanValue = [1]
        let conflict = #expect(throws: Diagnostic.self) { try DataTransformer(both, phase: .train, seed: 1, layer: "data") }
        #expect(conflict?.text.contains("both mean_file and mean_value") == true)

        var wrongShape = Caffe_TransformationParameter()
        wrongShape.meanFile = scratch.file("mean.binaryproto")
        var transformer = try DataTransformer(wrongShape, phase: .train, seed: 1)
        let mismatch = #expect(throws: Diagnostic.self) { try transformer.transform(Self.ramp) }
        #expect(mismatch?.text.contains("3×4×4") == true)
        #expect(mismatch?.text.contains("1×4×4") == true)
    }

    @Test("TEST crops the centre: crop 3 of a 4×4 image starts at (0, 0) since (4 − 3) / 2 = 0")
    func centreCropRoundsDown() throws {
        var transformer = DataTransformer(phase: .test, cropSize: 3, seed: 1)
        #expect(try transformer.transform(Self.ramp) == [0, 1, 2, 4, 5, 6, 8, 9, 10])
    }

    @Test("TRAIN crops at h_off = Rand(H − crop + 1), then w_off = Rand(W − crop + 1), from the seeded generator")
    func randomCropFollowsGenerator() throws {
        for seed: UInt32 in [1, 2, 3, 1234] {
            var transformer = DataTransformer(phase: .train, cropSize: 2, seed: seed)
            var reference = MersenneTwister(seed: seed)
            for _ in 0..<20 {
                let h = reference.next(below: 3), w = reference.next(below: 3)
                let expected = [h * 4 + w, h * 4 + w + 1, (h + 1) * 4 + w, (h + 1) * 4 + w + 1].map(Float.init)
                #expect(try transformer.transform(Self.ramp) == expected)
            }
        }
    }

    @Test("every TRAIN crop offset is reachable, and the same seed repeats the same crops")
    func randomCropCoversAndRepeats() throws {
        var first = DataTransformer(phase: .train, cropSize: 2, seed: 99)
        var second = DataTransformer(phase: .train, cropSize: 2, seed: 99)
        var corners = Set<Float>()
        for _ in 0..<200 {
            let a = try first.transform(Self.ramp)
            #expect(try second.transform(Self.ramp) == a)
            corners.insert(a[0])
        }
        #expect(corners == [0, 1, 2, 4, 5, 6, 8, 9, 10])
    }

    @Test("mirror draws Rand(2) first, before the crop offsets, and reverses each row when it comes up 1")
    func mirrorThenCrop() throws {
        var transformer = DataTransformer(phase: .train, cropSize: 2, mirror: true, seed: 7)
        var reference = MersenneTwister(seed: 7)
        var sawMirrored = false, sawPlain = false
        for _ in 0..<40 {
            let mirrored = reference.next(below: 2) == 1
            let h = reference.next(below: 3), w = reference.next(below: 3)
            var rows = [[h * 4 + w, h * 4 + w + 1], [(h + 1) * 4 + w, (h + 1) * 4 + w + 1]]
            if mirrored { rows = rows.map { $0.reversed() } }
            #expect(try transformer.transform(Self.ramp) == rows.flatMap { $0 }.map(Float.init))
            if mirrored { sawMirrored = true } else { sawPlain = true }
        }
        #expect(sawMirrored && sawPlain)
    }

    @Test("mirror without crop in TEST still mirrors at random, as Caffe does; the centre crop does not move")
    func mirrorInTestPhase() throws {
        var transformer = DataTransformer(phase: .test, mirror: true, seed: 3)
        var reference = MersenneTwister(seed: 3)
        let plain = (0..<16).map(Float.init)
        let flipped: [Float] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12]
        for _ in 0..<20 {
            let expected = reference.next(below: 2) == 1 ? flipped : plain
            #expect(try transformer.transform(Self.ramp) == expected)
        }
    }

    @Test("mean, mirror and scale compose on a 2-channel float_data Datum")
    func composedOnFloatData() throws {
        let values: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]  // two 2×2 planes
        let image = DatumImage(channels: 2, height: 2, width: 2, label: 5, pixels: .floats(values))
        var transformer = DataTransformer(phase: .train, scale: 0.5, mirror: true, mean: .perChannel([1, 9]), seed: 11)
        var reference = MersenneTwister(seed: 11)
        for _ in 0..<10 {
            let mirrored = reference.next(below: 2) == 1
            let expected: [Float] = mirrored ? [0.5, 0, 1.5, 1, -1.5, -2, -0.5, -1] : [0, 0.5, 1, 1.5, -2, -1.5, -1, -0.5]
            #expect(try transformer.transform(image) == expected)
        }
    }

    @Test("a crop larger than the image, or force_color with force_gray, is diagnosed")
    func impossibleParameters() throws {
        var transformer = DataTransformer(phase: .test, cropSize: 5, seed: 1, layer: "data")
        let tooLarge = #expect(throws: Diagnostic.self) { try transformer.transform(Self.ramp) }
        #expect(tooLarge?.headline == "layer 'data': crop_size 5 is larger than the input's 4×4 image")

        var both = Caffe_TransformationParameter()
        both.forceColor = true
        both.forceGray = true
        #expect(throws: Diagnostic.self) { try DataTransformer(both, phase: .test, seed: 1) }
    }
}
