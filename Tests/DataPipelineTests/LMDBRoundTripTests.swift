import CaffeFormat
@testable import DataPipeline
import Foundation
import Testing

/// Databases written in-test, read back through the reader, the Datum decoder and the feed.
@Suite("LMDB round trips and encoded Datums")
struct LMDBRoundTripTests {
    // A 3-channel 4×5 picture: RGB interleaved, row-major.
    static let (height, width) = (4, 5)
    static let rgb: [UInt8] = (0..<20).flatMap { (p: Int) -> [UInt8] in
        let red = UInt8(p * 12), green = UInt8(255 - p * 10), blue = UInt8(60 + (p % 5) * 30)
        return [red, green, blue]
    }

    /// Planar BGR of `rgb`: what OpenCV (and Caffe) would put in the blob.
    static var bgrPlanar: [Float] {
        let pixels = height * width
        return [2, 1, 0].flatMap { channel in (0..<pixels).map { Float(rgb[$0 * 3 + channel]) } }
    }

    @Test("raw, float_data, PNG- and JPEG-encoded Datums written to an LMDB read back as planar BGR floats")
    func fourKindsRoundTrip() throws {
        let scratch = try ScratchFolder("roundtrip")
        defer { scratch.remove() }
        let raw: [UInt8] = (0..<60).map { UInt8($0 * 4) }
        let floats: [Float] = (0..<60).map { -1.5 + Float($0) * 0.25 }
        let png = try Fixtures.png(width: Self.width, height: Self.height, channels: 3, pixels: Self.rgb)
        let jpeg = try Fixtures.jpeg(width: Self.width, height: Self.height, channels: 3, pixels: Self.rgb)
        let path = scratch.file("mixed_lmdb")
        try Fixtures.writeLMDB(path, datums: [
            Fixtures.rawDatum(channels: 3, height: 4, width: 5, bytes: raw, label: 1),
            Fixtures.floatDatum(channels: 3, height: 4, width: 5, values: floats, label: 2),
            Fixtures.encodedDatum(png, label: 3),
            Fixtures.encodedDatum(jpeg, label: 4),
        ])

        let reader = try LMDBReader(path: path)
        #expect(reader.count == 4)
        let images = try (0..<4).map { _ in try DatumImage(record: try reader.read()) }
        #expect(images.map(\.label) == [1, 2, 3, 4])
        #expect(images.allSatisfy { $0.shape == [3, 4, 5] })
        #expect(images[0].floatCHW() == raw.map(Float.init))
        #expect(images[1].floatCHW() == floats)
        #expect(images[2].floatCHW() == Self.bgrPlanar, "PNG is lossless and decodes to BGR")
        let jpegError = zip(images[3].floatCHW(), Self.bgrPlanar).map { abs($0 - $1) }.max() ?? 0
        #expect(jpegError <= 4, "quality-100 4:4:4 JPEG decodes close to the source, in BGR order (max error \(jpegError))")

        // The same database through a Data layer: one batch of all four, labels as floats.
        let feed = try DataLayerFeed(layer: Fixtures.dataLayer(source: path, batchSize: 4), phase: .test)
        defer { feed.close() }
        let batch = try feed.next()
        #expect(batch.shape == [4, 3, 4, 5])
        #expect(batch.labels == [1, 2, 3, 4])
        #expect(batch.data == images.flatMap { $0.floatCHW() })
    }

    @Test("the LMDB data file itself (not its folder) opens with MDB_NOSUBDIR")
    func openDataFileDirectly() throws {
        let scratch = try ScratchFolder("nosubdir")
        defer { scratch.remove() }
        try Fixtures.writeLMDB(scratch.file("db"), datums: [Fixtures.rawDatum(channels: 1, height: 1, width: 2, bytes: [7, 9], label: 0)])
        let reader = try LMDBReader(path: scratch.file("db/data.mdb"))
        #expect(try DatumImage(record: try reader.read()).floatCHW() == [7, 9])
    }

    @Test("the reader finds its memory map, so streamed pages can be released (flat RSS on large databases)")
    func mappingFound() throws {
        let scratch = try ScratchFolder("mapping")
        defer { scratch.remove() }
        let datums = (0..<64).map { Fixtures.rawDatum(channels: 1, height: 64, width: 64, bytes: [UInt8](repeating: UInt8($0), count: 4096), label: 0) }
        try Fixtures.writeLMDB(scratch.file("db"), datums: datums)
        let reader = try LMDBReader(path: scratch.file("db"))
        let fileSize = try #require(try FileManager.default.attributesOfItem(atPath: scratch.file("db/data.mdb"))[.size] as? Int)
        #expect(reader.releasableBytes == fileSize)
        reader.releaseInterval = 10_000
        for index in 0..<(3 * 64) {
            let image = try DatumImage(record: try reader.read())
            #expect(image.floatCHW()[0] == Float(index % 64), "pages re-read after release hold the same bytes")
        }
    }

