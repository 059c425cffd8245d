import Foundation
import Testing
import SwiftJIT

/// One model, many sessions: constants held once and shared, each session only an arena, and
/// sessions that agree with the model's own forward and with each other.
@Suite("models and sessions")
struct ModelSessionTests {
    static let lenet = NetTests.lenet
    static let zoo = CompileCommandTests.shared.appendingPathComponent("zoo")

    func model() throws -> Model {
        try Model(prototxt: Self.lenet.appendingPathComponent("net.prototxt").path,
                  weights: Self.lenet.appendingPathComponent("weights.caffemodel").path)
    }

    func image() throws -> NDArray {
        try #require(try NumPyFile.readArchive(path: Self.lenet.appendingPathComponent("inputs.npz").path)["data"])
    }

    @Test("two sessions of one model run the same constants, not copies of them")
    func sessionsShareConstants() throws {
        let model = try model()
        let first = try model.session(), second = try model.session()
        let bytes = model.constants.bytes
        #expect(bytes > 0)
        let program = first.context.program
        #expect(program === second.context.program, "the second session compiled the net again")
        let constants = program.program.buffers.indices.filter { program.program.buffers[$0].isConstant }
        #expect(!constants.isEmpty)
        for id in constants {
            #expect(first.context.executable.pointer(to: id) == second.context.executable.pointer(to: id))
        }
        // Each session's arena is its own.
        let input = try #require(program.inputs.first)
        #expect(first.context.executable.pointer(to: input.buffer) != second.context.executable.pointer(to: input.buffer))
        #expect(model.constants.bytes == bytes, "a session added constants")
    }

    @Test("a program for another batch size reuses the weights it shares with the first")
    func programsShareWeights() throws {
        let model = try model()
        _ = try model.session()
        let afterFirst = (model.constants.bytes, model.constants.count)
        let batch = try model.session(inputShapes: ["data": [3, 1, 28, 28]])
        #expect(batch.inputs.first?.shape == [3, 1, 28, 28])
        // LeNet's weights are the same arrays at any batch size: nothing new to hold.
        #expect(model.constants.count == afterFirst.1)
        #expect(model.constants.bytes == afterFirst.0)
    }

    @Test("a session's outputs equal the model's forward, the golden values, and another session's")
    func sessionsAgree() throws {
        let model = try model(), x = try image()
        let expected = try model.forward(["data": x])["prob"]
        let golden = try NumPyFile.readArchive(path: Self.lenet.appendingPathComponent("outputs.npz").path)["prob"]
        let a = try model.session(), b = try model.session()
        let fromA = try a.run(["data": x])["prob"], fromB = try b.run(["data": x])["prob"]
        #expect(fromA == expected && fromB == expected)
        let reference = try #require(golden), ours = try #require(fromA)
        let scale = reference.data.map(abs).max() ?? 1
        #expect(zip(ours.data, reference.data).allSatisfy { abs($0 - $1) <= 1e-4 * scale })
    }

    @Test("runInPlace reads inputs written into the session and returns views of its memory")
    func inPlace() throws {
        let model = try model(), x = try image()
        let session = try model.session()
        let buffer = try session.inputBuffer("data")
        #expect(buffer.count == x.count)
        _ = x.data.withUnsafeBufferPointer { buffer.update(fromContentsOf: $0) }
        let views = try session.runInPlace()
        let view = try #require(views["prob"])
        #expect(view.shape == [x.shape[0], 10])
        #expect(Array(view.values) == (try model.forward(["data": x])["prob"])?.data)
        #expect(throws: Diagnostic.self) { try session.runInPlace(blobs: ["conv1"]) }
        do { _ = try session.runInPlace(blobs: ["prb"]) } catch {
            #expect("\(error)".hasPrefix("'prb' is not an output of this net — did you mean 'prob'?"), "\(error)")
        }
    }

