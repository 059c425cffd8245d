import CaffeFormat
import DataPipeline
import Foundation
import Testing

/// The data sources beyond LMDB: image lists (ImageData), LevelDB, HDF5, and Caffe's shuffle.
/// Expected orders come from Tests/data/conftest.py's MT19937 + boost::uniform_int reference,
/// written from their C++ definitions.
@Suite("Image lists, LevelDB and HDF5")
struct ImageDataSourcesTests {
    @Test("caffe::shuffle and boost::uniform_int draw Caffe's values")
    func caffeShuffleOrder() {
        var generator = MersenneTwister(seed: 1234)
        var items = Array(0..<10)
        items.caffeShuffle(using: &generator)
        #expect(items == [0, 9, 6, 7, 3, 2, 5, 8, 4, 1])
        var draws = MersenneTwister(seed: 7)
        #expect([1, 2, 6, 99, 1000, 1 << 31].map { draws.boostUniform(upTo: $0) } == [0, 0, 5, 31, 438, 1_956_722_279])
    }

    @Test("list files split at the last space and name the line of a bad label")
    func listParsing() throws {
        let entries = try ImageList.parse("a b/c.jpg 3\r\n\nd.png -1\n", file: "list.txt")
        #expect(entries == [ImageListEntry(path: "a b/c.jpg", label: 3, line: 1), ImageListEntry(path: "d.png", label: -1, line: 3)])
        #expect(throws: Diagnostic.self) { try ImageList.parse("ok.png 1\nnolabel.png\n", file: "list.txt") }
        do {
            _ = try ImageList.parse("ok.png 1\nx.png one\n", file: "list.txt")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.location == SourcePosition(file: "list.txt", line: 2, column: 1))
            #expect(diagnostic.message.contains("'one'"))
        }
    }

    @Test("resizing to the same size is the identity; 2× downscale averages 2×2 blocks rounding half up")
    func resize() {
        let image = DecodedImage(channels: 1, height: 2, width: 4, pixels: [0, 1, 10, 20, 2, 2, 30, 41])
        #expect(ImageResize.bilinear(image, height: 2, width: 4) == image)
        let half = ImageResize.bilinear(image, height: 1, width: 2)
        #expect(half.pixels == [1, 25])  // (0+1+2+2)/4 = 1.25 → 1; (10+20+30+41)/4 = 25.25 → 25
    }

    @Test("a LevelDB written by LevelDBWriter reads back in key order and wraps")
    func levelDBRoundTrip() throws {
        let folder = try ScratchFolder("leveldb")
        defer { folder.remove() }
        let path = folder.file("db")
        let writer = try makeDatumWriter(path: path, backend: .leveldb)
        for index in [2, 0, 1] {
            let datum = Fixtures.rawDatum(channels: 1, height: 1, width: 2, bytes: [UInt8(index), 9], label: Int32(index))
            try writer.put(key: Data(Fixtures.key(index).utf8), value: try datum.serializedData())
        }
        try writer.finish()
        #expect(DatabaseBackend.detect(path) == .leveldb)
        let reader = try LevelDBReader(path: path)
        #expect(reader.count == 3)
        let keys = try (0..<4).map { _ in try reader.read().keyDescription }
        #expect(keys == ["00000000", "00000001", "00000002", "00000000"])
        #expect(reader.epochsCompleted == 1)
        #expect(throws: Diagnostic.self) { try LevelDBWriter(path: path) }
        #expect(throws: Diagnostic.self) { try LMDBReader(path: path) }
    }

    @Test("HDF5 files round-trip; truncated files and missing datasets are diagnostics naming the file")
    func hdf5RoundTripAndErrors() throws {
        let folder = try ScratchFolder("hdf5")
        defer { folder.remove() }
        let path = folder.file("a.h5")
        let data = HDF5Array(shape: [3, 2], values: [1, 2, 3, 4, 5, 6.5])
        try HDF5File.write(path: path, datasets: [("data", data), ("label", HDF5Array(shape: [3], values: [0, 1, 0]))])
        let back = try HDF5File.read(path: path, datasets: ["label", "data"])
        #expect(back == [HDF5Array(shape: [3], values: [0, 1, 0]), data])
        do {
            _ = try HDF5File.read(path: path, datasets: ["nope"])
            Issue.record("a missing dataset was read")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.file == path && diagnostic.message.contains("'nope'"))
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = folder.file("cut.h5")
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        do {
            _ = try HDF5File.read(path: cut, datasets: ["data"])
            Issue.record("a truncated file was read")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.file == cut)
        }
    }

    @Test("HDF5DataReader walks files and rows in order and wraps")
    func hdf5Reader() throws {
        let folder = try ScratchFolder("hdf5reader")
        defer { folder.remove() }
        try HDF5File.write(path: folder.file("a.h5"), datasets: [("x", HDF5Array(shape: [2, 1], values: [0, 1]))])
        try HDF5File.write(path: folder.file("b.h5"), datasets: [("x", HDF5Array(shape: [1, 1], values: [2]))])
        try "a.h5\nb.h5\n".write(toFile: folder.file("list.txt"), atomically: true, encoding: .utf8)
        var layer = Caffe_LayerParameter()
        layer.name = "h5"
        layer.type = "HDF5Data"
        layer.top = ["x"]
        layer.hdf5DataParam.source = "list.txt"
        layer.hdf5DataParam.batchSize = 2
        let reader = try HDF5DataReader(layer: layer, seed: 1, baseDirectory: folder.path)
        #expect(reader.batchShapes == [[2, 1]])
        let values = try (0..<3).flatMap { _ in try reader.next()[0].values }
        #expect(values == [0, 1, 2, 0, 1, 2])
    }

    @Test("ImageListReader decodes a list on several threads into the same batches as one thread")
    func imageListReader() throws {
        let folder = try ScratchFolder("imagelist")
        defer { folder.remove() }
        var lines: [String] = []
        for index in 0..<7 {
            let pixels = (0..<(5 * 6)).map { UInt8(truncatingIfNeeded: $0 * 7 + index * 31) }
            let png = try ImageEncoder.png(DecodedImage(channels: 1, height: 5, width: 6, pixels: pixels))
            try png.write(to: URL(fileURLWithPath: folder.file("\(index).png")))
            lines.append("\(index).png \(index)")
        }
        try lines.joined(separator: "\n").write(toFile: folder.file("list.txt"), atomically: true, encoding: .utf8)
        var layer = Caffe_LayerParameter()
        layer.name = "images"
        layer.type = "ImageData"
        layer.imageDataParam.source = "list.txt"
        layer.imageDataParam.batchSize = 3
        layer.imageDataParam.isColor = false
        layer.imageDataParam.shuffle = true
        layer.transformParam.scale = 0.5
        let many = try ImageListReader(layer: layer, phase: .train, seed: 9, baseDirectory: folder.path)
        let one = try ImageListReader(layer: layer, phase: .train, seed: 9, baseDirectory: folder.path)
        one.decodingThreads = 1
        many.decodingThreads = 4
        #expect(many.batchShape == [3, 1, 5, 6])
        // With no transformer randomness, the generator's first draw seeds the shuffle (Caffe's
        // caffe_rng_rand() in DataLayerSetUp).
        var global = MersenneTwister(seed: 9)
        var shuffler = MersenneTwister(seed: global.next())
        var order = Array(0..<7)
        order.caffeShuffle(using: &shuffler)
        #expect(many.entries.map { Int($0.label) } == order)
        for _ in 0..<5 {
            var a = DataBatch(shape: many.batchShape), b = DataBatch(shape: one.batchShape)
            try many.fill(&a)
            try one.fill(&b)
            #expect(a == b)
        }
        var first = DataBatch(shape: one.batchShape)
        let fresh = try ImageListReader(layer: layer, phase: .train, seed: 9, baseDirectory: folder.path)
        try fresh.fill(&first)
        let index = order[0]
        let expected = (0..<30).map { Float(UInt8(truncatingIfNeeded: $0 * 7 + index * 31)) * 0.5 }
        #expect(Array(first.data[0..<30]) == expected)
        #expect(first.labels[0] == Float(index))
    }
}
