import CaffeFormat
import Graph
import NumPy
import Testing
@testable import Passes

/// ReLU fusion: which ReLUs fold into their producer, and which must stay a layer of their own.
@Suite("ReLU fusion")
struct FuseActivationTests {
    static let input = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
    layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }
    """

    func fused(_ text: String) throws -> PassContext {
        let graph = try GraphBuilder(insertsSplits: false).build(try CaffeFiles.parseNet(text: Self.input + text))
        var context = PassContext(graph: graph, parameters: [:])
        try FuseActivation().run(&context)
        return context
    }

    @Test("a leaky ReLU after a convolution, in place or not, becomes the convolution's epilogue")
    func fusesSoleReader() throws {
        for text in [#"layer { name: "relu" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.25 } }"#
                        + #"layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { kernel_size: 3 } }"#,
                     #"layer { name: "relu" type: "ReLU" bottom: "c" top: "r" relu_param { negative_slope: 0.25 } }"#
                        + #"layer { name: "pool" type: "Pooling" bottom: "r" top: "p" pooling_param { kernel_size: 3 } }"#] {
            let context = try fused(text)
            #expect(context.graph.nodes.map(\.name) == ["x", "conv", "pool"])
            #expect(context.graph.node(named: "conv")?.fusedActivation == .relu(negativeSlope: 0.25))
            let pool = context.graph.node(named: "pool")!
            #expect(context.graph.values[pool.inputs[0]].producer == context.graph.node(named: "conv")?.id)
        }
    }

    @Test("a ReLU stays when the value before it has another reader, when its top is a renamed net output, or after a Pooling")
    func keepsWhenUnsafe() throws {
        let otherReader = """
        layer { name: "relu" type: "ReLU" bottom: "c" top: "r" }
        layer { name: "peek" type: "AbsVal" bottom: "c" top: "a" }
        """
        let renamedOutput = #"layer { name: "relu" type: "ReLU" bottom: "c" top: "r" }"#
        let notAProducer = """
        layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { kernel_size: 3 } }
        layer { name: "relu" type: "ReLU" bottom: "p" top: "p" }
        """
        for text in [otherReader, renamedOutput, notAProducer] {
            let context = try fused(text)
            #expect(context.graph.node(named: "relu") != nil, "\(text)")
            #expect(context.graph.nodes.allSatisfy { $0.fusedActivation == nil })
            #expect(context.report.isEmpty)
        }
    }

    @Test("an in-place ReLU that ends the net fuses, and the net's output keeps its name")
    func fusesInPlaceOutput() throws {
        let context = try fused(#"layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }"#)
        #expect(context.graph.nodes.map(\.name) == ["x", "conv"])
        #expect(context.graph.outputs.map { context.graph.values[$0].name } == ["c"])
    }
}
