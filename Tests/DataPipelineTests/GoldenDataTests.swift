import CaffeFormat
import DataPipeline
import Foundation
import NumPy
import Testing

/// The Data layers of `golden/train/common/train_test.prototxt` against what Caffe output.
@Suite("Caffe's golden LMDBs")
struct GoldenDataTests {
    /// The prototxt's Data layer for `phase`, its sources resolved from the prototxt's folder.
    static func layer(_ phase: Caffe_Phase) throws -> (Caffe_LayerParameter, String) {
        let path = try SharedFixtures.train("common/train_test.prototxt")
        let net = try CaffeFiles.loadNet(path: path).net
        let layer = try #require(net.layer.first { layer in
            layer.type == "Data" && layer.include.contains { $0.phase == phase }
        }, "train_test.prototxt has no \(phase) Data layer")
        return (layer, (path as NSString).deletingLastPathComponent)
    }

    @Test("the read-only train LMDB (no lock.mdb) opens and lists 320 records keyed %08d, wrapping after the last")
    func readerWalksTrainLMDB() throws {
        let reader = try LMDBReader(path: try SharedFixtures.train("data/train_lmdb"))
        #expect(reader.count == 320)
        for index in 0..<320 {
            let record = try reader.read()
            #expect(record.keyDescription == String(format: "%08d", index))
        }
        #expect(reader.epochsCompleted == 1)
        #expect(try reader.read().keyDescription == "00000000")
    }

    @Test("every golden Datum is a 1×28×28 uint8 image with a digit label")
    func goldenDatumsDecode() throws {
        let reader = try LMDBReader(path: try SharedFixtures.train("data/test_lmdb"))
        #expect(reader.count == 64)
        for _ in 0..<reader.count {
            let image = try DatumImage(record: try reader.read())
            #expect(image.shape == [1, 28, 28])
            #expect((0...9).contains(image.label))
            guard case .bytes = image.pixels else { Issue.record("expected uint8 pixels"); return }
        }
    }

    @Test("TRAIN batches 0 and 19 equal Caffe's Data layer output exactly, and batch 20 starts the next epoch")
    func trainBatchesMatchCaffe() throws {
        let archive = try NumPyFile.readArchive(path: try SharedFixtures.train("data/first_batches.npz"))
        #expect(Set(archive.keys) == ["data_batch0", "label_batch0", "data_batch19", "label_batch19"])
        let (layer, folder) = try Self.layer(.train)
        let feed = try DataLayerFeed(layer: layer, phase: .train, seed: 1, baseDirectory: folder)
        defer { feed.close() }
        #expect(feed.batchShape == [16, 1, 28, 28])
        #expect(feed.prefetch == 4)
        var batches: [DataBatch] = []
        for _ in 0...20 { batches.append(try feed.next()) }
        for index in [0, 19] {
            let data = try #require(archive["data_batch\(index)"])
            let labels = try #require(archive["label_batch\(index)"])
            #expect(data.shape == batches[index].shape)
            #expect(data.data == batches[index].data, "batch \(index) data differs from Caffe's")
            #expect(labels.data == batches[index].labels, "batch \(index) labels differ from Caffe's")
        }
        #expect(batches[0].keys.first == "00000000")
        #expect(batches[19].keys.last == "00000319")
        #expect(batches[20] == batches[0])
    }

    @Test("the TEST layer reads the 64-record test LMDB in 4 batches of 16, then wraps around")
    func testPhaseWraps() throws {
        let (layer, folder) = try Self.layer(.test)
        let feed = try DataLayerFeed(layer: layer, phase: .test, baseDirectory: folder)
        defer { feed.close() }
        let batches = try (0..<5).map { _ in try feed.next() }
        #expect(batches[0].keys == (0..<16).map { String(format: "%08d", $0) })
        #expect(batches[3].keys.last == "00000063")
        #expect(batches[4] == batches[0])
        #expect(batches[0].data.allSatisfy { $0 >= 0 && $0 < 1 })
    }
}
