import CaffeFormat
@testable import Codegen
import Foundation
import Graph
import NumPy
import Runtime
import Testing

/// The rows of `array` (first axis) whose selector value is non-zero in C's sense, as Caffe's
/// `FilterLayer` picks them: the reference the tests compare with.
func selectRows(_ array: NDArray, _ selector: [Float]) -> NDArray {
    let inner = array.shape.dropFirst().reduce(1, *)
    let rows = selector.indices.filter { selector[$0] != 0 || selector[$0].isNaN }
    return NDArray(shape: [rows.count] + array.shape.dropFirst(), data: rows.flatMap { array.data[($0 * inner)..<(($0 + 1) * inner)] })
}

/// Filter's data-dependent row count in compiled nets: Caffe resizes the tops at every Forward.
@Suite("Filter row counts")
struct FilterRowTests {
    @Test("the golden Filter follows the selected count from run to run: 3, 1, 4 and 0 rows, then 3 again without compiling")
    func countChanges() throws {
        let golden = try GoldenCase("layers", "filter")
        let compiler = try Compiler(threads: 1)
        let net = try compiler.compile(graph: golden.graph(), parameters: golden.parameters())
        #expect(net.filterRows?.current == [4] && net.filterRows?.specializations == 0)
        var inputs = try golden.inputs()
        let expected = try golden.expected()
        for (selector, specializations) in [([Float]([1, 0, 1, 1]), 1), ([0, 1, 0, 0], 2), ([1, 1, 1, 1], 2), ([0, 0, 0, 0], 3), ([1, 0, 1, 1], 3)] {
            inputs["sel"] = NDArray(shape: [4], data: selector)
            let outputs = try net.run(inputs: inputs)
            let fx = selectRows(inputs["x"]!, selector), fz = selectRows(inputs["z"]!, selector)
            #expect(outputs["fx"]?.shape == fx.shape && outputs["fx"]?.data == fx.data, "\(selector)")
            #expect(outputs["fz"]?.shape == fz.shape && outputs["fz"]?.data == fz.data, "\(selector)")
            #expect(outputs["x1"]?.data == inputs["x"]!.data)
            #expect(net.filterRows?.current == [fx.shape[0]])
            #expect(net.filterRows?.specializations == specializations, "\(selector): a count seen before reuses its variant")
            if selector == [1, 0, 1, 1] {
                #expect(outputs["fx"]?.data == expected["fx"]?.data && outputs["fz"]?.data == expected["fz"]?.data)
            }
        }
        // Back to a count already seen: nothing new is compiled, not even lowered.
        let kernels = compiler.cache.compileCount
        inputs["sel"] = NDArray(shape: [4], data: [0, 1, 0, 0])
        _ = try net.run(inputs: inputs)
        #expect(compiler.cache.compileCount == kernels && net.filterRows?.specializations == 3)
    }

    @Test("a selector value counts as selected when C's if (x) is true: NaN and 2 select, 0 and -0 do not")
    func truthiness() throws {
        let golden = try GoldenCase("layers", "filter")
        let net = try sharedCompiler.compile(graph: golden.graph(), parameters: golden.parameters())
        var inputs = try golden.inputs()
        inputs["sel"] = NDArray(shape: [4], data: [.nan, -0.0, 2, 0])
        let fx = try net.run(inputs: inputs)["fx"]!
        #expect(fx.data == selectRows(inputs["x"]!, [1, 0, 1, 0]).data)
    }

