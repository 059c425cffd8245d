import CaffeFormat
import DataPipeline
import Foundation
import Testing

/// Prefetching, shutdown, and what users read when a database is missing or damaged.
@Suite("DataLayerFeed")
struct DataLayerFeedTests {
    static func good(_ index: Int) -> Data {
        try! Fixtures.rawDatum(channels: 1, height: 2, width: 2, bytes: [UInt8(index), 1, 2, 3], label: Int32(index))
            .serializedData()
    }

    @Test("prefetching delivers the same batches as synchronous reading, crops and mirrors included")
    func prefetchMatchesSynchronous() throws {
        var transform = Caffe_TransformationParameter()
        transform.cropSize = 24
        transform.mirror = true
        transform.meanValue = [33]
        transform.scale = 0.0125
        let source = try SharedFixtures.train("data/train_lmdb")
        let layer = Fixtures.dataLayer(source: source, batchSize: 16, transform: transform)
        let prefetched = try DataLayerFeed(layer: layer, phase: .train, seed: 42)
        let synchronous = try DataLayerFeed(layer: layer, phase: .train, seed: 42, prefetch: 0)
        defer { prefetched.close(); synchronous.close() }
        #expect(prefetched.prefetch == 4 && synchronous.prefetch == 0)
        #expect(prefetched.batchShape == [16, 1, 24, 24])
        for index in 0..<25 {
            let a = try prefetched.next(), b = try synchronous.next()
            #expect(a == b, "batch \(index) differs")
        }
        let other = try DataLayerFeed(layer: layer, phase: .train, seed: 43)
        defer { other.close() }
        #expect(try other.next().data != (try DataLayerFeed(layer: layer, phase: .train, seed: 42).next().data))
    }

    @Test("a missing LMDB path is one line naming the path and the layer")
    func missingPath() throws {
        let layer = Fixtures.dataLayer(source: "no/such/train_lmdb", batchSize: 4)
        let error = #expect(throws: Diagnostic.self) { try DataLayerFeed(layer: layer, phase: .train, baseDirectory: "/tmp") }
        #expect(error?.headline == "/tmp/no/such/train_lmdb: layer 'data': no such LMDB (nothing exists at this path)")
        #expect(error?.headline.contains("\n") == false)
    }

    @Test("a file or folder that is not an LMDB says so")
    func notAnLMDB() throws {
        let scratch = try ScratchFolder("notlmdb")
        defer { scratch.remove() }
        try Data((0..<10_000).map { UInt8($0 % 251) }).write(to: URL(fileURLWithPath: scratch.file("garbage.mdb")))
        let file = #expect(throws: Diagnostic.self) { try LMDBReader(path: scratch.file("garbage.mdb")) }
        #expect(file?.headline.hasPrefix("\(scratch.file("garbage.mdb")): not an LMDB") == true)
        try FileManager.default.createDirectory(atPath: scratch.file("leveldb"), withIntermediateDirectories: true)
        let folder = #expect(throws: Diagnostic.self) { try LMDBReader(path: scratch.file("leveldb")) }
        #expect(folder?.headline.contains("not an LMDB: the folder has no data.mdb") == true)
    }

