import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// One Caffe golden case (`../shared/golden/{layers,nets}/<name>`) run the way the golden README
/// prescribes: build the net with Split layers, load weights and inputs, seed the listed top
/// diffs, run forward and backward once, and compare outputs, parameter statistics after forward,
/// input diffs and parameter diffs with `|a − b| ≤ rtol · max|b| + atol`.
struct GoldenTrainingCase {
    static let shared: URL = {
        // Tests/TrainingTests/GoldenTrainingCase.swift → package root → its parent, which holds shared/.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.deletingLastPathComponent().appendingPathComponent("shared")
    }()

    let kind: String
    let name: String
    let directory: URL
    let info: [String: Any]

    init(_ kind: String, _ name: String) throws {
        self.kind = kind
        self.name = name
        directory = GoldenTrainingCase.shared.appendingPathComponent("golden/\(kind)/\(name)")
        let json = directory.appendingPathComponent("case.json")
        guard FileManager.default.fileExists(atPath: json.path) else { throw GoldenMissing(path: directory.path) }
        info = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any] ?? [:]
    }

    /// A case in the golden layout written by a test itself (net.prototxt, inputs.npz,
    /// top_diff.npz, grads.npz naming the differentiable inputs, optional case.json), for layers
    /// BVLC Caffe has no golden of (the forks' layers, N-D pooling).
    init(directory: URL) throws {
        kind = "generated"
        name = directory.lastPathComponent
        self.directory = directory
        let json = directory.appendingPathComponent("case.json")
        info = FileManager.default.fileExists(atPath: json.path)
            ? try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any] ?? [:] : [:]
    }

    func path(_ file: String) -> String { directory.appendingPathComponent(file).path }
    func exists(_ file: String) -> Bool { FileManager.default.fileExists(atPath: path(file)) }

    var phase: Caffe_Phase { (info["phase"] as? String) == "TRAIN" ? .train : .test }
    var hasBackward: Bool { (info["backward"] as? Bool) ?? false }
    var noGradInputs: Set<String> { Set(info["no_grad_inputs"] as? [String] ?? []) }

    func graph() throws -> Graph {
        try GraphBuilder(phase: phase, insertsSplits: true).build(CaffeFiles.loadNet(path: path("net.prototxt")))
    }

    func parameters() throws -> [String: [NDArray]] {
        guard exists("weights.caffemodel") else { return [:] }
        return try CaffeParameters.arrays(from: CaffeFiles.loadWeights(path: path("weights.caffemodel")))
    }

    func archive(_ file: String) throws -> [String: NDArray] {
        guard exists(file) else { return [:] }
        return Dictionary(uniqueKeysWithValues: try NumPyFile.readArchive(path: path(file)).entries.map { ($0.key, $0.array) })
    }

    /// Compiles (keeping every blob readable) and runs the case once.
    func run(with compiler: Compiler) throws -> TrainingNet {
        let net = try compiler.compileTraining(graph: graph(), parameters: parameters(), keepingAllBlobs: true)
        net.zeroParameterDiffs()
        net.setTopDiffs(try archive("top_diff.npz"))
        _ = try net.run(try archive("inputs.npz"), backward: hasBackward)
        return net
    }

    /// Runs the case and compares everything Caffe recorded; returns the worst error relative to
    /// each compared array's max |b| for forward and backward.
    @discardableResult
    func check(with compiler: Compiler, rtol: Float = 1e-5, atol: Float = 1e-6,
               absoluteTolerances: [String: Float] = [:]) throws -> (forward: Float, backward: Float) {
        let net = try run(with: compiler)
        var report: [String] = []
        var forward: Float = 0, backward: Float = 0
        func compare(_ label: String, _ actual: NDArray?, _ reference: NDArray, key: String = "") -> Float {
            let atol = absoluteTolerances[key] ?? atol
            guard let actual else {
                Issue.record("\(kind)/\(name): no \(label)")
                return .infinity
            }
            guard actual.count == reference.count else {
                Issue.record("\(kind)/\(name): \(label) has \(actual.count) values \(actual.shape), Caffe's \(reference.count) \(reference.shape)")
                return .infinity
            }
            let scale = reference.data.reduce(0) { max($0, abs($1)) }
            var error: Float = 0
            for (a, b) in zip(actual.data, reference.data) { error = max(error, abs(a - b)) }
            if !(error <= rtol * scale + atol) {
                Issue.record("\(kind)/\(name): \(label) differs by \(error) (max |b| = \(scale), allowed \(rtol * scale + atol))")
            }
            report.append("\(label) \(error)/\(scale)")
            return scale > 0 ? error / scale : error
        }
        for (key, reference) in try archive("outputs.npz") {
            forward = max(forward, compare("blob '\(key)'", net.blob(key), reference))
        }
        let values = net.parameterArrays()
        for (key, reference) in try archive("params_after_forward.npz") {
            forward = max(forward, compare("parameter \(key) after forward", parameter(values, key), reference))
        }
        if hasBackward {
            let diffs = net.parameterDiffs()
            for (key, reference) in try archive("grads.npz") {
                let actual = parameter(diffs, key) ?? net.blobDiff(key)
                backward = max(backward, compare("diff '\(key)'", actual, reference, key: key))
            }
        }
        print("golden \(kind)/\(name): forward \(forward) backward \(backward) [\(report.sorted().joined(separator: ", "))]")
        return (forward, backward)
    }

    /// `layer/index` in `arrays`, when `key` has that form and names a parameter.
    private func parameter(_ arrays: [String: [NDArray]], _ key: String) -> NDArray? {
        guard let slash = key.lastIndex(of: "/"), let index = Int(key[key.index(after: slash)...]) else { return nil }
        guard let blobs = arrays[String(key[..<slash])], blobs.indices.contains(index) else { return nil }
        return blobs[index]
    }
}

struct GoldenMissing: Error, CustomStringConvertible {
    var path: String
    var description: String { "golden case not found at \(path): the Caffe goldens live in ../shared/golden next to the package" }
}

/// One training compiler for the whole test process: its kernel cache is shared across cases.
let sharedTrainingCompiler: Compiler = {
    do { return try Compiler() } catch { fatalError("cannot create the JIT: \(error)") }
}()
