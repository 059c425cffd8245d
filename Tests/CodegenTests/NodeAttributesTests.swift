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
}
