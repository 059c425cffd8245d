import Testing
import CaffeFormat
import Graph
import NumPy
@testable import Passes

/// BatchNorm/Scale folding and identity removal, checked on the graph and on the folded values.
@Suite("graph passes")
struct FoldBatchNormTests {
    static let text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
    layer { name: "conv" type: "Convolution" bottom: "x" top: "conv" convolution_param { num_output: 2 kernel_size: 1 bias_term: false } }
    layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 0 } }
    layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
    layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
    layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }
    layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "y" inner_product_param { num_output: 1 } }
    """

    @Test("conv → BatchNorm → Scale becomes one convolution with the folded weights and bias")
    func folds() throws {
        let graph = try GraphBuilder(insertsSplits: false).build(try CaffeFiles.parseNet(text: Self.text))
        let parameters: [String: [NDArray]] = [
            "conv": [NDArray(shape: [2, 1, 1, 1], data: [2, 3])],
            "bn": [NDArray([2, 8]), NDArray([4, 16]), NDArray([2])],      // mean 1, 4; variance 2, 8 (÷ factor 2)
            "sc": [NDArray([10, 100]), NDArray([0.5, -1])],
            "ip": [NDArray(shape: [1, 18], repeating: 1), NDArray([0])],
        ]
        let result = try InferencePasses.run(graph, parameters: parameters)
        #expect(result.graph.nodes.map(\.name) == ["x", "conv", "ip"])
        #expect(result.report == ["folded 1 BatchNorm/Scale chain into their convolutions (2 layers removed)",
                                  "removed 1 identity layer (Dropout in TEST, Split)",
                                  "fused 1 ReLU layer into the epilogues of the layers before them"])
        #expect(result.graph.node(named: "conv")?.fusedActivation == .relu(negativeSlope: 0))
        // w' = w·γ/√σ², b' = (0 − μ)·γ/√σ² + β
        let folded = result.parameters["conv"]!
        #expect(abs(folded[0].data[0] - 2 * 10 / Float(2).squareRoot()) < 1e-5)
        #expect(abs(folded[0].data[1] - 3 * 100 / Float(8).squareRoot()) < 1e-4)
        #expect(abs(folded[1].data[0] - (-1 * 10 / Float(2).squareRoot() + 0.5)) < 1e-5)
        #expect(abs(folded[1].data[1] - (-4 * 100 / Float(8).squareRoot() - 1)) < 1e-4)
        #expect(result.graph.node(named: "conv")?.layer.convolutionParam.biasTerm == true)
        // The typed attributes the lowerings read say so too, or the folded bias would be dropped.
        #expect(try result.graph.node(named: "conv")?.convolutionGeometry().biasTerm == true)
        #expect(result.parameters["bn"] == nil && result.parameters["sc"] == nil)
        // Renumbered graph stays consistent: every input is produced earlier, names and shapes kept.
        #expect(result.graph.value(named: "y")?.shape == TensorShape([1, 1]))
        for node in result.graph.nodes {
            for input in node.inputs { #expect(result.graph.values[input].producer.map { $0 < node.id } ?? true) }
        }
    }

    @Test("a BatchNorm whose input has another reader, or that uses batch statistics, stays")
    func keepsWhenUnsafe() throws {
        let prefix = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
        """
        let sharedInput = prefix + """
        layer { name: "bn" type: "BatchNorm" bottom: "c" top: "n" }
        layer { name: "peek" type: "AbsVal" bottom: "c" top: "p" }
        """
        let batchStatistics = prefix + """
        layer { name: "bn" type: "BatchNorm" bottom: "c" top: "n" batch_norm_param { use_global_stats: false } }
        """
        for text in [sharedInput, batchStatistics] {
            let graph = try GraphBuilder(insertsSplits: false).build(try CaffeFiles.parseNet(text: text))
            var context = PassContext(graph: graph, parameters: ["conv": [NDArray(shape: [2, 1, 1, 1], data: [1, 1]), NDArray([0, 0])],
                                                                "bn": [NDArray([0, 0]), NDArray([1, 1]), NDArray([1])]])
            try FoldBatchNorm().run(&context)
            #expect(context.graph.nodes.count == graph.nodes.count)
            #expect(context.report.isEmpty)
        }
    }
}
