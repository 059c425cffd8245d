import Foundation
import Testing
import SwiftJIT

/// The `Net` library type: inputs checked by name and shape, NaN/inf passing through without a
/// crash, and one compiled net serving many threads at once.
@Suite("the Net library type")
struct NetTests {
    static let lenet = CompileCommandTests.shared.appendingPathComponent("golden/nets/lenet_deploy")

    func net() throws -> Net {
        try Net(prototxt: Self.lenet.appendingPathComponent("net.prototxt").path,
                weights: Self.lenet.appendingPathComponent("weights.caffemodel").path)
    }

    func inputs() throws -> NDArray {
        try #require(try NumPyFile.readArchive(path: Self.lenet.appendingPathComponent("inputs.npz").path)["data"])
    }

    @Test("a missing input, an unknown input and a wrong shape name the blob")
    func badInputs() throws {
        let net = try net()
        #expect(throws: Diagnostic.self) { try net.forward([:]) }
        do { _ = try net.forward([:]) } catch { #expect("\(error)" == "input 'data' is missing\n  hint: feed every net input: data") }
        do { _ = try net.forward(["data": try inputs(), "dta": try inputs()]) } catch {
            #expect("\(error)".hasPrefix("'dta' is not an input of this net — did you mean 'data'?"))
        }
        // A new shape compiles again (Caffe's Reshape); a shape the net cannot take names both shapes.
        let small = NDArray(shape: [1, 1, 28, 28], repeating: 0.5)
        #expect(try net.forward(["data": small])["prob"]?.shape == [1, 10])
        do {
            _ = try net.forward(["data": NDArray(shape: [1, 1, 8, 8], repeating: 0)])
            Issue.record("an 8×8 image cannot go through LeNet")
        } catch {
            #expect("\(error)".contains("1×1×8×8") || "\(error)".contains("does not fit"), "\(error)")
        }
    }

    @Test("NaN and inf inputs propagate without a crash, as in Caffe")
    func nonFinite() throws {
        let net = try net()
        var x = try inputs()
        x.data[0] = .nan
        x.data[1] = .infinity
        let blobs = try net.forward(["data": x], blobs: .all)
        #expect(blobs["conv1"]!.data.contains { $0.isNaN } && blobs["conv1"]!.data.contains { $0.isInfinite })
        // MAX pooling never selects a NaN (Caffe compares with '>'), so inf survives pool1 and NaN does not.
        #expect(!blobs["pool1"]!.data.contains { $0.isNaN } && blobs["pool1"]!.data.contains { $0.isInfinite })
        #expect(blobs["prob"]!.shape == [2, 10])
    }

    @Test("many threads share one net and get Caffe's answer")
    func concurrent() throws {
        let net = try net()
        let x = try inputs()
        let expected = try #require(try NumPyFile.readArchive(path: Self.lenet.appendingPathComponent("outputs.npz").path)["prob"])
        let results = LockedResults()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            do {
                let prob = try net.forward(["data": x])["prob"]!
                let error = zip(prob.data, expected.data).map { abs($0 - $1) }.max() ?? 1
                results.add(error)
            } catch {
                results.add(.infinity)
            }
        }
        #expect(results.values.count == 8)
        #expect(results.values.allSatisfy { $0 < 1e-5 })
    }

    @Test("a Filter net returns each call's selected rows, Caffe's golden ones included, from many threads at once")
    func filter() throws {
        let folder = CompileCommandTests.shared.appendingPathComponent("golden/layers/filter")
        let net = try Net(prototxt: folder.appendingPathComponent("net.prototxt").path, weights: folder.appendingPathComponent("weights.caffemodel").path)
        let inputs = try NumPyFile.readArchive(path: folder.appendingPathComponent("inputs.npz").path)
        let expected = try NumPyFile.readArchive(path: folder.appendingPathComponent("outputs.npz").path)
        let (x, z) = (try #require(inputs["x"]), try #require(inputs["z"]))
        let golden = try net.forward(["x": x, "z": z, "sel": try #require(inputs["sel"])])
        #expect(golden["fx"]?.shape == [3, 3, 2] && golden["fx"]?.data == expected["fx"]?.data)
        #expect(golden["fz"]?.shape == [3, 5] && golden["fz"]?.data == expected["fz"]?.data)
        let selectors: [[Float]] = [[1, 0, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 1]]
        let results = LockedResults()
        DispatchQueue.concurrentPerform(iterations: 32) { i in
            let selector = selectors[i % selectors.count]
            let rows = selector.indices.filter { selector[$0] != 0 }
            do {
                let fx = try net.forward(["x": x, "z": z, "sel": NDArray(shape: [4], data: selector)])["fx"]!
                let right = fx.shape == [rows.count, 3, 2] && fx.data == rows.flatMap { x.data[($0 * 6)..<($0 * 6 + 6)] }
                results.add(right ? 0 : 1)
            } catch {
                results.add(.infinity)
            }
        }
        #expect(results.values.count == 32 && results.values.allSatisfy { $0 == 0 })
    }

    final class LockedResults: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var values: [Float] = []
        func add(_ value: Float) {
            lock.lock()
            values.append(value)
            lock.unlock()
        }
    }
}