    @Test("a mis-sized record stops the feed with its key and both sizes, after the good batches before it")
    func misSizedRecord() throws {
        let scratch = try ScratchFolder("missized")
        defer { scratch.remove() }
        let short = try Fixtures.rawDatum(channels: 1, height: 2, width: 2, bytes: [1, 2, 3], label: 0).serializedData()
        try Fixtures.writeLMDB(scratch.file("db"), [Self.good(0), Self.good(1), Self.good(2), Self.good(3), short, Self.good(5)])
        let feed = try DataLayerFeed(layer: Fixtures.dataLayer(source: scratch.file("db"), batchSize: 2), phase: .train)
        defer { feed.close() }
        #expect(try feed.next().labels == [0, 1])
        #expect(try feed.next().labels == [2, 3])
        let error = #expect(throws: Diagnostic.self) { try feed.next() }
        #expect(error?.headline == "\(scratch.file("db")): layer 'data': mis-sized record at key 00000004: "
                + "it holds 3 bytes of pixels, but its shape 1×2×2 needs 4")
        let again = #expect(throws: Diagnostic.self) { try feed.next() }
        #expect(again == error, "the feed stays stopped on the same error")
    }

    @Test("a record that is not a Datum is reported as corrupt at its key, synchronously too")
    func corruptRecord() throws {
        let scratch = try ScratchFolder("corrupt")
        defer { scratch.remove() }
        let junk = Data([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
        try Fixtures.writeLMDB(scratch.file("db"), [Self.good(0), Self.good(1), junk, Self.good(3)])
        for prefetch in [0, 2] {
            let feed = try DataLayerFeed(layer: Fixtures.dataLayer(source: scratch.file("db"), batchSize: 2), phase: .train,
                                         prefetch: prefetch)
            _ = try feed.next()
            let error = #expect(throws: Diagnostic.self) { try feed.next() }
            #expect(error?.headline.contains("corrupt record at key 00000002") == true)
            #expect(error?.layer == "data")
            feed.close()
        }
    }

    @Test("a record whose shape differs from the first names its key and both shapes")
    func shapeChange() throws {
        let scratch = try ScratchFolder("shape")
        defer { scratch.remove() }
        let bigger = try Fixtures.rawDatum(channels: 1, height: 3, width: 3, bytes: [UInt8](repeating: 0, count: 9), label: 0)
            .serializedData()
        try Fixtures.writeLMDB(scratch.file("db"), [Self.good(0), bigger])
        let feed = try DataLayerFeed(layer: Fixtures.dataLayer(source: scratch.file("db"), batchSize: 2), phase: .train)
        defer { feed.close() }
        let error = #expect(throws: Diagnostic.self) { try feed.next() }
        #expect(error?.message == "record at key 00000001 is 1×3×3, but the first record (key 00000000) is 1×2×2")
    }

    @Test("a broken encoded image names its key")
    func brokenImage() throws {
        let scratch = try ScratchFolder("badimage")
        defer { scratch.remove() }
        var png = try Fixtures.png(width: 4, height: 4, channels: 1, pixels: [UInt8](repeating: 9, count: 16))
        png.replaceSubrange(40..<png.count, with: Data(repeating: 0, count: png.count - 40))
        try Fixtures.writeLMDB(scratch.file("db"), datums: [Fixtures.encodedDatum(png, label: 0)])
        let error = #expect(throws: Diagnostic.self) {
            try DataLayerFeed(layer: Fixtures.dataLayer(source: scratch.file("db"), batchSize: 1), phase: .train)
        }
        #expect(error?.message.hasPrefix("corrupt record at key 00000000: its PNG cannot be decoded") == true)
    }

    @Test("closing a feed whose prefetch queue is full returns promptly, and next() afterwards says it was closed")
    func closeWhileFull() throws {
        let feed = try DataLayerFeed(layer: Fixtures.dataLayer(source: try SharedFixtures.train("data/test_lmdb"), batchSize: 8),
                                     phase: .test, prefetch: 2)
        _ = try feed.next()
        Thread.sleep(forTimeInterval: 0.05)  // let the producer fill the queue and block
        let started = Date()
        feed.close()
        feed.close()
        #expect(Date().timeIntervalSince(started) < 1)
        let error = #expect(throws: Diagnostic.self) { try feed.next() }
        #expect(error?.message == "the data feed was closed")
    }

    @Test("a feed rejects layers it cannot read (DummyData) and non-positive batch sizes")
    func rejectsBadLayers() throws {
        var layer = Fixtures.dataLayer(source: try SharedFixtures.train("data/test_lmdb"), batchSize: 0)
        let zero = #expect(throws: Diagnostic.self) { try DataLayerFeed(layer: layer, phase: .test) }
        #expect(zero?.headline == "layer 'data': data_param.batch_size is 0; it must be positive")
        layer.type = "DummyData"
        #expect(throws: Diagnostic.self) { try DataLayerFeed(layer: layer, phase: .test) }
    }
}
