import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Testing

/// InnerProducts over a few rows with large weights run as weight panels instead of a GEMM.
@Suite("InnerProduct weight panels")
struct InnerProductPanelTests {
    @Test("a few rows times a 1024×1024 weight matrix by panels equals the plain product (either weight layout, bias, fused ReLU)",
          arguments: [(2, false), (5, true), (8, false)])
    func panels(_ c: (Int, Bool)) throws {
        let (m, transpose) = c
        let (k, n) = (1024, 1024)
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(m) dim: 4 dim: 16 dim: 16 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: \(n) transpose: \(transpose) } }
        """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "panels.prototxt"))
        graph.nodes[1].fusedActivation = .relu(negativeSlope: 0)
        var values = SeededValues(seed: 12345, step: 1 / 1000.0)
        func random(_ count: Int) -> [Float] { values.next(count) }
        let weights = random(n * k), bias = random(n), x = random(m * k)
        let parameters = ["ip": [NDArray(shape: transpose ? [k, n] : [n, k], data: weights), NDArray(shape: [n], data: bias)]]
        let net = try sharedCompiler.compile(graph: graph, parameters: parameters)
        let usesPanels = net.executable.steps.contains { step in
            if case .kernel(let kernel) = step.action { return kernel.kernel.name.hasPrefix("ip") } else { return false }
        }
        #expect(usesPanels)
        let y = try net.run(inputs: ["x": NDArray(shape: [m, 4, 16, 16], data: x)])["y"]!.data
        var worst: Float = 0, largest: Float = 0
        for i in 0..<m {
            for j in 0..<n {
                var sum: Float = 0
                for p in 0..<k { sum += x[i * k + p] * (transpose ? weights[p * n + j] : weights[j * k + p]) }
                let expected = max(sum + bias[j], 0)
                worst = max(worst, abs(y[i * n + j] - expected))
                largest = max(largest, abs(expected))
            }
        }
        #expect(worst <= 1e-5 * largest, "worst \(worst) of \(largest)")
    }
}
