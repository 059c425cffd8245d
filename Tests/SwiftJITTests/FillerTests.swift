import Foundation
import Testing
import SwiftJIT

/// Caffe's fillers: each distribution's defining property, per-layer defaults, determinism.
@Suite("fillers")
struct FillerTests {
    func fill(_ type: String, shape: [Int], configure: (inout Caffe_FillerParameter) -> Void = { _ in }) throws -> [Float] {
        var p = Caffe_FillerParameter()
        p.type = type
        configure(&p)
        var generator = SeededGenerator(seed: 42, stream: "test")
        return try Filler(p).fill(shape: shape, generator: &generator)
    }

    @Test("xavier is uniform within ±sqrt(3/fan_in); msra has std sqrt(2/fan_in)")
    func scaledFillers() throws {
        let xavier = try fill("xavier", shape: [64, 32, 3, 3])
        let bound = Float((3.0 / (32 * 9)).squareRoot())
        #expect(xavier.allSatisfy { abs($0) <= bound })
        #expect(xavier.max()! > 0.9 * bound && xavier.min()! < -0.9 * bound)
        let msra = try fill("msra", shape: [64, 32, 3, 3])
        let std = (msra.map { Double($0 * $0) }.reduce(0, +) / Double(msra.count)).squareRoot()
        #expect(abs(std - (2.0 / (32 * 9)).squareRoot()) < 0.01)
    }

    @Test("gaussian mean/std, uniform range, positive_unitball rows sum to 1, sparse gaussian")
    func distributions() throws {
        let g = try fill("gaussian", shape: [10000]) { $0.mean = 3; $0.std = 0.5 }
        let mean = g.reduce(0, +) / Float(g.count)
        #expect(abs(mean - 3) < 0.02)
        let u = try fill("uniform", shape: [1000]) { $0.min = -2; $0.max = -1 }
        #expect(u.allSatisfy { $0 >= -2 && $0 < -1 })
        let ball = try fill("positive_unitball", shape: [4, 25])
        for r in 0..<4 { #expect(abs(ball[(r * 25)..<((r + 1) * 25)].reduce(0, +) - 1) < 1e-5) }
        let sparse = try fill("gaussian", shape: [100, 50]) { $0.sparse = 10 }
        let nonzero = Float(sparse.filter { $0 != 0 }.count) / Float(sparse.count)
        #expect(abs(nonzero - 0.1) < 0.02)
    }

    @Test("bilinear gives the upsampling kernel Caffe documents")
    func bilinear() throws {
        let k = try fill("bilinear", shape: [1, 1, 4, 4])
        let row: [Float] = [0.25, 0.75, 0.75, 0.25]
        for y in 0..<4 { for x in 0..<4 { #expect(abs(k[y * 4 + x] - row[y] * row[x]) < 1e-6) } }
    }

    @Test("an unknown filler type suggests the closest")
    func unknownType() {
        #expect(throws: Diagnostic.self) { try fill("xaiver", shape: [2]) }
        do { _ = try fill("xaiver", shape: [2]) } catch {
            #expect("\(error)" == "unknown filler type 'xaiver' — did you mean 'xavier'?\n  hint: one of: constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear")
        }
    }

    @Test("layer defaults: Scale 1, PReLU 0.25, BatchNorm zeros, shared params reuse the owner's; same seed, same values")
    func layerDefaults() throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
        layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }
        layer { name: "pr" type: "PReLU" bottom: "x" top: "x" }
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } inner_product_param { num_output: 5 bias_term: false weight_filler { type: "gaussian" std: 0.1 } } }
        layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } inner_product_param { num_output: 5 bias_term: false } }
        """
        let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: text))
        let values = try ParameterInitializer.initialize(graph, seed: 9)
        #expect(values["bn"]!.allSatisfy { $0.data.allSatisfy { $0 == 0 } })
        #expect(values["sc"]![0].data == [1, 1, 1] && values["sc"]![1].data == [0, 0, 0])
        #expect(values["pr"]![0].data == [0.25, 0.25, 0.25])
        #expect(values["a"]![0] == values["b"]![0])
        #expect(try ParameterInitializer.initialize(graph, seed: 9)["a"]![0] == values["a"]![0])
        #expect(try ParameterInitializer.initialize(graph, seed: 10)["a"]![0] != values["a"]![0])
    }

    @Test("swiftjit init writes a caffemodel that initializes every layer of its net")
    func initCommand() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-init-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("alexnet.caffemodel").path
        let net = CompileCommandTests.shared.appendingPathComponent("zoo/bvlc_alexnet/deploy.prototxt").path
        let result = try CompileCommandTests.run(["init", net, "--seed", "3", "-o", output, "--input", "data=1,3,227,227"])
        #expect(result.status == 0, "\(result.err)")
        #expect(result.out == "wrote \(output): 8 layers, 60,965,224 values (seed 3)\n")
        let check = try CompileCommandTests.run(["compile", net, "--weights", output])
        #expect(check.status == 0, "\(check.err)")
        #expect(check.out.contains("initialized 8 layers"))
        #expect(check.out.contains("not initialized (filled by their fillers): none"))
    }
}
