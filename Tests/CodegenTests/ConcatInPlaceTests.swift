import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Testing

/// Concat in place: at batch 1 the bottoms' producers write their slices of the top directly, and
/// the result is bit for bit the copying lowering's.
@Suite("Concat in place")
struct ConcatInPlaceTests {
    static func compiler(inPlace: Bool) -> Compiler {
        do {
            let compiler = try Compiler(threads: 2)
            compiler.options.concatInPlace = inPlace
            return compiler
        } catch { fatalError("cannot create the JIT: \(error)") }
    }

    static let inPlace = compiler(inPlace: true)
    static let copying = compiler(inPlace: false)

    /// Bottoms: a (conv + in-place ReLU), b (1×1 conv), d (1×1 conv also read by a later Eltwise,
    /// so it must keep its own buffer), x (the net's input, never moved), p (a max pooling).
    static func net(batch: Int, side: Int) -> String {
        """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(batch) dim: 3 dim: \(side) dim: \(side) } } }
        layer { name: "a" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "a_relu" type: "ReLU" bottom: "a" top: "a" }
        layer { name: "b" type: "Convolution" bottom: "x" top: "b" convolution_param { num_output: 5 kernel_size: 1 } }
        layer { name: "d" type: "Convolution" bottom: "x" top: "d" convolution_param { num_output: 3 kernel_size: 1 } }
        layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
        layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" bottom: "d" bottom: "x" bottom: "p" top: "cat" }
        layer { name: "sum" type: "Eltwise" bottom: "d" bottom: "x" top: "sum" }
        layer { name: "after" type: "ReLU" bottom: "cat" top: "cat" }
        """
    }

    static func copies(_ net: CompiledNet) -> Int {
        net.executable.steps.filter { $0.label == "cat" }.count
    }

    @Test("batch 1: only the bottoms that must keep their buffer are copied, results bit-identical",
          arguments: [(1, 8, 2), (1, 5, 4), (2, 8, 5)])
    func matchesCopying(_ c: (batch: Int, side: Int, copies: Int)) throws {
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: Self.net(batch: c.batch, side: c.side), file: "concat.prototxt"))
        var values = SeededValues(seed: 42, step: 1 / 300.0)
        var parameters: [String: [NDArray]] = [:]
        for (name, outputs, kernel) in [("a", 4, 3), ("b", 5, 1), ("d", 3, 1)] {
            parameters[name] = [NDArray(shape: [outputs, 3, kernel, kernel], data: values.next(outputs * 3 * kernel * kernel)),
                                NDArray(shape: [outputs], data: values.next(outputs))]
        }
        let input = NDArray(shape: [c.batch, 3, c.side, c.side], data: values.next(c.batch * 3 * c.side * c.side))
        let fast = try Self.inPlace.compile(graph: graph, parameters: parameters, keeping: .outputs)
        let reference = try Self.copying.compile(graph: graph, parameters: parameters, keeping: .outputs)
        // Batch 1 on an 8×8 image: a, b and p are computed in place; d (read again by the Eltwise)
        // and x (the input) are copied. On 5×5 only a's slice (at 0) is 64-byte aligned, so the
        // others are copied; batch 2 has two outer indices: every bottom is copied.
        #expect(Self.copies(fast) == c.copies)
        #expect(Self.copies(reference) == 5)
        let a = try fast.run(inputs: ["x": input]), b = try reference.run(inputs: ["x": input])
        for name in ["cat", "sum"] {
            #expect(a[name]!.shape == b[name]!.shape)
            #expect(a[name]!.data == b[name]!.data, "\(name) differs")
        }
        // And the values are the concatenation: x's slice of the top is x itself, after the ReLU.
        let cat = a["cat"]!.data, side2 = c.side * c.side, perImage = (4 + 5 + 3 + 3 + 3) * side2
        for i in 0..<(3 * side2) {
            #expect(cat[(4 + 5 + 3) * side2 + i] == max(0, input.data[i]))
        }
        #expect(cat.count == c.batch * perImage)
    }

    @Test("a Concat whose bottom is kept for the caller copies it")
    func keptBottom() throws {
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: Self.net(batch: 1, side: 8), file: "concat.prototxt"))
        var values = SeededValues(seed: 7, step: 1 / 300.0)
        var parameters: [String: [NDArray]] = [:]
        for (name, outputs, kernel) in [("a", 4, 3), ("b", 5, 1), ("d", 3, 1)] {
            parameters[name] = [NDArray(shape: [outputs, 3, kernel, kernel], data: values.next(outputs * 3 * kernel * kernel)),
                                NDArray(shape: [outputs], data: values.next(outputs))]
        }
        let net = try Self.inPlace.compile(graph: graph, parameters: parameters, keeping: .named(["cat", "b"]))
        #expect(Self.copies(net) == 3)  // b is kept, d is read again, x is the input
        let input = NDArray(shape: [1, 3, 8, 8], data: values.next(192))
        let outputs = try net.run(inputs: ["x": input])
        #expect(Array(outputs["cat"]!.data[(4 * 64)..<(9 * 64)]) == outputs["b"]!.data.map { max(0, $0) })
    }
}
