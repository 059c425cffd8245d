import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// LSTM and RNN behaviours the single-forward goldens do not show: the state Caffe carries from
/// one forward to the next, which blobs a net exposes, and the errors for misshapen bottoms.
@Suite("recurrent layers")
struct RecurrentTests {
    /// The golden case's net rebuilt for T = 1, run once per time step on the same compiled net.
    func stepwise(_ name: String, top: String) throws -> (steps: [NDArray], whole: NDArray) {
        let golden = try GoldenCase("layers", name)
        let inputs = try golden.inputs()
        let x = try #require(inputs["x"]), cont = try #require(inputs["cont"])
        let (t, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        let definition = try CaffeFiles.loadNet(path: golden.path("net.prototxt"))
        let oneStep = try GraphBuilder(phase: .test, inputShapes: ["x": TensorShape([1, n, d]), "cont": TensorShape([1, n])]).build(definition)
        let net = try sharedCompiler.compile(graph: oneStep, parameters: golden.parameters(), keeping: .outputs)
        let steps = try (0..<t).map { step in
            try #require(try net.run(inputs: ["x": NDArray(shape: [1, n, d], data: Array(x.data[(step * n * d)..<((step + 1) * n * d)])),
                                              "cont": NDArray(shape: [1, n], data: Array(cont.data[(step * n)..<((step + 1) * n)]))])[top])
        }
        return (steps, try #require(golden.expected()[top]))
    }

    @Test("an LSTM run one time step per forward carries h and c to the next forward, as Caffe's word-by-word captioning relies on",
          arguments: [("lstm", "h"), ("rnn", "o")])
    func carriesState(_ name: String, _ top: String) throws {
        let (steps, whole) = try stepwise(name, top: top)
        let stride = whole.count / steps.count
        let scale = whole.data.map(abs).max() ?? 1
        for (step, result) in steps.enumerated() {
            let expected = whole.data[(step * stride)..<((step + 1) * stride)]
            let error = zip(result.data, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(error <= 1e-5 * scale + 1e-6, "\(name) step \(step): differs from Caffe's T = 3 forward by \(error)")
        }
    }

    @Test("with expose_hidden every forward starts from the h0/c0 bottoms: two runs give the same tops")
    func exposedStateIsNotCarried() throws {
        let golden = try GoldenCase("layers", "lstm_expose_hidden")
        let net = try sharedCompiler.compile(graph: golden.graph(), parameters: golden.parameters())
        let first = try net.run(inputs: golden.inputs()), second = try net.run(inputs: golden.inputs())
        for name in ["h", "hT", "cT"] { #expect(first[name]?.data == second[name]?.data, "\(name)") }
    }

    @Test("a cont of 1 at t = 0 continues from the previous forward's final state, 0 starts afresh")
    func contAtFirstStep() throws {
        let golden = try GoldenCase("layers", "lstm")
        let net = try sharedCompiler.compile(graph: golden.graph(), parameters: golden.parameters())
        var inputs = try golden.inputs()
        let fresh = try #require(try net.run(inputs: inputs)["h"])
        inputs["cont"]!.data[0] = 1  // stream 0 continues from the state the first run left
        let continued = try #require(try net.run(inputs: inputs)["h"])
        #expect(continued.data[0..<4] != fresh.data[0..<4])
        #expect(continued.data[4..<8] == fresh.data[4..<8])  // stream 1 still starts afresh (cont 0)
    }

    @Test("--blobs all shows the layer's tops only, as Caffe's net.blobs does", arguments: [("lstm", ["x", "cont", "h"]),
          ("lstm_expose_hidden", ["x", "cont", "h0", "c0", "h", "hT", "cT"]), ("rnn", ["x", "cont", "o"])])
    func blobs(_ name: String, _ expected: [String]) throws {
        let golden = try GoldenCase("layers", name)
        let net = try sharedCompiler.compile(graph: golden.graph(), parameters: golden.parameters(), keeping: .all)
        #expect(net.blobNames == expected)
    }

    func buildError(_ text: String) -> String {
        do {
            _ = try graph(text)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    static let inputs = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 5 } } }
    layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 3 dim: 2 } } }

    """

    @Test("bad bottoms name the layer and show the expected and the actual shape", arguments: [
        ("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 5 } } }
        layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 3 dim: 3 } } }
        layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 4 } }
        """, "test.prototxt:3:1: layer 'lstm': LSTM sequence-continuation input 'cont' must be T×N = 3×2 to match 'x' (3×2×5), but it is 3×3"),
        ("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 5 } } }
        layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 6 } } }
        layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o" recurrent_param { num_output: 4 } }
        """, "test.prototxt:3:1: layer 'rnn': RNN sequence-continuation input 'cont' must be T×N = 3×2 to match 'x' (3×2×5), but it is 6"),
        ("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 6 } } }
        layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 3 dim: 2 } } }
        layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 4 } }
        """, "test.prototxt:3:1: layer 'lstm': LSTM input 'x' (6) must have at least 2 axes, T×N×… (time steps, independent streams, features)"),
        (RecurrentTests.inputs + """
        layer { name: "xs" type: "Input" top: "xs" input_param { shape { dim: 3 dim: 3 } } }
        layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "h" recurrent_param { num_output: 4 } }
        """, "test.prototxt:4:1: layer 'lstm': LSTM static input 'xs' must be N×… with N = 2 streams (from 'x' (3×2×5)), but it is 3×3"),
        (RecurrentTests.inputs + """
        layer { name: "h0" type: "Input" top: "h0" input_param { shape { dim: 1 dim: 2 dim: 5 } } }
        layer { name: "c0" type: "Input" top: "c0" input_param { shape { dim: 1 dim: 2 dim: 4 } } }
        layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" top: "h" top: "hT" top: "cT"
          recurrent_param { num_output: 4 expose_hidden: true } }
        """, "test.prototxt:5:1: layer 'lstm': LSTM initial state 'h0' must be 1×N×H = 1×2×4, but it is 1×2×5"),
        (RecurrentTests.inputs + """
        layer { name: "h0" type: "Input" top: "h0" input_param { shape { dim: 1 dim: 2 dim: 4 } } }
        layer { name: "c0" type: "Input" top: "c0" input_param { shape { dim: 1 dim: 2 dim: 4 } } }
        layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" top: "h"
          recurrent_param { num_output: 4 expose_hidden: true } }
        """, "test.prototxt:5:1: layer 'lstm': LSTM produces 3 top blobs, but the layer lists 1"),
    ])
    func badBottoms(_ text: String, _ expected: String) {
        let message = buildError(text)
        #expect(message.hasPrefix(expected), "\(message)")
    }
}
