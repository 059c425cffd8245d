import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing

/// The JIT'd panel GEMM (`PanelGemm`) against the OpenBLAS GEMM + epilogue lowering. 1×1
/// convolutions cover its tiling: fewer columns than one vector, one masked tile, whole tiles
/// plus a tail of one to three vectors (the last half or all of a vector's lanes) or of whole vectors and a few
/// columns computed column by column, several column chunks per
/// image (large K), batches, with and without bias. Convolutions with im2col columns (3×3 at
/// 7×7, 7×7 stride 2 on 3 channels, 1×1 stride 2, dilated, padded asymmetric) cover its use image
/// by image in an item loop; grouped ones, its (image, group) matrices. Every case runs with the
/// host's tile and the AVX2 one (8 × 3·16 and 4 × 3·8 on an AVX-512 host). The AVX2 tile packs X
/// (`PackedPanelGemm`) for K = 64–512 over at least 64 columns and deeper K over at least 256:
/// K = 514 and 1024 over 272 columns are three (the last block shorter) and four K blocks, 40 outputs
/// there several panel groups, the last one partial; K = 1024 over 100 columns stays with OpenBLAS on AVX2,
/// K = 400 over 49 columns and K = 2100 over one column run the in-place kernel, K = 600 and 2100 over 49 OpenBLAS.
@Suite("Panel GEMM convolutions")
struct PanelGemmTests {
    static func compiler(panels: Bool, _ isa: VectorISA) throws -> Compiler {
        let compiler = try isa.compiler()
        compiler.options.panelGemms = panels
        compiler.options.winograd = nil
        return compiler
    }

    struct Case: CustomStringConvertible, Sendable {
        var n = 1, k = 8, m = 16, h = 7, w = 7, bias = true
        var conv = "kernel_size: 1"
        var description: String { "n\(n) c\(k)→\(m) \(h)×\(w) \(conv) bias \(bias)" }
    }

    static let cases: [Case] = [
        Case(k: 32, m: 64), Case(n: 2, k: 16, m: 8, h: 3, w: 5), Case(h: 1, w: 1, bias: false), Case(n: 3, k: 24, m: 32, h: 4, w: 12),
        Case(k: 64, m: 24, h: 14, w: 14, bias: false), Case(h: 4, w: 17), Case(n: 2, h: 1, w: 73), Case(n: 2, k: 1024, m: 16, h: 10, w: 10), Case(k: 5, m: 8, h: 112, w: 112),
        // Tails that end column by column (`PanelGemm.tailByColumns`): 1 column after a whole tile with K not a
        // multiple of the partial sums (8 per column), 3 columns alone (2 sums each, K odd), 13 columns, and
        // 13×13 (AVX-512: a tile, a whole vector, then 9 columns; AVX2: 7 tiles and 1 column).
        Case(k: 19, m: 8, h: 7, w: 7), Case(n: 2, k: 37, m: 16, h: 1, w: 3), Case(k: 21, m: 16, h: 1, w: 13, bias: false),
        Case(n: 2, k: 29, m: 16, h: 13, w: 13),
        // Deep and narrow: the AVX2 tile takes them in place (7×7 up to K = 512, fewer columns than a vector at any K).
        Case(k: 400, m: 16, h: 7, w: 7), Case(k: 600, m: 16, h: 7, w: 7), Case(n: 2, k: 2100, m: 24, h: 1, w: 1), Case(k: 2100, m: 8, h: 7, w: 7, bias: false),
        Case(n: 2, k: 514, m: 40, h: 16, w: 17), Case(k: 1024, m: 40, h: 16, w: 17, bias: false),
        Case(k: 32, m: 32, conv: "kernel_size: 3 pad: 1"), Case(n: 2, k: 3, m: 16, h: 29, w: 31, conv: "kernel_size: 7 stride: 2 pad: 3"),
        Case(n: 2, k: 16, m: 24, h: 14, w: 13, conv: "kernel_size: 1 stride: 2"),
        Case(k: 4, m: 8, h: 9, w: 11, conv: "kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 0 dilation: 2"),
        Case(n: 2, k: 12, m: 48, h: 13, w: 13, conv: "kernel_size: 5 pad: 2 group: 3"),   // CaffeNet's conv2, smaller
        Case(n: 3, k: 8, m: 16, h: 5, w: 7, bias: false, conv: "kernel_size: 1 group: 2"),
    ]