    @Test("PNG: grey stays 1 channel natively and replicates under force_color; RGBA keeps alpha only natively")
    func pngColorModes() throws {
        let grey: [UInt8] = [0, 50, 100, 150, 200, 250]
        let greyPNG = try Fixtures.png(width: 3, height: 2, channels: 1, pixels: grey)
        let native = try ImageDecoder.decode(greyPNG, mode: .native)
        #expect(native.channels == 1 && native.pixels == grey)
        let color = try ImageDecoder.decode(greyPNG, mode: .color)
        #expect(color.channels == 3 && color.pixels == grey.flatMap { [$0, $0, $0] })

        let rgba: [UInt8] = [10, 20, 30, 255, 40, 50, 60, 128]
        let rgbaPNG = try Fixtures.png(width: 2, height: 1, channels: 4, pixels: rgba)
        let keep = try ImageDecoder.decode(rgbaPNG, mode: .native)
        #expect(keep.channels == 4 && keep.pixels == [30, 20, 10, 255, 60, 50, 40, 128])
        let strip = try ImageDecoder.decode(rgbaPNG, mode: .color)
        #expect(strip.channels == 3 && strip.pixels == [30, 20, 10, 60, 50, 40])
    }

    @Test("force_gray converts colour with OpenCV's weights 0.299 R + 0.587 G + 0.114 B (within libpng's fixed-point rounding)")
    func pngForceGray() throws {
        // Without gAMA/sRGB chunks; with them libpng (for OpenCV as for us) converts in linear light.
        let png = Fixtures.withoutColorspace(
            try Fixtures.png(width: Self.width, height: Self.height, channels: 3, pixels: Self.rgb))
        let gray = try ImageDecoder.decode(png, mode: .gray)
        #expect(gray.channels == 1)
        for p in 0..<(Self.height * Self.width) {
            let (r, g, b) = (Double(Self.rgb[p * 3]), Double(Self.rgb[p * 3 + 1]), Double(Self.rgb[p * 3 + 2]))
            let expected = 0.299 * r + 0.587 * g + 0.114 * b
            #expect(abs(Double(gray.pixels[p]) - expected) <= 1, "pixel \(p): \(gray.pixels[p]) vs \(expected)")
        }
    }

    @Test("JPEG: a grey JPEG is 1 channel natively and 3 under force_color; a colour one is 1 under force_gray")
    func jpegColorModes() throws {
        let grey: [UInt8] = (0..<64).map { UInt8($0 * 4) }
        let greyJPEG = try Fixtures.jpeg(width: 8, height: 8, channels: 1, pixels: grey)
        let native = try ImageDecoder.decode(greyJPEG, mode: .native)
        #expect(native.channels == 1)
        let color = try ImageDecoder.decode(greyJPEG, mode: .color)
        #expect(color.channels == 3)
        #expect(color.pixels == native.pixels.flatMap { [$0, $0, $0] })

        let colourJPEG = try Fixtures.jpeg(width: Self.width, height: Self.height, channels: 3, pixels: Self.rgb)
        #expect(try ImageDecoder.decode(colourJPEG, mode: .native).channels == 3)
        #expect(try ImageDecoder.decode(colourJPEG, mode: .gray).channels == 1)
    }

    @Test("force_color on a Data layer decodes grey PNG Datums to 3 channels")
    func forceColorThroughFeed() throws {
        let scratch = try ScratchFolder("forcecolor")
        defer { scratch.remove() }
        let png = try Fixtures.png(width: 2, height: 2, channels: 1, pixels: [1, 2, 3, 4])
        try Fixtures.writeLMDB(scratch.file("db"), datums: [Fixtures.encodedDatum(png, label: 0)])
        var transform = Caffe_TransformationParameter()
        transform.forceColor = true
        let feed = try DataLayerFeed(layer: Fixtures.dataLayer(source: scratch.file("db"), batchSize: 2, transform: transform),
                                     phase: .test)
        defer { feed.close() }
        let batch = try feed.next()
        #expect(batch.shape == [2, 3, 2, 2])
        #expect(batch.data == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4])
    }

    @Test("rand_skip starts reading at a seeded offset and keeps the key order from there")
    func randSkip() throws {
        let scratch = try ScratchFolder("randskip")
        defer { scratch.remove() }
        let datums = (0..<10).map { Fixtures.rawDatum(channels: 1, height: 1, width: 1, bytes: [UInt8($0)], label: Int32($0)) }
        try Fixtures.writeLMDB(scratch.file("db"), datums: datums)
        var layer = Fixtures.dataLayer(source: scratch.file("db"), batchSize: 10)
        layer.dataParam.randSkip = 7
        var starts = Set<Float>()
        for seed: UInt32 in 0..<20 {
            let feed = try DataLayerFeed(layer: layer, phase: .train, seed: seed)
            let labels = try feed.next().labels
            feed.close()
            let first = Int(labels[0])
            #expect(first < 7)
            #expect(labels == (0..<10).map { Float((first + $0) % 10) })
            starts.insert(labels[0])
        }
        #expect(starts.count > 1)
    }
}
