import Foundation
import Testing
import CaffeFormat
@testable import Graph

/// Every .caffemodel Caffe wrote under ../shared/golden reads, writes back and reads again to
/// identical values, and loads into its net with every parameter initialized.
@Suite("caffemodel round trips")
struct CaffemodelRoundTripTests {
    @Test("read → write → read gives identical blobs, for every golden caffemodel")
    func roundTrip() throws {
        let files = try SharedFixtures.files(under: SharedFixtures.golden, suffixes: [".caffemodel"])
        #expect(files.count >= 80)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-roundtrip-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        for file in files {
            let first = try CaffeFiles.loadWeights(path: file.path)
            let copy = folder.appendingPathComponent("copy.caffemodel").path
            try CaffeFiles.write(first, to: copy)
            let second = try CaffeFiles.loadWeights(path: copy)
            #expect(first == second, "\(file.path)")
            #expect(first.layer.flatMap(\.blobs).map(\.data) == second.layer.flatMap(\.blobs).map(\.data))
        }
    }

    @Test("every golden net's weights initialize all of its parameters")
    func weightsBind() throws {
        for folder in try GoldenShapeTests.caseFolders() {
            let weights = folder.appendingPathComponent("weights.caffemodel")
            guard FileManager.default.fileExists(atPath: weights.path) else { continue }
            let info = try SharedFixtures.json(folder.appendingPathComponent("case.json"))
            let phase: Caffe_Phase = (info["phase"] as? String) == "TRAIN" ? .train : .test
            let graph = try GraphBuilder(phase: phase).build(try CaffeFiles.loadNet(path: folder.appendingPathComponent("net.prototxt").path))
            let report = try WeightBinding.check(graph, weights: try CaffeFiles.loadWeights(path: weights.path), file: weights.path)
            #expect(report.notInitialized.isEmpty, "\(folder.lastPathComponent): \(report.notInitialized)")
        }
    }
}

/// Legacy and auxiliary binary files: V1 caffemodels with 4-D blob dims, double_data,
/// .solverstate snapshots and .binaryproto means.
@Suite("legacy and auxiliary binary files")
struct LegacyBinaryTests {
    static func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-legacy-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test("a V1 caffemodel whose InnerProduct blob has dims 1 1 64 392 loads into a 64×392 weight")
    func v1LegacyInnerProduct() throws {
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var layer = Caffe_V1LayerParameter()
        layer.name = "ip1"
        layer.type = .innerProduct
        layer.bottom = ["pool2"]
        layer.top = ["ip1"]
        var weight = Caffe_BlobProto()
        (weight.num, weight.channels, weight.height, weight.width) = (1, 1, 64, 392)
        weight.data = (0..<(64 * 392)).map { Float($0 % 7) / 7 }
        var bias = Caffe_BlobProto()
        (bias.num, bias.channels, bias.height, bias.width) = (1, 1, 1, 64)
        bias.doubleData = Array(repeating: 0.25, count: 64)  // double_data is read too
        layer.blobs = [weight, bias]
        var model = Caffe_NetParameter()
        model.name = "v1"
        model.layers = [layer]
        let path = folder.appendingPathComponent("v1.caffemodel").path
        try CaffeFiles.write(model, to: path)

        let loaded = try CaffeFiles.loadWeights(path: path)
        #expect(loaded.layers.isEmpty && loaded.layer.count == 1)
        #expect(loaded.layer[0].type == "InnerProduct")
        #expect(WeightBinding.declaredShape(loaded.layer[0].blobs[0]) == TensorShape([1, 1, 64, 392]))

        let net = """
        layer { name: "data" type: "Input" top: "pool2" input_param { shape { dim: 4 dim: 8 dim: 7 dim: 7 } } }
        layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 64 } }
        """
        let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: net))
        #expect(graph.node(named: "ip1")?.parameters[0].shape == TensorShape([64, 392]))
        let report = try WeightBinding.check(graph, weights: loaded, file: path)
        #expect(report.initialized == ["ip1"])
        #expect(report.notInitialized.isEmpty)
    }

    @Test("a golden .solverstate reads: iteration, history blobs, learned net")
    func solverState() throws {
        let path = SharedFixtures.golden.appendingPathComponent("train/sgd/snap_iter_20.solverstate").path
        let state = try CaffeFiles.loadSolverState(path: try SharedFixtures.require(URL(fileURLWithPath: path)).path)
        #expect(state.iter == 20)
        #expect(state.history.count == 8)  // LeNet: 4 layers × (weights, bias)
        #expect(state.learnedNet.hasSuffix("snap_iter_20.caffemodel"))
    }

    @Test("a .binaryproto mean writes and reads back")
    func binaryProto() throws {
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var mean = Caffe_BlobProto()
        (mean.num, mean.channels, mean.height, mean.width) = (1, 3, 2, 2)
        mean.data = [104, 104, 104, 104, 117, 117, 117, 117, 123, 123, 123, 123]
        let path = folder.appendingPathComponent("mean.binaryproto").path
        try CaffeFiles.write(mean, to: path)
        let loaded = try CaffeFiles.loadBlob(path: path)
        #expect(loaded == mean)
        #expect(WeightBinding.declaredShape(loaded) == TensorShape([1, 3, 2, 2]))
    }
}
