import Foundation
import CaffeFormat
import Codegen
import Graph
import NumPy
import Testing

/// Nodes carry typed attributes decided once by their shape rules, and the lowerings read those,
/// not the layer's Caffe message: the graph and the kernels cannot disagree.
@Suite("typed node attributes")
struct NodeAttributesTests {
    @Test("shape rules resolve every spelling of a window into one geometry")
    func resolvedOnce() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 9 dim: 11 } } }
            layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                    convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride: 2 group: 2 bias_term: false } }
            layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE global_pooling: true } }
            layer { name: "ceil" type: "Pooling" bottom: "conv" top: "ceil" pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false } }
            layer { name: "fc" type: "InnerProduct" bottom: "ceil" top: "fc" inner_product_param { num_output: 3 axis: -3 transpose: true } }
            """
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text))
        let conv = try #require(graph.node(named: "conv")).convolutionGeometry()
        #expect(conv.kernel == [3, 1] && conv.pad == [1, 0] && conv.stride == [2, 2] && conv.group == 2 && !conv.biasTerm && conv.numOutput == 6)
        let global = try #require(graph.node(named: "pool")).poolingAttributes()
        #expect(global.method == .ave && global.geometry.isGlobal && global.geometry.kernel == [5, 6])
        let ceil = try #require(graph.node(named: "ceil")).poolingAttributes()
        #expect(ceil.method == .max && !ceil.geometry.roundsUp)
        let fc = try #require(graph.node(named: "fc")).innerProductAttributes()
        #expect(fc == InnerProductAttributes(axis: 1, numOutput: 3, transpose: true, biasTerm: true), "axis -3 of a 4-D blob is axis 1")
        #expect(throws: Diagnostic.self) { try #require(graph.node(named: "data")).convolutionGeometry() }
    }

    @Test("lowerings follow the attributes, not the Caffe message")
    func loweringsReadAttributes() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
            layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
            """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text))
        let data = NDArray(shape: [1, 1, 4, 4], data: (0..<16).map(Float.init))
        let compiler = try Compiler(threads: 1)
        let max = try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": data])["pool"]!.data
        #expect(max == [5, 7, 13, 15])
        // A pass that decides AVE changes the attributes only; the kernel must follow them.
        let id = try #require(graph.node(named: "pool")).id
        var attributes = try graph.nodes[id].poolingAttributes()
        attributes.method = .ave
        graph.nodes[id].attributes = .pooling(attributes)
        let average = try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": data])["pool"]!.data
        #expect(average == [2.5, 4.5, 10.5, 12.5])
    }

    @Test("axes, Eltwise coefficients and LRN constants are decided once; Caffe's either-or spellings are checked")
    func axesAndModes() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 4 dim: 4 } } }
            layer { name: "slice" type: "Slice" bottom: "data" top: "a" top: "b" slice_param { axis: -3 slice_point: 2 } }
            layer { name: "legacy" type: "Slice" bottom: "data" top: "c" top: "d" slice_param { slice_dim: 2 } }
            layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" concat_param { concat_dim: 1 } }
            layer { name: "sum" type: "Eltwise" bottom: "cat" bottom: "data" top: "sum" }
            layer { name: "weighted" type: "Eltwise" bottom: "cat" bottom: "data" top: "weighted" eltwise_param { coeff: 2 coeff: -1 } }
            layer { name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param { local_size: 3 alpha: 0.5 beta: 0.25 norm_region: WITHIN_CHANNEL } }
            """
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text))
        #expect(try #require(graph.node(named: "slice")).axisAttribute() == 1, "axis -3 of a 4-D blob is axis 1")
        #expect(try #require(graph.node(named: "legacy")).axisAttribute() == 2)
        #expect(try #require(graph.node(named: "cat")).axisAttribute() == 1)
        #expect(try #require(graph.node(named: "sum")).eltwiseAttributes() == EltwiseAttributes(operation: .sum, coefficients: [1, 1], stableProductGradient: true))
        #expect(try #require(graph.node(named: "weighted")).eltwiseAttributes().coefficients == [2, -1])
        #expect(try #require(graph.node(named: "norm")).lrnAttributes() == LRNAttributes(localSize: 3, region: .withinChannel, alpha: 0.5, beta: 0.25, k: 1))
        // Caffe requires one spelling or the other, never both (its CHECKs in Concat/SliceLayer::LayerSetUp).
        for (type, param) in [("Concat", "concat_param { axis: 1 concat_dim: 1 }"), ("Slice", "slice_param { axis: 1 slice_dim: 1 }")] {
            let both = """
                layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 } } }
                layer { name: "x" type: "\(type)" bottom: "data" \(type == "Slice" ? "top: \"p\" top: \"q\"" : "bottom: \"data\" top: \"x\"") \(param) }
                """
            #expect(throws: Diagnostic.self, "\(type) with both spellings") { try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: both)) }
        }
    }

    @Test("the Eltwise kernel follows its attributes: a pass changing the coefficients or the operation changes the output")
    func structureKernelsReadAttributes() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 2 } } }
            layer { name: "other" type: "Input" top: "other" input_param { shape { dim: 1 dim: 2 dim: 2 } } }
            layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "other" top: "sum" }
            """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text))
        let (x, y) = (NDArray(shape: [1, 2, 2], data: [1, 2, 3, 4]), NDArray(shape: [1, 2, 2], data: [10, 20, 30, 40]))
        let compiler = try Compiler(threads: 1)
        #expect(try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": x, "other": y])["sum"]!.data == [11, 22, 33, 44])
        let id = try #require(graph.node(named: "sum")).id
        graph.nodes[id].attributes = .eltwise(EltwiseAttributes(operation: .sum, coefficients: [1, -1], stableProductGradient: true))
        #expect(try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": x, "other": y])["sum"]!.data == [-9, -18, -27, -36])
        graph.nodes[id].attributes = .eltwise(EltwiseAttributes(operation: .max, coefficients: [1, 1], stableProductGradient: true))
        #expect(try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": x, "other": y])["sum"]!.data == [10, 20, 30, 40])
    }

    @Test("Softmax, SoftmaxWithLoss and Accuracy take their class axis from the node, canonical (axis: -1 becomes 2)")
    func classAxes() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 2 } } }
            layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 2 } } }
            layer { name: "prob" type: "Softmax" bottom: "data" top: "prob" softmax_param { axis: -1 } }
            layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" accuracy_param { axis: 2 } }
            """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text))
        let prob = try #require(graph.node(named: "prob")).id, acc = try #require(graph.node(named: "acc")).id
        #expect(try graph.nodes[prob].axisAttribute() == 2 && graph.nodes[acc].axisAttribute() == 2)
        // Rows (0, 1) and (0, 3) along axis 2; columns (0, 0) and (1, 3) along axis 1.
        let x = NDArray(shape: [1, 2, 2], data: [0, 1, 0, 3]), labels = NDArray(shape: [1, 2], data: [1, 1])
        let compiler = try Compiler(threads: 1)
        let byRows = try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": x, "label": labels])
        let e1 = 1 / (1 + exp(Float(1))), e2 = 1 / (1 + exp(Float(2))), e3 = 1 / (1 + exp(Float(3)))
        #expect(zip(byRows["prob"]!.data, [e1, 1 - e1, e3, 1 - e3]).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(byRows["acc"]!.data == [1])  // both rows' largest score is class 1, their label
        graph.nodes[prob].attributes = .axis(1)
        graph.nodes[acc].attributes = .axis(1)
        let byColumns = try compiler.compile(graph: graph, parameters: [:]).run(inputs: ["data": x, "label": labels])
        #expect(zip(byColumns["prob"]!.data, [0.5, e2, 0.5, 1 - e2]).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(byColumns["acc"]!.data == [0.5])  // column 0 is a tie (Caffe counts ties against the label), column 1 right
    }
}
