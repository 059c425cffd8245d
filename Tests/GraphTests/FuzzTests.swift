import Foundation
import Testing
import CaffeFormat
import Graph

/// Truncated and bit-flipped prototxt and caffemodel bytes: every read ends in a value or a thrown
/// `Diagnostic` — never a crash or a hang. Seeded, so a failure reproduces.
@Suite("fuzzing the readers")
struct FuzzTests {
    /// A small deterministic generator (SplitMix64), so runs are reproducible.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let zoo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared")

    static func sample(_ relative: String) throws -> [UInt8] {
        let url = zoo.appendingPathComponent(relative)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw SharedMissing(path: url.path)
        }
        return [UInt8](data)
    }

    struct SharedMissing: Error, CustomStringConvertible {
        var path: String
        var description: String { "missing \(path): the tests read ../shared beside the checkout" }
    }

    static func mutations(of bytes: [UInt8], seed: UInt64, count: Int) -> [[UInt8]] {
        var rng = SplitMix(state: seed)
        var out: [[UInt8]] = []
        for trial in 0..<count {
            var copy = bytes
            switch trial % 4 {
            case 0:  // truncate
                copy = Array(copy.prefix(Int.random(in: 0...copy.count, using: &rng)))
            case 1:  // flip bits
                for _ in 0..<Int.random(in: 1...8, using: &rng) where !copy.isEmpty {
                    copy[Int.random(in: 0..<copy.count, using: &rng)] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
                }
            case 2:  // overwrite with random bytes
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !copy.isEmpty {
                    copy[Int.random(in: 0..<copy.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            default:  // splice: drop a random range
                if copy.count > 2 {
                    let a = Int.random(in: 0..<copy.count, using: &rng), b = Int.random(in: a...copy.count, using: &rng)
                    copy.removeSubrange(a..<b)
                }
            }
            out.append(copy)
        }
        return out
    }

    @Test("mutated prototxt only ever throws Diagnostics, through parsing, upgrading and graph building")
    func prototxt() throws {
        for (index, file) in ["zoo/bvlc_googlenet/deploy.prototxt", "zoo/bvlc_legacy_v1/mnist/lenet_train_test.prototxt",
                              "zoo/bvlc_legacy_v0/imagenet_deploy.prototxt", "zoo/mnist/lenet_solver.prototxt"].enumerated() {
            let original = try Self.sample(file)
            for bytes in Self.mutations(of: original, seed: UInt64(index + 1), count: 250) {
                let text = String(decoding: bytes, as: UTF8.self)
                do {
                    let definition = try CaffeFiles.parseNet(text: text, file: file)
                    _ = try GraphBuilder(phase: .test).build(definition)
                } catch is Diagnostic {
                } catch {
                    Issue.record("\(file): a non-Diagnostic error: \(error)")
                }
            }
        }
    }

    @Test("mutated caffemodels only ever throw Diagnostics")
    func caffemodel() throws {
        let files = ["golden/nets/cifar10_quick/weights.caffemodel", "golden/layers/conv_k3_basic/weights.caffemodel",
                     "golden/train/sgd/snap_iter_20.solverstate"]
        for (index, file) in files.enumerated() {
            let original = try Self.sample(file)
            for bytes in Self.mutations(of: original, seed: UInt64(100 + index), count: 300) {
                do {
                    if file.hasSuffix("solverstate") {
                        let _: Caffe_SolverState = try CaffeFiles.decodeBinary(Data(bytes), file: file, what: "a .solverstate")
                    } else {
                        var net: Caffe_NetParameter = try CaffeFiles.decodeBinary(Data(bytes), file: file, what: "a .caffemodel")
                        _ = try NetUpgrader.upgrade(&net, file: file)
                    }
                } catch is Diagnostic {
                } catch {
                    Issue.record("\(file): a non-Diagnostic error: \(error)")
                }
            }
        }
    }

    @Test("a truncated caffemodel says so and names the file")
    func truncatedMessage() throws {
        let bytes = try Self.sample("golden/layers/conv_k3_basic/weights.caffemodel")
        let cut = Data(bytes.prefix(bytes.count - 7))
        #expect(throws: Diagnostic.self) {
            let _: Caffe_NetParameter = try CaffeFiles.decodeBinary(cut, file: "w.caffemodel", what: "a .caffemodel (binary NetParameter)")
        }
        do {
            let _: Caffe_NetParameter = try CaffeFiles.decodeBinary(cut, file: "w.caffemodel", what: "a .caffemodel (binary NetParameter)")
        } catch {
            #expect("\(error)".hasPrefix("w.caffemodel: cannot read a .caffemodel (binary NetParameter): it ends in the middle of a field (truncated) after reading \(cut.count) bytes"))
        }
        #expect(throws: Diagnostic.self) { _ = try CaffeFiles.loadWeights(path: "/nonexistent/w.caffemodel") }
    }
}
