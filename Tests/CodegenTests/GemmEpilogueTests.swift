import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing

/// A convolution's bias-and-ReLU epilogue runs on each GEMM row block's thread, right after the
/// block: the values are a naive convolution's.
@Suite("GEMM row-block epilogues")
struct GemmEpilogueTests {
    @Test("1×1 convolutions whose products split by rows (and one too small to split) add bias and ReLU per row block",
          arguments: [(256, 64, 14), (160, 32, 7), (8, 4, 3)])
    func matchesNaive(_ c: (outputs: Int, channels: Int, side: Int)) throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: \(c.channels) dim: \(c.side) dim: \(c.side) } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: \(c.outputs) kernel_size: 1 } }
        """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "epilogue.prototxt"))
        graph.nodes[1].fusedActivation = .relu(negativeSlope: 0.125)
        var values = SeededValues(seed: 5, step: 1 / 97.0)
        let weights = values.next(c.outputs * c.channels), bias = values.next(c.outputs)
        let spatial = c.side * c.side
        let input = NDArray(shape: [1, c.channels, c.side, c.side], data: values.next(c.channels * spatial))
        // The OpenBLAS path (the JIT'd panel GEMM, which has no separate epilogue, is
        // PanelGemmTests' subject).
        let compiler = try Compiler(threads: 2)
        compiler.options.panelGemms = false
        let net = try compiler.compile(graph: graph, parameters: ["conv": [NDArray(shape: [c.outputs, c.channels, 1, 1], data: weights),
                                                                         NDArray(shape: [c.outputs], data: bias)]])
        let steps = net.executable.steps
        #expect(steps.count == 2)
        if case .kernel(let k)? = steps.last?.action { #expect(k.rowsOfGemm) } else { Issue.record("no epilogue step") }
        let y = try net.run(inputs: ["x": input])["y"]!.data
        var worst: Float = 0, scale: Float = 0
        for o in 0..<c.outputs {
            for s in 0..<spatial {
                var sum = bias[o]
                for ch in 0..<c.channels { sum += weights[o * c.channels + ch] * input.data[ch * spatial + s] }
                let expected = max(sum, 0) + 0.125 * min(sum, 0)
                worst = max(worst, abs(expected - y[o * spatial + s]))
                scale = max(scale, abs(expected))
            }
        }
        #expect(worst <= 1e-5 * scale, "worst \(worst) of \(scale)")
    }
}