    @Test("the panel GEMM equals OpenBLAS + epilogue (within 1e-5 of the largest output), with the host's tile and the AVX2 one",
          arguments: cases, VectorISA.allCases)
    func againstBLAS(_ c: Case, _ isa: VectorISA) throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(c.n) dim: \(c.k) dim: \(c.h) dim: \(c.w) } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: \(c.m) \(c.conv) bias_term: \(c.bias) } }
        """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "panels.prototxt"))
        graph.nodes[1].fusedActivation = .relu(negativeSlope: 0.1)
        let weightShape = graph.nodes[1].parameters[0].shape.dims
        var values = SeededValues(seed: 0x5851_F42D_4C95_7F2D, step: 1 / 700.0)
        let weights = NDArray(shape: weightShape, data: values.next(weightShape.reduce(1, *)))
        let parameters = ["conv": [weights] + (c.bias ? [NDArray(shape: [c.m], data: values.next(c.m))] : [])]
        let input = NDArray(shape: [c.n, c.k, c.h, c.w], data: values.next(c.n * c.k * c.h * c.w))
        let fast = try Self.compiler(panels: true, isa).compile(graph: graph, parameters: parameters)
        let reference = try Self.compiler(panels: false, isa).compile(graph: graph, parameters: parameters)
        let a = try fast.run(inputs: ["x": input])["y"]!, b = try reference.run(inputs: ["x": input])["y"]!
        // Products the tile does not take (on AVX2: K > 256 over fewer than 64 columns) stay with OpenBLAS.
        let depth = weightShape[1...].reduce(1, *), tile = PanelGemm.Tile.forLanes(try isa.features().vectorLanes)
        #expect(Self.runsGemm(fast) == !tile.takes(depth: depth, columns: b.shape[2...].reduce(1, *)) && Self.runsGemm(reference))
        #expect(a.shape == b.shape)
        let scale = b.data.map(abs).max()!
        let worst = zip(a.data, b.data).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5 * scale, "\(c): worst \(worst) of \(scale)")
    }

    @Test("output channels (per group) that are not a multiple of the tile's rows (8 with AVX-512, 4 with AVX2) stay with OpenBLAS",
          arguments: ["num_output: 5 kernel_size: 1", "num_output: 6 kernel_size: 3 pad: 1 group: 2"], VectorISA.allCases)
    func staysWithBLAS(_ conv: String, _ isa: VectorISA) throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { \(conv) } }
        """
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "ragged.prototxt"))
        let weightShape = graph.nodes[1].parameters[0].shape.dims, m = weightShape[0]
        let parameters = ["conv": [NDArray(shape: weightShape, repeating: 0.5), NDArray(shape: [m], repeating: 1)]]
        let net = try Self.compiler(panels: true, isa).compile(graph: graph, parameters: parameters)
        #expect(Self.runsGemm(net))
        let y = try net.run(inputs: ["x": NDArray(shape: [1, 4, 3, 3], repeating: 1)])["y"]!
        // Every input is 1: an output is 1 + 0.5 × its taps inside the image (a group's 2 channels × 9 at the centre).
        if conv.contains("kernel_size: 1") { #expect(y.data.allSatisfy { $0 == 3 }) } else { #expect(y.data[4] == 10) }
    }

    /// Whether the convolution ran as an OpenBLAS GEMM step (the panel GEMM replaces it).
    static func runsGemm(_ net: CompiledNet) -> Bool {
        net.executable.steps.contains { step in
            if case .gemm = step.action { return true }
            if case .items(let loop) = step.action { return loop.body.contains { if case .gemm = $0 { true } else { false } } }
            return false
        }
    }
}