    static let downstream = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 dim: 2 } } }
    layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 5 dim: 1 } } }
    layer { name: "scale" type: "Power" bottom: "x" top: "x2" power_param { scale: 2 } }
    layer { name: "pick" type: "Filter" bottom: "x2" bottom: "sel" top: "fx" }
    layer { name: "ip" type: "InnerProduct" bottom: "fx" top: "ip" inner_product_param { num_output: 4 } }
    layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
    layer { name: "both" type: "Concat" bottom: "fx" bottom: "x2" top: "both" concat_param { axis: 0 } }
    layer { name: "sum" type: "Reduction" bottom: "both" top: "sum" reduction_param { axis: 1 } }
    """

    /// The same layers with the selected rows fed directly (no Filter), as the reference.
    static func reference(rows: Int) -> String {
        """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 dim: 2 } } }
        layer { name: "fx" type: "Input" top: "fx" input_param { shape { dim: \(rows) dim: 3 dim: 2 } } }
        layer { name: "scale" type: "Power" bottom: "x" top: "x2" power_param { scale: 2 } }
        layer { name: "ip" type: "InnerProduct" bottom: "fx" top: "ip" inner_product_param { num_output: 4 } }
        layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
        layer { name: "both" type: "Concat" bottom: "fx" bottom: "x2" top: "both" concat_param { axis: 0 } }
        layer { name: "sum" type: "Reduction" bottom: "both" top: "sum" reduction_param { axis: 1 } }
        """
    }

    @Test("layers below a Filter (InnerProduct, Softmax, a Concat with a blob from before it) see only the selected rows",
          arguments: [true, false])
    func downstreamLayers(_ keepingAll: Bool) throws {
        let weights: [String: [NDArray]] = ["ip": [NDArray(shape: [4, 6], data: (0..<24).map { Float($0 % 7) * 0.25 - 0.5 }),
                                                   NDArray(shape: [4], data: [0.1, -0.2, 0.3, -0.4])]]
        let net = try sharedCompiler.compile(graph: graph(Self.downstream), parameters: weights, keeping: keepingAll ? .all : .outputs)
        let x = NDArray(shape: [5, 3, 2], data: (0..<30).map { sin(Float($0)) })
        for selector: [Float] in [[0, 1, 1, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0]] {
            let outputs = try net.run(inputs: ["x": x, "sel": NDArray(shape: [5, 1], data: selector)])
            let x2 = NDArray(shape: x.shape, data: x.data.map { $0 * 2 })
            let fx = selectRows(x2, selector)
            let reference = try sharedCompiler.compile(graph: graph(Self.reference(rows: fx.shape[0])), parameters: weights, keeping: .all)
            let expected = try reference.run(inputs: ["x": x, "fx": fx])
            for name in ["prob", "sum"] + (keepingAll ? ["fx", "ip", "both"] : []) {
                #expect(outputs[name]?.shape == expected[name]?.shape, "\(selector): '\(name)'")
                #expect(outputs[name]?.data == expected[name]?.data, "\(selector): '\(name)'")
            }
        }
    }

    static let chained = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 6 dim: 2 } } }
    layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 6 } } }
    layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 6 } } }
    layer { name: "first" type: "Filter" bottom: "x" bottom: "b" bottom: "a" top: "xa" top: "ba" }
    layer { name: "second" type: "Filter" bottom: "xa" bottom: "ba" top: "xab" }
    layer { name: "double" type: "Power" bottom: "xab" top: "y" power_param { scale: 2 } }
    """

    @Test("two Filters in a chain: each guard re-specializes for its own count")
    func chainedFilters() throws {
        let compiler = try Compiler(threads: 1)
        let net = try compiler.compile(graph: graph(Self.chained), parameters: [:])
        #expect(net.filterRows?.current == [6, 6])
        let x = NDArray(shape: [6, 2], data: (0..<12).map(Float.init))
        for (a, b): ([Float], [Float]) in [([1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 0, 1]), ([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]),
                                           ([0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 1, 1]), ([1, 0, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1])] {
            let outputs = try net.run(inputs: ["x": x, "a": NDArray(shape: [6], data: a), "b": NDArray(shape: [6], data: b)])
            let both = zip(a, b).map { $0 != 0 && $1 != 0 ? Float(1) : 0 }
            let expected = selectRows(x, both)
            #expect(outputs["y"]?.shape == expected.shape, "\(a) \(b)")
            #expect(outputs["y"]?.data == expected.data.map { $0 * 2 }, "\(a) \(b)")
            #expect(net.filterRows?.current == [a.filter { $0 != 0 }.count, expected.shape[0]])
        }
    }

    @Test("an Input layer written after the Filter is fed again in the variant a run moves to")
    func inputAfterFilter() throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 } } }
        layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 4 } } }
        layer { name: "pick" type: "Filter" bottom: "x" bottom: "sel" top: "fx" }
        layer { name: "w" type: "Input" top: "w" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "join" type: "Concat" bottom: "fx" bottom: "w" top: "y" concat_param { axis: 0 } }
        """
        let net = try sharedCompiler.compile(graph: graph(text), parameters: [:], keeping: .outputs)
        let x = NDArray(shape: [4, 2], data: [1, 2, 3, 4, 5, 6, 7, 8]), w = NDArray(shape: [1, 2], data: [-1, -2])
        for selector: [Float] in [[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 1, 0]] {
            let y = try net.run(inputs: ["x": x, "sel": NDArray(shape: [4], data: selector), "w": w])["y"]!
            #expect(y.data == selectRows(x, selector).data + w.data, "\(selector)")
        }
    }

    @Test("a net without Filter has no row guards and runs as before")
    func noFilter() throws {
        let net = try sharedCompiler.compile(graph: graph(poolNet), parameters: [:])
        #expect(net.filterRows == nil)
        let p = try net.run(inputs: ["x": NDArray(shape: [2, 3, 8, 8], data: (0..<384).map { Float($0 % 2) })])["p"]!
        #expect(p.shape == [2, 3, 4, 4] && p.data.allSatisfy { $0 == 1 })
    }

    @Test("a layer whose parameters would depend on the selected count is named when the count changes")
    func parametersDependOnRows() throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 } } }
        layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 3 } } }
        layer { name: "pick" type: "Filter" bottom: "x" bottom: "sel" top: "fx" }
        layer { name: "ip" type: "InnerProduct" bottom: "fx" top: "ip" inner_product_param { num_output: 1 axis: 0 } }
        """
        let net = try sharedCompiler.compile(graph: graph(text), parameters: ["ip": [NDArray(shape: [1, 6], data: Array(repeating: 1, count: 6)),
                                                                                   NDArray(shape: [1], data: [0])]])
        let x = NDArray(shape: [3, 2], data: [1, 2, 3, 4, 5, 6])
        #expect(try net.run(inputs: ["x": x, "sel": NDArray(shape: [3], data: [1, 1, 1])])["ip"]?.data == [21])
        do {
            _ = try net.run(inputs: ["x": x, "sel": NDArray(shape: [3], data: [1, 0, 1])])
            Issue.record("expected an error")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.layer == "ip")
            #expect(diagnostic.message == "with data-dependent row counts [2], parameter 0 (weights) would be 1×4, but it is 1×6")
        }
    }
}
