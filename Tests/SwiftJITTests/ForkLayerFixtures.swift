import Foundation
import Testing
import SwiftJIT

/// What the fork-layer suites (`ForkLayerTests`, `SegmentationLayerTests`) share: a `Model` from
/// prototxt text, deterministic inputs the Swift references can reproduce, and the check that a
/// net is refused with a given phrase.
enum ForkLayerFixtures {
    static func model(_ text: String) throws -> Model {
        try Model(definition: try CaffeFiles.parseNet(text: text), weights: nil)
    }

    /// Deterministic values in [-2, 2): a fixed LCG, so the reference and the net see the same input.
    static func values(_ count: Int, seed: UInt64 = 11) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) * 4 - 2
        }
    }

    /// Expects building or running `text` to fail with an error containing `phrase`.
    static func refused(_ text: String, saying phrase: String) {
        do {
            let model = try Self.model(text)
            _ = try model.forward([:])
            Issue.record("expected an error saying '\(phrase)'")
        } catch {
            #expect("\(error)".contains(phrase), "\(error)")
        }
    }
}
