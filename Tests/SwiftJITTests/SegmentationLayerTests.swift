import Foundation
import Testing
import SwiftJIT

/// Forward passes of the segmentation and sequence forks' layers (issue 14, item 3 and CTPN's
/// part of item 5), each against a reference written here from the fork's C++ (or Python):
/// SegNet's and ENet's BN and DenseImageData shapes, ENet's spatial dropout, CTPN's Transpose,
/// Reverse and Lstm.
@Suite("segmentation and sequence fork layers")
struct SegmentationLayerTests {
    // MARK: BN

    static func bnNet(_ mode: String, tops: String = "top: \"y\"") -> String {
        """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
        layer { name: "bn" type: "BN" bottom: "x" \(tops)
                bn_param { bn_mode: \(mode) scale_filler { type: "uniform" min: 0.5 max: 2 } shift_filler { type: "uniform" min: -1 max: 1 } } }
        """
    }

    @Test("BN INFERENCE is scale · x + shift per channel; its blobs are scale and shift, 1×C×1×1, filled by scale_filler and shift_filler")
    func bnInference() throws {
        let model = try ForkLayerFixtures.model(Self.bnNet("INFERENCE"))
        let blobs = try #require(model.params["bn"])
        #expect(blobs.map(\.shape) == [[1, 3, 1, 1], [1, 3, 1, 1]])
        #expect(blobs[0].data.allSatisfy { $0 >= 0.5 && $0 <= 2 } && blobs[1].data.allSatisfy { $0 >= -1 && $0 <= 1 })
        let x = ForkLayerFixtures.values(120, seed: 2)
        let y = try #require(try model.forward(["x": NDArray(shape: [2, 3, 4, 5], data: x)])["y"])
        for i in 0..<120 {
            let c = (i / 20) % 3
            #expect(abs(y.data[i] - (blobs[0].data[c] * x[i] + blobs[1].data[c])) < 1e-6)
        }
    }

    @Test("BN LEARN normalizes with the batch's mean and biased variance (eps 1e-9) in every phase, and its optional tops are that mean and variance")
    func bnLearn() throws {
        let model = try ForkLayerFixtures.model(Self.bnNet("LEARN", tops: "top: \"y\" top: \"mean\" top: \"variance\""))
        let blobs = try #require(model.params["bn"])
        let x = ForkLayerFixtures.values(120, seed: 3).map { $0 * 3 + 1 }
        let out = try model.forward(["x": NDArray(shape: [2, 3, 4, 5], data: x)], blobs: .all)
        let y = try #require(out["y"]), mean = try #require(out["mean"]), variance = try #require(out["variance"])
        #expect(mean.shape == [1, 3, 1, 1] && variance.shape == [1, 3, 1, 1])
        for c in 0..<3 {
            let indices = (0..<2).flatMap { n in (0..<20).map { (n * 3 + c) * 20 + $0 } }
            // The fork's order: E(x) and E(x²) per image and channel, averaged over the batch.
            let m = indices.reduce(0.0) { $0 + Double(x[$1]) } / 40
            let v = indices.reduce(0.0) { $0 + Double(x[$1]) * Double(x[$1]) } / 40 - m * m
            #expect(abs(Double(mean.data[c]) - m) < 1e-5)
            #expect(abs(Double(variance.data[c]) - v) < 1e-4)
            for i in indices {
                let expected = Double(blobs[0].data[c]) * (Double(x[i]) - m) / (v + 1e-9).squareRoot() + Double(blobs[1].data[c])
                #expect(abs(Double(y.data[i]) - expected) < 1e-4)
            }
        }
    }

