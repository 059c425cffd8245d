import Foundation
import Testing
import SwiftJIT

/// `swiftjit draw` and `compile` (explain) on SSD's MultiBoxLoss: its box shows the settings a
/// reader checks against the prototxt, and `compile` explains the train net with the loss.
@Suite("MultiBoxLoss in draw and explain")
struct MultiBoxLossDrawTests {
    static let net = """
        layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: 2 dim: 96 } } }
        layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: 2 dim: 504 } } }
        layer { name: "prior" type: "Input" top: "prior" input_param { shape { dim: 1 dim: 2 dim: 96 } } }
        layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 8 } } }
        layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "loc" bottom: "conf" bottom: "prior" bottom: "label" top: "mbox_loss"
                propagate_down: true propagate_down: true propagate_down: false propagate_down: false
                loss_param { normalization: VALID }
                multibox_loss_param { loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: 21 share_location: true
                  match_type: PER_PREDICTION overlap_threshold: 0.5 use_prior_for_matching: true background_label_id: 0
                  neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: MAX_NEGATIVE } }
        """

    @Test("the MultiBoxLoss box names classes, loss types, matching, mining and code type")
    func drawn() throws {
        let graph = try GraphBuilder(phase: .train, insertsSplits: false).build(try CaffeFiles.parseNet(text: Self.net))
        let dot = NetDrawing(graph: graph).dot()
        #expect(dot.contains(#"label="mbox_loss (MultiBoxLoss)\n21 classes, SMOOTH_L1 + SOFTMAX, PER_PREDICTION ≥ 0.5, MAX_NEGATIVE 3.0:1, CENTER_SIZE\nscalar""#), "\(dot)")
    }

    @Test("compile explains the net; run gives the training forward's loss")
    func explainedAndRun() throws {
        try ExportFixtures.withTempDir { dir in
            let file = dir.appendingPathComponent("loss.prototxt")
            try Self.net.write(to: file, atomically: true, encoding: .utf8)
            let explained = try ExportFixtures.swiftjit(["compile", file.path])
            #expect(explained.status == 0, "\(explained.err)")
            #expect(explained.out.contains("MultiBoxLoss"), "\(explained.out)")
            // run: the same loss as the training forward (one host step shared by both).
            func values(_ count: Int, _ seed: UInt64) -> [Float] {
                var state = seed
                return (0..<count).map { _ in
                    state = state &* 6364136223846793005 &+ 1442695040888963407
                    return Float(state >> 40) / Float(1 << 24) * 2 - 1
                }
            }
            var priors: [Float] = []
            for p in 0..<24 {
                let cx = (Float(p % 6) + 0.5) / 6, cy = (Float(p / 6) + 0.5) / 4
                priors += [cx - 0.2, cy - 0.2, cx + 0.2, cy + 0.2]
            }
            priors += (0..<24).flatMap { _ in [Float(0.1), 0.1, 0.2, 0.2] }
            let label: [Float] = [0, 3, 0, 0.1, 0.1, 0.5, 0.6, 0, 1, 7, 0, 0.4, 0.3, 0.9, 0.8, 0, -1, 0, 0, 0, 0, 0, 0, 0]
            let feeds: [String: NDArray] = ["loc": NDArray(shape: [2, 96], data: values(192, 3)), "conf": NDArray(shape: [2, 504], data: values(1008, 4)),
                                            "prior": NDArray(shape: [1, 2, 96], data: priors), "label": NDArray(shape: [1, 1, 3, 8], data: label)]
            let inputs = dir.appendingPathComponent("inputs.npz"), output = dir.appendingPathComponent("out.npz")
            try NumPyFile.write(archive: feeds.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: inputs.path)
            let run = try ExportFixtures.swiftjit(["run", file.path, "--input", inputs.path, "--output", output.path])
            #expect(run.status == 0, "\(run.err)")
            let loss = try #require(try NumPyFile.readArchive(path: output.path)["mbox_loss"])
            let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(try CaffeFiles.parseNet(text: Self.net))
            let trained = try Compiler().compileTraining(graph: graph, parameters: [:])
            let expected = try trained.run(feeds, backward: false).loss
            #expect(loss.data == [expected], "run \(loss.data) vs training forward \(expected)")
            #expect(expected > 0 && expected.isFinite)
        }
    }
}
