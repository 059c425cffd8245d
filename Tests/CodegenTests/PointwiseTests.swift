import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing

/// The JIT'd pointwise kernel (`PointwiseKernel`) against the OpenBLAS GEMM + epilogue lowering,
/// over the column counts that exercise its tiling: fewer columns than one vector, one masked
/// tile, whole tiles plus a tail of one to three vectors, several column chunks per image (large
/// K), batches, with and without bias, with a fused leaky ReLU.
@Suite("Pointwise convolutions")
struct PointwiseTests {
    static func compiler(pointwise: Bool) throws -> NetCompiler {
        let compiler = try NetCompiler(threads: 2)
        compiler.pointwiseKernels = pointwise
        return compiler
    }

    /// (batch, input channels K, outputs M, height, width, bias)
    @Test("the pointwise kernel equals OpenBLAS + epilogue (within 1e-5 of the largest output)",
          arguments: [(1, 32, 64, 7, 7, true), (2, 16, 8, 3, 5, true), (1, 8, 16, 1, 1, false), (3, 24, 32, 4, 12, true),
                      (1, 64, 24, 14, 14, false), (2, 1024, 16, 10, 10, true), (1, 5, 8, 112, 112, true)])
    func againstBLAS(_ c: (Int, Int, Int, Int, Int, Bool)) throws {
        let (n, k, m, h, w, bias) = c
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(n) dim: \(k) dim: \(h) dim: \(w) } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: \(m) kernel_size: 1 bias_term: \(bias) } }
        """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "pointwise.prototxt"))
        graph.nodes[1].fusedActivation = .relu(negativeSlope: 0.1)
        var values = SeededValues(seed: 0x5851_F42D_4C95_7F2D, step: 1 / 700.0)
        let parameters = ["conv": [NDArray(shape: [m, k, 1, 1], data: values.next(m * k))] + (bias ? [NDArray(shape: [m], data: values.next(m))] : [])]
        let input = NDArray(shape: [n, k, h, w], data: values.next(n * k * h * w))
        let fast = try Self.compiler(pointwise: true).compile(graph: graph, parameters: parameters)
        let reference = try Self.compiler(pointwise: false).compile(graph: graph, parameters: parameters)
        #expect(Self.usesPointwiseKernel(fast) && !Self.usesPointwiseKernel(reference))
        let a = try fast.run(inputs: ["x": input])["y"]!, b = try reference.run(inputs: ["x": input])["y"]!
        #expect(a.shape == b.shape)
        let scale = b.data.map(abs).max()!
        let worst = zip(a.data, b.data).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5 * scale, "worst \(worst) of \(scale)")
    }

    @Test("output channels that are not a multiple of the kernel's rows stay with OpenBLAS")
    func ragged() throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 12 kernel_size: 1 } }
        """
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "ragged.prototxt"))
        let parameters = ["conv": [NDArray(shape: [12, 4, 1, 1], repeating: 0.5), NDArray(shape: [12], repeating: 1)]]
        let net = try Self.compiler(pointwise: true).compile(graph: graph, parameters: parameters)
        #expect(!Self.usesPointwiseKernel(net))
        let y = try net.run(inputs: ["x": NDArray(shape: [1, 4, 3, 3], repeating: 1)])["y"]!
        #expect(y.data.allSatisfy { $0 == 3 })
    }

    /// Whether a convolution ran as a GEMM step (the pointwise kernel replaces it).
    static func usesPointwiseKernel(_ net: CompiledNet) -> Bool {
        !net.executable.steps.contains { step in
            if case .gemm = step.action { return true }
            if case .items(let loop) = step.action { return loop.body.contains { if case .gemm = $0 { true } else { false } } }
            return false
        }
    }
}
