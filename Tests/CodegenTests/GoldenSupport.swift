import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// One Caffe golden case (`../shared/golden/{layers,nets}/<name>`): the net, its weights, inputs
/// and Caffe's outputs after one forward pass.
struct GoldenCase {
    static let shared: URL = {
        // Tests/CodegenTests/GoldenSupport.swift → package root → its parent, which holds shared/.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.deletingLastPathComponent().appendingPathComponent("shared")
    }()

    let name: String
    let directory: URL

    init(_ kind: String, _ name: String) throws {
        self.name = name
        directory = GoldenCase.shared.appendingPathComponent("golden/\(kind)/\(name)")
        guard FileManager.default.fileExists(atPath: directory.appendingPathComponent("net.prototxt").path) else {
            throw GoldenMissing(path: directory.path)
        }
    }

    func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    var phase: Caffe_Phase {
        get throws {
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path("case.json")))) as? [String: Any]
            return (json?["phase"] as? String) == "TRAIN" ? .train : .test
        }
    }

    func graph() throws -> Graph {
        try GraphBuilder(phase: phase).build(CaffeFiles.loadNet(path: path("net.prototxt")))
    }

    func parameters() throws -> [String: [NDArray]] {
        guard FileManager.default.fileExists(atPath: path("weights.caffemodel")) else { return [:] }
        return try CaffeParameters.arrays(from: CaffeFiles.loadWeights(path: path("weights.caffemodel")))
    }

    func inputs() throws -> [String: NDArray] {
        // A net made only of data sources (DummyData) has no inputs.npz.
        guard FileManager.default.fileExists(atPath: path("inputs.npz")) else { return [:] }
        return Dictionary(uniqueKeysWithValues: try NumPyFile.readArchive(path: path("inputs.npz")).entries.map { ($0.key, $0.array) })
    }

    func expected() throws -> NPZArchive { try NumPyFile.readArchive(path: path("outputs.npz")) }

    /// Compiles and runs the case and compares every key of outputs.npz with
    /// `|a − b| ≤ rtol · max|b| + atol`; returns the worst error relative to each blob's max |b|.
    @discardableResult
    func check(with compiler: Compiler, rtol: Float, atol: Float = 1e-6) throws -> Float {
        let net = try compiler.compile(graph: graph(), parameters: parameters())
        let actual = try net.run(inputs: inputs())
        let expected = try expected()
        #expect(!expected.isEmpty)
        var worst: Float = 0
        var report: [String] = []
        for (key, reference) in expected {
            guard let result = actual[key] else {
                Issue.record("\(name): no blob '\(key)' in the outputs")
                continue
            }
            guard result.shape == reference.shape else {
                Issue.record("\(name): blob '\(key)' has shape \(result.shape), Caffe's is \(reference.shape)")
                continue
            }
            let scale = reference.data.reduce(0) { max($0, abs($1)) }
            var maxError: Float = 0
            for (a, b) in zip(result.data, reference.data) { maxError = max(maxError, abs(a - b)) }
            if !(maxError <= rtol * scale + atol) {
                Issue.record("\(name): blob '\(key)' differs by \(maxError) (max |b| = \(scale), allowed \(rtol * scale + atol))")
            }
            let relative = scale > 0 ? maxError / scale : maxError
            worst = max(worst, relative)
            report.append("\(key) \(maxError)/\(scale)")
        }
        print("golden \(name): worst relative error \(worst) [\(report.joined(separator: ", "))]")
        return worst
    }
}

struct GoldenMissing: Error, CustomStringConvertible {
    var path: String
    var description: String { "golden case not found at \(path): the Caffe goldens live in ../shared/golden next to the package" }
}

/// One compiler for the whole test process: its kernel cache is shared across cases, like a session's.
let sharedCompiler: Compiler = {
    do { return try Compiler() } catch { fatalError("cannot create the JIT: \(error)") }
}()

/// The vector ISAs kernel tests run under, on any host: the host's own features (as
/// `$SWIFTJIT_CPU_FEATURES` leaves them) and the AVX2 path, the host's features without AVX-512 —
/// so an AVX-512 machine also tests the kernels an AVX2-only machine runs. On an AVX2 host the two
/// are the same features.
enum VectorISA: String, CaseIterable, Sendable, CustomStringConvertible {
    case host
    case avx2

    var description: String { rawValue }

    func features() throws -> CPUFeatures {
        switch self {
        case .host: try CPUFeatures.effective()
        case .avx2: try CPUFeatures.effective().applying("-avx512f", from: "the tests' AVX2 path")
        }
    }

    /// A new compiler for these features.
    func compiler(threads: Int = 2) throws -> Compiler {
        try Compiler(threads: threads, cpuFeatures: features())
    }

    /// One compiler per ISA for the whole test process, like `sharedCompiler`.
    var shared: Compiler { self == .host ? sharedCompiler : sharedAVX2Compiler }
}

private let sharedAVX2Compiler: Compiler = {
    do { return try VectorISA.avx2.compiler(threads: ProcessInfo.processInfo.activeProcessorCount) } catch { fatalError("cannot create the JIT: \(error)") }
}()

/// Reproducible test values: multiples of `step` in [−1000·step, 1000·step] from a 64-bit LCG,
/// the same on every run and machine.
struct SeededValues {
    var state: UInt64
    let step: Float

    init(seed: UInt64, step: Float) {
        state = seed
        self.step = step
    }

    mutating func next(_ count: Int) -> [Float] {
        (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) * step
        }
    }
}
