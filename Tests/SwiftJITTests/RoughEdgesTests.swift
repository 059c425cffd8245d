import Foundation
import Testing
import SwiftJIT

/// What a new user hit on the way through the tour, each pinned: one rule for where a Data
/// layer's LMDB is found (every command), `export` on a Data-layer net, partial totals flagged in
/// `compile --json`, and no command crashing on any zoo net, with or without weights, in either phase.
@Suite("command-line rough edges", .serialized)
struct RoughEdgesTests {
    static let sgd = CompileCommandTests.shared.appendingPathComponent("golden/train/sgd")
    static let zoo = CompileCommandTests.shared.appendingPathComponent("zoo")

    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-edges-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test("export reads a Data layer's LMDB (relative to the prototxt's folder) for its shapes, as compile does")
    func exportDataLayerNet() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let archive = folder.appendingPathComponent("params.npz").path
        // The working directory is the repository; "../data/test_lmdb" is found beside the prototxt.
        let result = try CompileCommandTests.run(["export", Self.sgd.appendingPathComponent("train_test.prototxt").path,
                                                  "--weights", Self.sgd.appendingPathComponent("final.caffemodel").path, "--output", archive])
        #expect(result.status == 0, "\(result.err)")
        let arrays = try NumPyFile.readArchive(path: archive)
        #expect(arrays["conv1/0"]?.shape == [8, 1, 5, 5])
        #expect(arrays["ip1/0"]?.shape == [32, 256])  // 256 = 16×4×4: the 28×28 images of the LMDB
        let weights = try CaffeFiles.loadWeights(path: Self.sgd.appendingPathComponent("final.caffemodel").path)
        #expect(arrays["ip2/0"]?.data == weights.layer.first { $0.name == "ip2" }?.blobs[0].data)
    }

    @Test("test finds the LMDB by the same rule: from another working directory, relative to the prototxt's folder")
    func testCommandFindsLMDB() throws {
        let result = try CompileCommandTests.run(["test", "--model", Self.sgd.appendingPathComponent("train_test.prototxt").path,
                                                  "--weights", Self.sgd.appendingPathComponent("final.caffemodel").path, "--iterations", "2"])
        #expect(result.status == 0, "\(result.err)")
        #expect(result.out.contains("Batch 1, accuracy = "))
    }

    @Test("run reads a Data layer's first batch by the same rule (from another working directory) and matches test's first iteration")
    func runDataLayerNet() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let prototxt = Self.sgd.appendingPathComponent("train_test.prototxt").path
        let weights = Self.sgd.appendingPathComponent("final.caffemodel").path
        let archive = folder.appendingPathComponent("blobs.npz").path
        // The working directory is the repository; "../data/test_lmdb" is found beside the prototxt.
        let result = try CompileCommandTests.run(["run", prototxt, "--weights", weights, "--output", archive])
        #expect(result.status == 0, "\(result.err)")
        let blobs = try NumPyFile.readArchive(path: archive)
        let tested = try CompileCommandTests.run(["test", "--model", prototxt, "--weights", weights, "--iterations", "1"])
        #expect(tested.status == 0, "\(tested.err)")
        func batch0(_ name: String) -> Float? {
            tested.out.split(separator: "\n").first { $0.hasPrefix("Batch 0, \(name) = ") }.flatMap { Float($0.split(separator: " ").last!) }
        }
        let accuracy = try #require(batch0("accuracy")), loss = try #require(batch0("loss"))
        #expect(blobs["accuracy"]?.data == [accuracy])
        #expect(abs((blobs["loss"]?.data.first ?? .nan) - loss) <= 1e-5 * loss, "run \(String(describing: blobs["loss"]?.data)), test \(loss)")
        #expect(accuracy == 0.875)  // 14 of the LMDB's first 16 digits

        // Every top given with --input: a copy of the net whose LMDB is not beside it runs on those.
        let copy = folder.appendingPathComponent("train_test.prototxt")
        try FileManager.default.copyItem(atPath: prototxt, toPath: copy.path)
        let data = folder.appendingPathComponent("data.npy").path, label = folder.appendingPathComponent("label.npy").path
        try NumPyFile.write(NDArray(shape: [16, 1, 28, 28], data: [Float](repeating: 0, count: 16 * 784)), to: data)
        try NumPyFile.write(NDArray(shape: [16], data: [Float](repeating: 3, count: 16)), to: label)
        let given = try CompileCommandTests.run(["run", copy.path, "--weights", weights, "--output", archive,
                                                 "--input", "data=\(data)", "--input", "label=\(label)"])
        #expect(given.status == 0, "\(given.err)")
        #expect(try NumPyFile.readArchive(path: archive)["loss"]?.shape == [])
        let missing = try CompileCommandTests.run(["run", copy.path, "--weights", weights, "--output", archive])
        #expect(missing.status == 1)
        #expect(missing.err.contains("no such LMDB"), "\(missing.err)")
    }

    @Test("compile --json flags partial totals and names the blobs whose size is unknown")
    func partialTotals() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let net = try String(contentsOf: Self.sgd.appendingPathComponent("train_test.prototxt"), encoding: .utf8)
        let path = folder.appendingPathComponent("train_test.prototxt").path
        try net.write(toFile: path, atomically: true, encoding: .utf8)  // its LMDBs are not beside this copy
        func totals(_ arguments: [String]) throws -> [String: Any] {
            let result = try CompileCommandTests.run(["compile", "--json", "--no-jit"] + arguments)
            #expect(result.status == 0, "\(result.err)")
            let document = try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any]
            return document?["totals"] as? [String: Any] ?? [:]
        }
        let unknown = try totals([path])
        #expect(unknown["partial"] as? Bool == true)
        #expect((unknown["unknown"] as? [String])?.contains("data") == true)
        #expect((unknown["unknown"] as? [String])?.contains("ip1/0") == true)
        let table = try CompileCommandTests.run(["compile", "--no-jit", path])
        #expect(table.out.contains("partial totals: the sizes of"))
        let known = try totals([path, "--input", "data=16,1,28,28", "--input", "label=16"])
        #expect(known["partial"] as? Bool == false && (known["unknown"] as? [String])?.isEmpty == true)
        #expect(known["params"] as? Int == 11_978)
    }

    /// Every prototxt of ../shared/zoo that is a net (not a solver).
    static func zooNets() throws -> [URL] {
        let enumerator = FileManager.default.enumerator(at: zoo, includingPropertiesForKeys: nil)
        var nets: [URL] = []
        while let url = enumerator?.nextObject() as? URL {
            guard url.pathExtension == "prototxt", !url.lastPathComponent.contains("solver") else { continue }
            nets.append(url)
        }
        return nets.sorted { $0.path < $1.path }
    }

    /// The most parameters a net may have to get weight-level commands in `zooNeverCrashes`.
    static let smallNet = 2_000_000

    @Test("no command crashes on any zoo net, with and without --weights (from swiftjit init), in both phases")
    func zooNeverCrashes() throws {
        let folder = try Self.folder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let cache = folder.appendingPathComponent("kernels")
        let nets = try Self.zooNets()
        #expect(nets.count > 70)
        var crashes: [String] = []
        var runs = 0
        func check(_ arguments: [String]) throws -> (status: Int32, out: String) {
            let result = try CompileCommandTests.run(arguments, kernelCache: cache)
            runs += 1
            // A death by signal shows as its number (4 SIGILL for a Swift trap, 6, 11); swiftjit
            // itself exits 0, or 1 with an error line.
            if !(result.status == 0 || result.status == 1 && result.err.hasPrefix("error: ")) || result.err.contains("Fatal error") {
                crashes.append("\(arguments.joined(separator: " ")): status \(result.status) \(result.err.suffix(300))")
            }
            return (result.status, result.out)
        }
        // Weights per zoo folder, from `swiftjit init` on the first of its nets that has every
        // shape (a train_val net whose LMDB is not here takes its deploy net's weights: the
        // everyday "do these weights fit my train_val?" check). Nets over 2M parameters get
        // compile-level commands only: the debug binary takes seconds to fill and copy them.
        var weightsByFolder: [String: String] = [:]
        var parameterCounts: [URL: Int] = [:]
        for (index, net) in nets.enumerated() {
            let totals = try check(["compile", net.path, "--json", "--no-jit"])
            let document = try? JSONSerialization.jsonObject(with: Data(totals.out.utf8)) as? [String: Any]
            let summary = document?["totals"] as? [String: Any]
            parameterCounts[net] = summary?["params"] as? Int ?? 0
            let key = net.deletingLastPathComponent().path
            if weightsByFolder[key] == nil, summary?["partial"] as? Bool == false, parameterCounts[net]! <= Self.smallNet {
                let path = folder.appendingPathComponent("\(index).caffemodel").path
                if try check(["init", net.path, "-o", path]).status == 0 { weightsByFolder[key] = path }
            }
        }
        var withWeights = 0
        for (index, net) in nets.enumerated() {
            for phase in ["test", "train"] {
                _ = try check(["compile", net.path, "--phase", phase, "--no-jit"])
                guard parameterCounts[net, default: 0] <= Self.smallNet else { continue }
                _ = try check(["init", net.path, "--phase", phase, "-o", folder.appendingPathComponent("scratch.caffemodel").path])
                _ = try check(["export", net.path, "--phase", phase, "--output", folder.appendingPathComponent("\(index).npz").path])
                guard let weights = weightsByFolder[net.deletingLastPathComponent().path] else { continue }
                withWeights += 1
                _ = try check(["compile", net.path, "--phase", phase, "--no-jit", "--weights", weights])
                _ = try check(["export", net.path, "--phase", phase, "--weights", weights, "--output", folder.appendingPathComponent("\(index).npz").path])
            }
        }
        #expect(withWeights >= 30, "only \(withWeights) net/phase pairs had weights")
        // The whole pipeline (JIT compile, --emit llvm, time forward and backward, run, test) on the small nets.
        for relative in ["mnist/lenet.prototxt", "mnist/lenet_train_test.prototxt", "cifar10/cifar10_quick.prototxt",
                         "cifar10/cifar10_quick_train_test.prototxt"] {
            let net = Self.zoo.appendingPathComponent(relative).path
            guard FileManager.default.fileExists(atPath: net) else { continue }
            let weights = weightsByFolder[URL(fileURLWithPath: net).deletingLastPathComponent().path]
            let extra = weights.map { ["--weights", $0] } ?? []
            _ = try check(["compile", net])
            _ = try check(["compile", net] + extra)
            _ = try check(["compile", net, "--emit", "llvm"] + extra)
            _ = try check(["time", net, "--iterations", "1"] + extra)
            _ = try check(["time", net, "--iterations", "1", "--backward"] + extra)
            _ = try check(["run", net, "-o", folder.appendingPathComponent("out.npz").path] + extra)
            if let weights { _ = try check(["test", "--model", net, "--weights", weights, "--iterations", "1"]) }
        }
        #expect(crashes.isEmpty, "\(crashes.count) of \(runs) runs crashed:\n\(crashes.joined(separator: "\n"))")
    }
}