    @Test("reshape switches a session to new shapes; wrong shapes and names are named in the error")
    func reshapeAndErrors() throws {
        let model = try model(), x = try image()
        let session = try model.session()
        let batch = x.shape[0]
        do {
            _ = try session.run(["data": NDArray(shape: [batch + 1, 1, 28, 28], repeating: 0)])
            Issue.record("a \(batch + 1)-image batch ran on a \(batch)-image session")
        } catch {
            #expect("\(error)" == "input 'data' has shape \(batch + 1)×1×28×28, but the session runs \(batch)×1×28×28\n  hint: reshape the session for the new shape first (Session.reshape, sj_session_reshape)")
        }
        do { _ = try session.run(["dat": x]) } catch {
            #expect("\(error)".hasPrefix("'dat' is not an input of this net — did you mean 'data'?"), "\(error)")
        }
        try session.reshape(["data": [1, 1, 28, 28]])
        let one = NDArray(shape: [1, 1, 28, 28], data: Array(x.data[0..<784]))
        let out = try #require(try session.run(["data": one])["prob"])
        let full = try #require(try model.forward(["data": x])["prob"])
        #expect(out.shape == [1, 10])
        #expect(zip(out.data, full.data[0..<10]).allSatisfy { abs($0 - $1) <= 1e-6 })
        #expect(throws: Diagnostic.self) { try session.run(["data": x]) }
    }

    @Test("sessions on many threads at once all compute what one thread does")
    func threads() async throws {
        let model = try model(), x = try image()
        let expected = try #require(try model.forward(["data": x])["prob"])
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    let session = try model.session()
                    for _ in 0..<5 where try session.run(["data": x])["prob"] != expected { return false }
                    return true
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results == Array(repeating: true, count: 6))
        #expect(model.constants.bytes > 0)
    }

    @Test("a model loaded from memory equals one loaded from files")
    func fromMemory() throws {
        let text = try String(contentsOf: Self.lenet.appendingPathComponent("net.prototxt"), encoding: .utf8)
        let bytes = try Data(contentsOf: Self.lenet.appendingPathComponent("weights.caffemodel"))
        let model = try Model(definition: try CaffeFiles.parseNet(text: text), weights: (try CaffeFiles.parseWeights(bytes), "<memory>"))
        let x = try image()
        #expect(try model.forward(["data": x]) == (try self.model().forward(["data": x])))
        do {
            _ = try Model(definition: try CaffeFiles.parseNet(text: text), weights: (try CaffeFiles.parseWeights(bytes.prefix(1000)), "<memory>"))
            Issue.record("a truncated caffemodel loaded")
        } catch {
            #expect("\(error)".hasPrefix("<weights>: cannot read a .caffemodel"), "\(error)")
        }
    }
}

/// "Do these weights fit my train_val?" on a net whose Data layer's image size only its LMDB knows.
@Suite("weights for a net with unknown extents")
struct UnknownExtentWeightsTests {
    @Test("a caffemodel loads into a TEST-phase net whose Data layer's shape is unknown, without a crash")
    func dataLayerNet() throws {
        let zoo = CompileCommandTests.shared.appendingPathComponent("zoo/mnist/lenet_train_test.prototxt").path
        let weights = NetTests.lenet.appendingPathComponent("weights.caffemodel").path
        let graph = try GraphBuilder(phase: .test, insertsSplits: false).build(try CaffeFiles.loadNet(path: zoo))
        #expect(graph.node(named: "conv1")?.parameters.first?.shape.isFullyKnown == false)
        let values = try TrainedLayers.copy(from: weights, into: graph) { [:] }
        // Where the net cannot tell an extent, the caffemodel's shape (which the check matched) is kept.
        #expect(values["conv1"]?.map(\.shape) == [[20, 1, 5, 5], [20]])
        #expect(values["ip1"]?.first?.shape == [500, 800])
        let model = try Model(prototxt: zoo, weights: weights)
        do {
            _ = try model.session()
            Issue.record("a net whose data shape is unknown compiled")
        } catch {
            #expect("\(error)".contains("which is not fully known"), "\(error)")
        }
    }
}
