import Foundation
import SwiftJIT

/// A test precondition that was not met (missing tool or fixture): thrown so the test fails with a
/// readable message instead of being skipped.
struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Paths, temporary folders, the CLI binary, Python with onnx/onnxruntime, and seeded weights.
enum ExportFixtures {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let golden = shared.appendingPathComponent("golden")
    static let zoo = shared.appendingPathComponent("zoo")

    static func require(_ url: URL) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw FixtureError("missing \(url.path): clone the repository next to the team's shared/ folder (../shared)")
        }
        return url
    }

    /// Runs `body` with a fresh temporary folder that is deleted afterwards.
    static func withTempDir<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ExportTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    /// Runs a process and returns its exit status, stdout and stderr.
    static func run(_ executable: URL, _ arguments: [String], in directory: URL? = nil,
                    environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes concurrently so a chatty child cannot block on a full pipe; the semaphore
        // orders the reader's write before our read (polling Thread.isFinished does not: TSan).
        nonisolated(unsafe) var errData = Data()
        let read = DispatchSemaphore(value: 0)
        Thread {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            read.signal()
        }.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        read.wait()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// Runs the swiftjit binary built next to the test bundle, with a kernel cache of its own
    /// (removed afterwards), never the user's.
    static func swiftjit(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let bundle = Bundle.allBundles.map(\.bundleURL).first { $0.pathExtension == "xctest" }
        // The test executable's own folder first: a sanitizer build (another --scratch-path) keeps swiftjit there.
        let executable = Bundle.main.executableURL?.resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = [executable, bundle?.deletingLastPathComponent(), packageRoot.appendingPathComponent(".build/debug")].compactMap { $0 }
        guard let binary = candidates.map({ $0.appendingPathComponent("swiftjit") }).first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw FixtureError("missing the swiftjit binary (build it with `swift build --build-tests`)")
        }
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("ExportTests-kernels-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: cache) }
        return try run(binary, arguments, in: packageRoot, environment: ["SWIFTJIT_CACHE_DIR": cache.path])
    }

    /// Runs `script` with python3 (which must import numpy, onnx and onnxruntime) and returns stdout.
    static func python(_ script: String, _ arguments: [String]) throws -> String {
        let prelude = """
            import sys
            try:
                import numpy as np, onnx, onnxruntime as ort
            except Exception as e:
                print("PYTHON_MODULES_MISSING: %r" % (e,)); sys.exit(3)

            """
        let result: (status: Int32, out: String, err: String)
        do {
            result = try run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", prelude + script] + arguments)
        } catch {
            throw FixtureError("cannot launch python3 (\(error)); run tools/install-deps.sh")
        }
        if result.out.contains("PYTHON_MODULES_MISSING") {
            throw FixtureError("python3 cannot import numpy, onnx and onnxruntime; run tools/install-deps.sh (\(result.out))")
        }
        guard result.status == 0 else { throw FixtureError("the Python script exited with status \(result.status):\n\(result.out)\n\(result.err)") }
        return result.out
    }

    /// The last line of `python(…)`'s output, parsed as a JSON object.
    static func pythonJSON(_ script: String, _ arguments: [String]) throws -> [String: Any] {
        let output = try python(script, arguments)
        guard let line = output.split(separator: "\n").last,
              let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw FixtureError("the Python script printed no JSON:\n\(output)")
        }
        return object
    }

    /// A caffemodel for `net` whose every parameter is drawn from a seeded generator: weights
    /// uniform in ±sqrt(3/fan_in) (unit-variance outputs), biases and Scale shifts small, BatchNorm
    /// statistics plausible and stored with a scale factor of 2 (so the division is exercised).
    static func randomWeights(for net: URL, seed: UInt64) throws -> Caffe_NetParameter {
        let graph = try GraphBuilder(phase: .test, insertsSplits: false).build(try CaffeFiles.loadNet(path: net.path))
        var generator = SplitMix64(seed: seed)
        func uniform(_ count: Int, _ low: Float, _ high: Float) -> [Float] {
            (0..<count).map { _ in Float.random(in: low..<high, using: &generator) }
        }
        var model = Caffe_NetParameter()
        model.name = graph.name
        for node in graph.nodes where !node.parameters.isEmpty {
            var layer = Caffe_LayerParameter()
            layer.name = node.name
            layer.type = node.layer.type
            for (index, parameter) in node.parameters.enumerated() {
                let count = parameter.shape.count ?? 0
                var blob = Caffe_BlobProto()
                blob.shape.dim = parameter.shape.dims.map(Int64.init)
                switch (node.kind, index) {
                case (.batchNorm, 0): blob.data = uniform(count, -0.2, 0.2)
                case (.batchNorm, 1): blob.data = uniform(count, 1.0, 3.0)
                case (.batchNorm, _): blob.data = [2]
                case (.scale, 0): blob.data = uniform(count, 0.8, 1.2)
                case (_, 0) where parameter.role == "weights":
                    let fanIn = max(1, count / max(parameter.shape.dims.first ?? 1, 1))
                    let limit = Float(sqrt(3.0 / Double(fanIn)))
                    blob.data = uniform(count, -limit, limit)
                default: blob.data = uniform(count, -0.1, 0.1)
                }
                layer.blobs.append(blob)
            }
            model.layer.append(layer)
        }
        return model
    }
}

/// A small deterministic generator (SplitMix64) so random weights are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
