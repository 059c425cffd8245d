import Codegen
import NumPy
import Testing

/// The state an LSTM carries from one training forward to the next, as Caffe's RecurrentLayer
/// copies h_T/c_T into h_0/c_0 at every Forward, and the bookkeeping that must not disturb it.
@Suite("recurrent layers in training")
struct RecurrentTrainingTests {
    /// The golden LSTM's inputs with cont 1 at t = 0, so both streams continue from the last run.
    func continuingInputs(_ golden: GoldenTrainingCase) throws -> [String: NDArray] {
        var inputs = try golden.archive("inputs.npz")
        inputs["cont"]!.data = [1, 1, 1, 1, 1, 0]
        return inputs
    }

    @Test("a training forward continues from the previous forward's final h and c where cont is 1 at t = 0")
    func carriesState() throws {
        let golden = try GoldenTrainingCase("layers", "lstm")
        let net = try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters())
        let inputs = try continuingInputs(golden)
        let first = try #require(try net.run(inputs, backward: true).outputs["h"])
        let second = try #require(try net.run(inputs, backward: true).outputs["h"])
        // The first run starts from zeros, as Caffe's freshly allocated h_T does: Caffe's own answer.
        let caffe = try #require(try golden.archive("outputs.npz")["h"])
        let fresh = try #require(try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters())
            .run(try golden.archive("inputs.npz"), backward: false).outputs["h"])
        #expect(zip(fresh.data, caffe.data).allSatisfy { abs($0 - $1) <= 1e-6 })
        #expect(first.data != second.data)
    }

    @Test("firstNonFinite replays the last run without changing the state the next run starts from")
    func replayKeepsState() throws {
        let golden = try GoldenTrainingCase("layers", "lstm")
        let inputs = try continuingInputs(golden)
        let plain = try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters())
        let inspected = try sharedTrainingCompiler.compileTraining(graph: golden.graph(), parameters: golden.parameters())
        _ = try plain.run(inputs, backward: false)
        _ = try inspected.run(inputs, backward: false)
        #expect(inspected.firstNonFinite() == nil)
        let expected = try plain.run(inputs, backward: false).outputs["h"]
        let after = try inspected.run(inputs, backward: false).outputs["h"]
        #expect(after != nil && after == expected)
    }
}
