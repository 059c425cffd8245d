import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing

/// Winograd F(2×2, 3×3) and F(4×4, 3×3) convolutions against Caffe's goldens and against the im2col lowering.
@Suite("Winograd convolutions")
struct WinogradTests {
    /// A compiler that runs every eligible 3×3 convolution as Winograd, however small.
    static let always: Compiler = {
        do {
            let compiler = try Compiler(threads: 2)
            compiler.options.winograd = WinogradPolicy(minimumTiles: 1, maximumBytes: .max, largeTileMinimumTiles: nil)
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    /// Every eligible 3×3 convolution as F(4×4, 3×3), however small.
    static let large: Compiler = {
        do {
            let compiler = try Compiler(threads: 2)
            compiler.options.winograd = WinogradPolicy(minimumTiles: 1, maximumBytes: .max, largeTileMinimumTiles: 1)
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    static let never: Compiler = {
        do {
            let compiler = try Compiler(threads: 2)
            compiler.options.winograd = nil
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    /// Whether a net runs some convolution as Winograd with α×α tiles (α² GEMM repeats).
    static func usesWinograd(_ net: CompiledNet, alpha: Int = 4) -> Bool {
        net.executable.steps.contains { step in
            if case .gemm(let g) = step.action { return g.repeats == alpha * alpha }
            if case .items(let loop) = step.action {
                return loop.body.contains { if case .gemm(let g) = $0 { return g.repeats == alpha * alpha } else { return false } }
            }
            return false
        }
    }

    @Test("3×3 stride-1 golden convolutions (odd 7×9 and 5×6 images, pad 0 and 1, two bottoms) match Caffe as Winograd F(2×2) and F(4×4)",
          arguments: ["conv_k3_basic", "conv_two_bottoms"])
    func golden(_ name: String) throws {
        let golden = try GoldenCase("layers", name)
        #expect(Self.usesWinograd(try Self.always.compile(graph: golden.graph(), parameters: golden.parameters()), alpha: 4))
        try golden.check(with: Self.always, rtol: 1e-5)
        #expect(Self.usesWinograd(try Self.large.compile(graph: golden.graph(), parameters: golden.parameters()), alpha: 6))
        try golden.check(with: Self.large, rtol: 1e-5)
    }

    @Test("the default policy picks F(4×4) for large images, F(2×2) for middling ones, im2col for small ones")
    func policy() throws {
        let compiler = try Compiler(threads: 2)
        for (side, alpha) in [(56, 6), (28, 6), (20, 4), (14, 4), (12, 0)] {
            let text = """
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 dim: \(side) dim: \(side) } } }
            layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
            """
            let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "policy.prototxt"))
            let parameters = ["conv": [NDArray(shape: [8, 8, 3, 3], repeating: 0.1), NDArray(shape: [8], repeating: 0)]]
            let net = try compiler.compile(graph: graph, parameters: parameters)
            #expect(Self.usesWinograd(net, alpha: 6) == (alpha == 6), "side \(side)")
            #expect(Self.usesWinograd(net, alpha: 4) == (alpha == 4), "side \(side)")
        }
    }

    @Test("Winograd equals im2col + GEMM (F(2×2) within 2e-6 of the largest output, F(4×4) within 1e-5), for pads 0–2, odd and even sizes, batches 1–3, bias and fused ReLU",
          arguments: [(1, 8, 16, 12, 12, 1), (2, 5, 7, 9, 7, 0), (3, 16, 8, 15, 10, 2), (1, 3, 33, 6, 5, 1), (1, 64, 32, 21, 19, 1)])
    func againstIm2col(_ c: (Int, Int, Int, Int, Int, Int)) throws {
        try againstIm2col(c, compiler: Self.always, alpha: 4, tolerance: 2e-6)
        try againstIm2col(c, compiler: Self.large, alpha: 6, tolerance: 1e-5)
    }

    @Test("banded Winograd (bands of tile rows, one band per thread at a time) equals im2col, with a partial last tile row, batches 1 and 2",
          arguments: [1, 2])
    func banded(_ n: Int) throws {
        let compiler = try Compiler(threads: 2)
        compiler.options.convolutionBanding = ConvolutionBanding(minimumBytes: 0, minimumColumns: 1)
        // 78×78 outputs: 20×20 tiles of 4×4 (the last row and column of tiles half full), in two
        // bands of 10 tile rows (the first divisor of 20 giving ≥ 192 tiles).
        try againstIm2col((n, 5, 6, 78, 78, 1), compiler: compiler, alpha: 6, tolerance: 1e-5, bands: 2)
    }

    func againstIm2col(_ c: (Int, Int, Int, Int, Int, Int), compiler: Compiler, alpha: Int, tolerance: Float, bands: Int? = nil) throws {
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
        let fast = try compiler.compile(graph: graph, parameters: parameters)
        #expect(Self.usesWinograd(fast, alpha: alpha))
        if let bands {
            let loops = fast.executable.steps.compactMap { step -> ItemLoop? in if case .items(let loop) = step.action { loop } else { nil } }
            #expect(loops.count == c.0 && loops.allSatisfy { $0.items == bands && $0.taskSlices })
        }
        let reference = try Self.never.compile(graph: graph, parameters: parameters)
        #expect(!Self.usesWinograd(reference, alpha: 4) && !Self.usesWinograd(reference, alpha: 6))
        let a = try fast.run(inputs: ["x": input])["y"]!.data, b = try reference.run(inputs: ["x": input])["y"]!.data
        let scale = b.map(abs).max()!
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        #expect(worst <= tolerance * scale, "α \(alpha): worst \(worst) of \(scale)")
    }
}
