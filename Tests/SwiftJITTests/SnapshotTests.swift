import Foundation
import Testing
import SwiftJIT

/// Our snapshots are Caffe's: rebuilding the golden iteration-20 snapshot from its net and values
/// gives the same message, field for field, and it survives our reader.
@Suite("snapshots in Caffe's format")
struct SnapshotTests {
    static let sgd = CompileCommandTests.shared.appendingPathComponent("golden/train/sgd")

    @Test("the .caffemodel we write for the LeNet train net equals Caffe's snapshot")
    func caffemodelMatchesCaffe() throws {
        let golden = try CaffeFiles.loadWeights(path: Self.sgd.appendingPathComponent("snap_iter_20.caffemodel").path)
        let definition = try CaffeFiles.loadNet(path: Self.sgd.appendingPathComponent("train_test.prototxt").path)
        let graph = try GraphBuilder(phase: .train).build(definition)
        let ours = Snapshot.netParameter(graph: graph, parameters: try CaffeParameters.arrays(from: golden))
        #expect(ours.layer.map(\.name) == golden.layer.map(\.name))
        for (a, b) in zip(ours.layer, golden.layer) {
            #expect(a == b, "layer \(a.name) differs from Caffe's snapshot")
        }
        #expect(ours == golden)
    }

    @Test("the .solverstate we write equals Caffe's and round-trips through our reader")
    func solverStateMatchesCaffe() throws {
        let golden = try CaffeFiles.loadSolverState(path: Self.sgd.appendingPathComponent("snap_iter_20.solverstate").path)
        let history = golden.history.map { NDArray(shape: $0.shape.dim.map(Int.init), data: $0.data) }
        let ours = Snapshot.solverState(iteration: Int(golden.iter), learnedNet: golden.learnedNet, currentStep: Int(golden.currentStep), history: history)
        #expect(ours == golden)

        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-snap-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try CaffeFiles.loadWeights(path: Self.sgd.appendingPathComponent("snap_iter_20.caffemodel").path)
        let paths = try Snapshot.write(prefix: folder.appendingPathComponent("snap").path, iteration: 20, net: model,
                                       currentStep: 1, history: history)
        #expect(paths.model.hasSuffix("snap_iter_20.caffemodel"))
        let state = try CaffeFiles.loadSolverState(path: paths.state)
        #expect(state.iter == 20 && state.currentStep == 1 && state.learnedNet == "snap_iter_20.caffemodel")
        #expect(state.history == golden.history)
        #expect(try CaffeFiles.loadWeights(path: paths.model) == model)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.contains(".tmp") }
        #expect(leftovers.isEmpty)
    }
}
