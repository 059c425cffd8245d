import Foundation
import Testing
import SwiftJIT

/// LSTM parameters as the rest of the library sees them: `Net.params` in Caffe's blob order and
/// shapes, per-blob `lr_mult` in a solver, and snapshots Caffe can read back blob for blob.
@Suite("LSTM parameters through Net, the solver and snapshots", .serialized)
struct RecurrentNetTests {
    static let golden = CompileCommandTests.shared.appendingPathComponent("golden/layers/lstm_static")

    @Test("Net.params lists W_xc, b_c, W_xc_static, W_hc with Caffe's shapes, and forward matches Caffe")
    func netParams() throws {
        let net = try Net(prototxt: Self.golden.appendingPathComponent("net.prototxt").path,
                          weights: Self.golden.appendingPathComponent("weights.caffemodel").path)
        #expect(net.params["lstm"]?.map(\.shape) == [[16, 5], [16], [16, 3], [16, 4]])
        let inputs = try NumPyFile.readArchive(path: Self.golden.appendingPathComponent("inputs.npz").path)
        let expected = try #require(try NumPyFile.readArchive(path: Self.golden.appendingPathComponent("outputs.npz").path)["h"])
        let x = try #require(inputs["x"]), cont = try #require(inputs["cont"]), xs = try #require(inputs["xs"])
        let h = try #require(try net.forward(["x": x, "cont": cont, "xs": xs])["h"])
        #expect(h.shape == [3, 2, 4])
        let error = zip(h.data, expected.data).map { abs($0 - $1) }.max() ?? .infinity
        #expect(error < 1e-6)
    }

    static let trainNet = """
    name: "lstm_regression"
    layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 3 dim: 2 dim: 4 } data_filler { type: "constant" value: 0.5 } } }
    layer { name: "cont" type: "DummyData" top: "cont" dummy_data_param { shape { dim: 3 dim: 2 } data_filler { type: "constant" value: 1 } } }
    layer { name: "t" type: "DummyData" top: "t" dummy_data_param { shape { dim: 3 dim: 2 dim: 5 } data_filler { type: "constant" value: 0.3 } } }
    layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
      param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 0 }
      recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "h" bottom: "t" top: "loss" }
    """

    @Test("SGD trains an LSTM: the loss falls, lr_mult 0 keeps W_hc, and the snapshot holds the layer's blobs in Caffe's order")
    func trains() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-lstm-train-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Self.trainNet.write(to: folder.appendingPathComponent("net.prototxt"), atomically: true, encoding: .utf8)
        let solver = folder.appendingPathComponent("solver.prototxt")
        try """
        net: "net.prototxt"
        base_lr: 0.5 momentum: 0.9 lr_policy: "fixed" weight_decay: 0.001
        max_iter: 30 snapshot: 30 snapshot_prefix: "snap" random_seed: 3 type: "SGD"
        """.write(to: solver, atomically: true, encoding: .utf8)
        var options = TrainingOptions()
        options.baseDirectory = folder.path
        options.progress = .quiet
        let trainer = try Trainer(solverPath: solver.path, options: options, compiler: try Compiler())
        let initial = trainer.net.parameterArrays()["lstm"]!
        let result = try trainer.train()

        let losses = result.losses.map(\.loss)
        #expect(losses.count == 30)
        #expect(losses.last! < 0.5 * losses.first!, "losses \(losses)")
        let final = trainer.net.parameterArrays()["lstm"]!
        #expect(final.map(\.shape) == [[20, 4], [20], [20, 5]])
        #expect(final[0] != initial[0] && final[1] != initial[1])
        #expect(final[2] == initial[2], "W_hc has lr_mult 0")

        let snapshot = try CaffeParameters.arrays(from: try CaffeFiles.loadWeights(path: folder.appendingPathComponent("snap_iter_30.caffemodel").path))
        #expect(snapshot["lstm"]?.map(\.shape) == [[20, 4], [20], [20, 5]])
        #expect(snapshot["lstm"] == final)
    }
}