    @Test("BN refuses a bottom that is not 2- to 4-D, and more than three tops")
    func bnChecks() {
        ForkLayerFixtures.refused("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 dim: 6 } } }
            layer { name: "bn" type: "BN" bottom: "x" top: "y" }
            """, saying: "BN needs an N×C×H×W bottom")
        ForkLayerFixtures.refused(Self.bnNet("LEARN", tops: "top: \"a\" top: \"b\" top: \"c\" top: \"d\""), saying: "BN has one top")
    }

    // MARK: spatial dropout

    static func spatialDropoutNet(_ phase: String, p: String = "'0.2'") -> String {
        """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
        layer { name: "drop" type: "Python" bottom: "x" top: "y"
                python_param { module: "spatial_dropout" layer: "SpatialDropoutLayer" param_str: "{'phase': '\(phase)', 'p': \(p)}" } }
        """
    }

    @Test("ENet's spatial_dropout Python layer runs natively: identity where it would draw masks, x/(1 − p) with another phase as the fork's else branch")
    func spatialDropoutInference() throws {
        let x = ForkLayerFixtures.values(96, seed: 4)
        let train = try ForkLayerFixtures.model(Self.spatialDropoutNet("TRAIN"))
        #expect(try train.forward(["x": NDArray(shape: [2, 3, 4, 4], data: x)])["y"]?.data == x)
        let test = try ForkLayerFixtures.model(Self.spatialDropoutNet("TEST", p: "0.2"))
        #expect(try test.forward(["x": NDArray(shape: [2, 3, 4, 4], data: x)])["y"]?.data == x.map { $0 * (1 / (1 - Float(0.2))) })
        ForkLayerFixtures.refused(Self.spatialDropoutNet("TRAIN", p: "'1.5'"), saying: "strictly between 0 and 1")
        ForkLayerFixtures.refused(Self.spatialDropoutNet("TRAIN").replacingOccurrences(of: ", 'p': '0.2'", with: ""), saying: "needs 'p'")
    }

    // MARK: DenseImageData

    @Test("DenseImageData's tops are N×C×H×W images and N×1×H×W labels, sized by crop or new size; its setup checks are diagnostics")
    func denseImageDataShapes() throws {
        func shapes(_ fields: String, transform: String = "") throws -> [[Int]] {
            let graph = try GraphBuilder().build(try CaffeFiles.parseNet(text: """
                layer { name: "data" type: "DenseImageData" top: "data" top: "label" \(transform)
                        dense_image_data_param { source: "list.txt" batch_size: 2 \(fields) } }
                """))
            return ["data", "label"].map { graph.value(named: $0)!.shape.dims }
        }
        #expect(try shapes("new_height: 36 new_width: 48") == [[2, 3, 36, 48], [2, 1, 36, 48]])
        #expect(try shapes("new_height: 36 new_width: 48 crop_height: 20 crop_width: 30 is_color: false") == [[2, 1, 20, 30], [2, 1, 20, 30]])
        #expect(try shapes("", transform: "transform_param { crop_size: 16 }") == [[2, 3, 16, 16], [2, 1, 16, 16]])
        do {
            _ = try shapes("new_height: 36")
            Issue.record("new_height without new_width must be refused")
        } catch {
            #expect("\(error)".contains("new_height and new_width set together"), "\(error)")
        }
    }

    // MARK: Transpose and Reverse (CTPN)

    @Test("CTPN's Transpose puts bottom axis dim[i] at top axis i, and Reverse flips one axis, as transpose_cpu and reverse_cpu")
    func transposeReverse() throws {
        let model = try ForkLayerFixtures.model("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
            layer { name: "t" type: "Transpose" bottom: "x" top: "t" transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
            layer { name: "r" type: "Reverse" bottom: "x" top: "r" reverse_param { axis: 2 } }
            """)
        let x = ForkLayerFixtures.values(120, seed: 6)
        let out = try model.forward(["x": NDArray(shape: [2, 3, 4, 5], data: x)])
        let t = try #require(out["t"]), r = try #require(out["r"])
        #expect(t.shape == [5, 4, 2, 3] && r.shape == [2, 3, 4, 5])
        // transpose_cpu: to_index = Σ from_inds[map[i]] · to_counts[i].
        var expectedT = [Float](repeating: .nan, count: 120), expectedR = expectedT
        for n in 0..<2 { for c in 0..<3 { for h in 0..<4 { for w in 0..<5 {
            let from = ((n * 3 + c) * 4 + h) * 5 + w
            expectedT[((w * 4 + h) * 2 + n) * 3 + c] = x[from]
            expectedR[((n * 3 + c) * 4 + (3 - h)) * 5 + w] = x[from]
        } } } }
        #expect(t.data == expectedT)
        #expect(r.data == expectedR)
        ForkLayerFixtures.refused("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
            layer { name: "t" type: "Transpose" bottom: "x" top: "t" transpose_param { dim: 1 dim: 0 dim: 2 } }
            """, saying: "Transpose lists 3 axes")
        ForkLayerFixtures.refused("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
            layer { name: "t" type: "Transpose" bottom: "x" top: "t" transpose_param { dim: 1 dim: 1 } }
            """, saying: "exactly once")
        ForkLayerFixtures.refused("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
            layer { name: "r" type: "Reverse" bottom: "x" top: "r" reverse_param { axis: 2 } }
            """, saying: "Reverse axis 2")
    }

    // MARK: Lstm (CTPN)

    /// CTPN's Lstm forward in double, from the fork's GPU kernels (`ClipAdd`, `LSTMForward`):
    /// pre = x·W_iᵀ + b + cont·h_{t−1}·W_hᵀ, gates i, f, o, g, c = cont·f·c_{t−1} + i·g,
    /// h = o·tanh(c), where cont is `clip[t][n]` with a clip bottom, else `t > 0`; h₋₁ and c₋₁
    /// are `initial` (what the previous forward left, with a clip bottom). Returns every h and
    /// the last h and c (the fork's `h_T_`, `c_T_`).
    static func lstmReference(x: [Float], t: Int, n: Int, features: Int, hidden h: Int, wi: [Float], wh: [Float], b: [Float],
                              clip: [Float]? = nil, initial: (h: [Double], c: [Double])? = nil) -> (y: [Float], h: [Double], c: [Double]) {
        func sigmoid(_ v: Double) -> Double { 1 / (1 + exp(-v)) }
        var hPrev = initial?.h ?? [Double](repeating: 0, count: n * h), cPrev = initial?.c ?? [Double](repeating: 0, count: n * h)
        var out: [Float] = []
        for step in 0..<t {
            var hNext = hPrev, cNext = cPrev
            for s in 0..<n {
                let cont = clip.map { Double($0[step * n + s]) } ?? (step > 0 ? 1 : 0)
                var pre = [Double](repeating: 0, count: 4 * h)
                for g in 0..<(4 * h) {
                    var v = Double(b[g])
                    for k in 0..<features { v += Double(x[(step * n + s) * features + k]) * Double(wi[g * features + k]) }
                    for k in 0..<h { v += cont * hPrev[s * h + k] * Double(wh[g * h + k]) }
                    pre[g] = v
                }
                for d in 0..<h {
                    let i = sigmoid(pre[d]), f = sigmoid(pre[h + d]), o = sigmoid(pre[2 * h + d]), g = tanh(pre[3 * h + d])
                    cNext[s * h + d] = cont * f * cPrev[s * h + d] + i * g
                    hNext[s * h + d] = o * tanh(cNext[s * h + d])
                }
            }
            out += hNext.map { Float($0) }
            (hPrev, cPrev) = (hNext, cNext)
        }
        return (out, hPrev, cPrev)
    }

    @Test("CTPN's Lstm (lstm_param) runs a T×N×I sequence from zero state and equals the fork's forward; blobs W_i 4H×I, W_h 4H×H, b 4H")
    func ctpnLSTM() throws {
        let (t, n, c, w, h) = (5, 3, 2, 3, 4)
        let model = try ForkLayerFixtures.model("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(t) dim: \(n) dim: \(c) dim: \(w) } } }
            layer { name: "lstm" type: "Lstm" bottom: "x" top: "y"
                    lstm_param { num_output: \(h) weight_filler { type: "uniform" min: -0.5 max: 0.5 } bias_filler { type: "uniform" min: -0.3 max: 0.3 } } }
            """)
        let blobs = try #require(model.params["lstm"])
        #expect(blobs.map(\.shape) == [[4 * h, c * w], [4 * h, h], [4 * h]])
        let x = ForkLayerFixtures.values(t * n * c * w, seed: 7)
        let y = try #require(try model.forward(["x": NDArray(shape: [t, n, c, w], data: x)])["y"])
        #expect(y.shape == [t, n, h])
        let expected = Self.lstmReference(x: x, t: t, n: n, features: c * w, hidden: h, wi: blobs[0].data, wh: blobs[1].data, b: blobs[2].data).y
        let worst = zip(y.data, expected).map { abs($0 - $1) }.max() ?? 0
        #expect(worst < 1e-5, "max |Δ| \(worst)")
        // A second forward starts from zero state again (no clip bottom).
        #expect(try model.forward(["x": NDArray(shape: [t, n, c, w], data: x)])["y"] == y)
        ForkLayerFixtures.refused("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 } } }
            layer { name: "lstm" type: "Lstm" bottom: "x" top: "y" lstm_param { num_output: 4 } }
            """, saying: "Lstm needs a T×N×… bottom")
    }

    @Test("CTPN's Lstm with its clip bottom restarts a stream where the clip is 0 and carries h and c from one forward to the next, as the fork's h_T_/c_T_")
    func ctpnLSTMClip() throws {
        let (t, n, features, h) = (4, 3, 5, 4)
        let model = try ForkLayerFixtures.model("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(t) dim: \(n) dim: \(features) } } }
            layer { name: "clip" type: "Input" top: "clip" input_param { shape { dim: \(t) dim: \(n) } } }
            layer { name: "lstm" type: "Lstm" bottom: "x" bottom: "clip" top: "y"
                    lstm_param { num_output: \(h) weight_filler { type: "uniform" min: -0.5 max: 0.5 } bias_filler { type: "uniform" min: -0.3 max: 0.3 } } }
            """)
        let blobs = try #require(model.params["lstm"])
        let (wi, wh, b) = (blobs[0].data, blobs[1].data, blobs[2].data)
        // Stream 0 runs on, stream 1 restarts at t = 2, stream 2 restarts at t = 0 and t = 3.
        let clips: [[Float]] = [[0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0],
                                [1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1],
                                [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]
        var state: (h: [Double], c: [Double])? = nil
        for (pass, clip) in clips.enumerated() {
            let x = ForkLayerFixtures.values(t * n * features, seed: 40 + UInt64(pass))
            let y = try #require(try model.forward(["x": NDArray(shape: [t, n, features], data: x), "clip": NDArray(shape: [t, n], data: clip)])["y"])
            let expected = Self.lstmReference(x: x, t: t, n: n, features: features, hidden: h, wi: wi, wh: wh, b: b, clip: clip, initial: state)
            let worst = zip(y.data, expected.y).map { abs($0 - $1) }.max() ?? 0
            #expect(worst < 1e-5, "forward \(pass): max |Δ| \(worst)")
            state = (expected.h, expected.c)
        }
        // The carried state matters: a fourth forward with all clips 1 differs from the same forward from zero state.
        let x = ForkLayerFixtures.values(t * n * features, seed: 42)
        let fresh = Self.lstmReference(x: x, t: t, n: n, features: features, hidden: h, wi: wi, wh: wh, b: b, clip: clips[2]).y
        let last = try #require(try model.forward(["x": NDArray(shape: [t, n, features], data: x), "clip": NDArray(shape: [t, n], data: clips[2])])["y"])
        #expect(zip(last.data, fresh).map { abs($0 - $1) }.max() ?? 0 > 1e-3, "a fourth forward continues from the third's state, not from zero")
        ForkLayerFixtures.refused("""
            layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 dim: 5 } } }
            layer { name: "clip" type: "Input" top: "clip" input_param { shape { dim: 4 dim: 2 } } }
            layer { name: "lstm" type: "Lstm" bottom: "x" bottom: "clip" top: "y" lstm_param { num_output: 4 } }
            """, saying: "clip bottom")
    }
}
