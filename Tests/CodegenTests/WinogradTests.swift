import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Testing

/// Winograd F(2×2, 3×3) convolutions against Caffe's goldens and against the im2col lowering.
@Suite("Winograd convolutions")
struct WinogradTests {
    /// A compiler that runs every eligible 3×3 convolution as Winograd, however small.
    static let always: NetCompiler = {
        do {
            let compiler = try NetCompiler(threads: 2)
            compiler.winograd = WinogradPolicy(minimumTiles: 1, maximumBytes: .max)
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    static let never: NetCompiler = {
        do {
            let compiler = try NetCompiler(threads: 2)
            compiler.winograd = nil
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    static func usesWinograd(_ net: CompiledNet) -> Bool {
        net.executable.steps.contains { step in
            if case .gemm(let g) = step.action { return g.repeats == 16 }
            if case .items(let loop) = step.action {
                return loop.body.contains { if case .gemm(let g) = $0 { return g.repeats == 16 } else { return false } }
            }
            return false
        }
    }

    @Test("3×3 stride-1 golden convolutions (odd 7×9 and 5×6 images, pad 0 and 1, two bottoms) match Caffe as Winograd",
          arguments: ["conv_k3_basic", "conv_two_bottoms"])
    func golden(_ name: String) throws {
        let golden = try GoldenCase("layers", name)
        #expect(Self.usesWinograd(try Self.always.compile(graph: golden.graph(), parameters: golden.parameters())))
        try golden.check(with: Self.always, rtol: 1e-5)
    }

    @Test("Winograd equals im2col + GEMM within 2e-6 of the largest output, for pads 0–2, odd and even sizes, batches 1–3, bias and fused ReLU",
          arguments: [(1, 8, 16, 12, 12, 1), (2, 5, 7, 9, 7, 0), (3, 16, 8, 15, 10, 2), (1, 3, 33, 6, 5, 1)])
    func againstIm2col(_ c: (Int, Int, Int, Int, Int, Int)) throws {
        let (n, channels, outputs, h, w, pad) = c
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(n) dim: \(channels) dim: \(h) dim: \(w) } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: \(outputs) kernel_size: 3 pad: \(pad) } }
        """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "winograd.prototxt"))
        graph.nodes[1].fusedActivation = .relu(negativeSlope: 0.1)
        var values = SeededValues(seed: 0x9E37_79B9_7F4A_7C15, step: 1 / 500.0)
        func random(_ count: Int) -> [Float] { values.next(count) }
        let parameters = ["conv": [NDArray(shape: [outputs, channels, 3, 3], data: random(outputs * channels * 9)),
                                   NDArray(shape: [outputs], data: random(outputs))]]
        let input = NDArray(shape: [n, channels, h, w], data: random(n * channels * h * w))
        let fast = try Self.always.compile(graph: graph, parameters: parameters)
        #expect(Self.usesWinograd(fast))
        let reference = try Self.never.compile(graph: graph, parameters: parameters)
        #expect(!Self.usesWinograd(reference))
        let a = try fast.run(inputs: ["x": input])["y"]!.data, b = try reference.run(inputs: ["x": input])["y"]!.data
        let scale = b.map(abs).max()!
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        #expect(worst <= 2e-6 * scale, "worst \(worst) of \(scale)")
    }
}
