import Foundation
import Testing
@testable import NumPy

/// Real Caffe golden vectors from ../shared/golden (relative to the package root). These tests
/// fail loudly when the folder is missing.
@Suite("Caffe golden .npz files")
struct GoldenTests {
    /// The `outputs` shapes listed in a case's case.json.
    static func declaredOutputs(_ dir: URL) throws -> [String: [Int]] {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("case.json")))
        let outputs = try #require((json as? [String: Any])?["outputs"] as? [String: [Int]], "case.json of \(dir.path) has no 'outputs'")
        return outputs
    }

    @Test("conv_k3_basic/outputs.npz: key 'y' of shape [2, 4, 5, 7]")
    func convOutputs() throws {
        let dir = try Fixtures.goldenLayerCase("conv_k3_basic")
        let archive = try NumPyFile.readArchive(path: dir.appendingPathComponent("outputs.npz").path)
        #expect(archive.keys == ["y"])
        let y = try #require(archive["y"])
        #expect(y.shape == [2, 4, 5, 7])
        #expect(y.count == 280)
        #expect(Array(y.data.prefix(3)) == [1.8242979, 0.2129328, 1.2584721])  // np.load(...)['y'].ravel()[:3]
        #expect(try Self.declaredOutputs(dir) == ["y": [2, 4, 5, 7]])

        let grads = try NumPyFile.readArchive(path: dir.appendingPathComponent("grads.npz").path)
        #expect(grads.keys == ["x", "conv/0", "conv/1"])
        #expect(grads["conv/0"]?.shape == [4, 3, 3, 3])
        #expect(grads["conv/1"]?.count == 4)
        #expect(grads["conv/1"].map { Array($0.data.prefix(3)) } == [-11.043433, -14.216448, -1.6386236])
    }

    @Test("softmaxloss_2d/outputs.npz: the 0-d loss listed in case.json")
    func scalarLoss() throws {
        let dir = try Fixtures.goldenLayerCase("softmaxloss_2d")
        let outputs = try Self.declaredOutputs(dir)
        let (key, shape) = try #require(outputs.first(where: { $0.value == [] }), "softmaxloss_2d/case.json lists no 0-d output")
        #expect(key == "loss" && shape == [])
        let archive = try NumPyFile.readArchive(path: dir.appendingPathComponent("outputs.npz").path)
        let loss = try #require(archive[key])
        #expect(loss.shape == [])
        #expect(loss.count == 1)
        #expect(loss.data == [2.576759])
    }

    @Test("every golden .npz reads, matches case.json shapes, and re-encodes byte for byte")
    func allGoldenArchives() throws {
        _ = try Fixtures.goldenLayerCase("conv_k3_basic")  // fail loudly if the folder is absent
        let root = Fixtures.golden
        let files = (FileManager.default.enumerator(atPath: root.path)?.compactMap { $0 as? String } ?? [])
            .filter { $0.hasSuffix(".npz") }.sorted()
        #expect(files.count > 100, "found only \(files.count) .npz files under \(root.path)")
        var members = 0
        for file in files {
            let url = root.appendingPathComponent(file)
            let original = try Data(contentsOf: url)
            let archive = try NumPyFile.readArchive(path: url.path)
            members += archive.count
            // The golden writer (numpy 1.24 + zipfile) and ours agree on every byte.
            #expect(try NumPyFile.encode(archive) == original, "\(file) re-encodes differently")
            if file.hasSuffix("/outputs.npz") {
                let declared = try Self.declaredOutputs(url.deletingLastPathComponent())
                for (key, shape) in declared {
                    #expect(archive[key]?.shape == shape, "\(file): '\(key)' should have shape \(shape)")
                }
            }
        }
        #expect(members > 500)
    }
}
