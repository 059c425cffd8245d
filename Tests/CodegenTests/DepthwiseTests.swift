import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing

/// The direct depthwise kernels (vector rows for horizontal strides 1 and 2, scalar otherwise)
/// against a plain-loop reference of Caffe's convolution, over the geometries that exercise their
/// edges: rows shorter than, equal to and just over a vector, several vectors with a ragged last
/// one, windows hanging over every side, padding wider than the kernel, dilation, asymmetric
/// kernels and strides, channel multipliers, batches, with bias and a fused leaky ReLU.
@Suite("Depthwise convolutions")
struct DepthwiseTests {
    struct Case: CustomStringConvertible, Sendable {
        var n = 1, channels = 3, multiplier = 1, h = 14, w = 14
        var kernel = (3, 3), stride = (1, 1), pad = (1, 1), dilation = 1
        var description: String {
            "n\(n) c\(channels)×\(multiplier) \(h)×\(w) k\(kernel) s\(stride) p\(pad) d\(dilation)"
        }
    }

    static let cases: [Case] = [
        Case(),                                                             // 14 wide: one masked vector per row
        Case(n: 2, channels: 4, multiplier: 2, h: 7, w: 9, stride: (2, 2)), // stride 2, odd sizes, multiplier
        Case(channels: 2, h: 40, w: 37, stride: (2, 2)),                    // 19 outputs: two vectors, stride 2
        Case(channels: 2, h: 9, w: 35),                                     // 35: three vectors, the last of 3 lanes
        Case(channels: 2, h: 5, w: 16, pad: (0, 0)),                        // 14 outputs without padding
        Case(channels: 2, h: 6, w: 8),                                      // exactly one 8-lane vector
        Case(channels: 2, h: 5, w: 20, kernel: (3, 5), stride: (1, 2), pad: (2, 0), dilation: 2),
        Case(channels: 3, h: 3, w: 3, kernel: (5, 5), pad: (2, 2)),         // every row and column a border
        Case(channels: 2, h: 4, w: 4, kernel: (1, 1), pad: (1, 1)),         // padding rows with no tap inside
        Case(channels: 2, h: 9, w: 1, kernel: (3, 1), pad: (1, 0)),         // one-column image
        Case(n: 2, channels: 2, h: 11, w: 13, stride: (3, 3)),              // stride 3: the scalar kernel
    ]

    @Test("depthwise convolution equals Caffe's arithmetic (within 1e-6 of the largest output), in 16- and 8-lane rows",
          arguments: cases, VectorISA.allCases)
    func againstReference(_ c: Case, _ isa: VectorISA) throws {
        let o = c.channels * c.multiplier
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(c.n) dim: \(c.channels) dim: \(c.h) dim: \(c.w) } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
          convolution_param { num_output: \(o) group: \(c.channels) kernel_h: \(c.kernel.0) kernel_w: \(c.kernel.1)
            stride_h: \(c.stride.0) stride_w: \(c.stride.1) pad_h: \(c.pad.0) pad_w: \(c.pad.1) dilation: \(c.dilation) } }
        """
        var graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "depthwise.prototxt"))
        graph.nodes[1].fusedActivation = .relu(negativeSlope: 0.1)
        var values = SeededValues(seed: 0x2545_F491_4F6C_DD1D, step: 1 / 300.0)
        let (kh, kw) = c.kernel
        let weights = values.next(o * kh * kw), bias = values.next(o)
        let input = NDArray(shape: [c.n, c.channels, c.h, c.w], data: values.next(c.n * c.channels * c.h * c.w))
        let net = try isa.compiler().compile(
            graph: graph, parameters: ["conv": [NDArray(shape: [o, 1, kh, kw], data: weights), NDArray(shape: [o], data: bias)]])
        let y = try net.run(inputs: ["x": input])["y"]!

        let extent = { (size: Int, k: Int, s: Int, p: Int) in (size + 2 * p - (c.dilation * (k - 1) + 1)) / s + 1 }
        let (oh, ow) = (extent(c.h, kh, c.stride.0, c.pad.0), extent(c.w, kw, c.stride.1, c.pad.1))
        #expect(y.shape == [c.n, o, oh, ow])
        var expected = [Float](repeating: 0, count: c.n * o * oh * ow)
        for item in 0..<c.n {
            for channel in 0..<o {
                let plane = (item * c.channels + channel / c.multiplier) * c.h * c.w
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var sum: Float = 0
                        for ky in 0..<kh {
                            for kx in 0..<kw {
                                let iy = oy * c.stride.0 + ky * c.dilation - c.pad.0
                                let ix = ox * c.stride.1 + kx * c.dilation - c.pad.1
                                guard (0..<c.h).contains(iy), (0..<c.w).contains(ix) else { continue }
                                sum += weights[(channel * kh + ky) * kw + kx] * input.data[plane + iy * c.w + ix]
                            }
                        }
                        let value = sum + bias[channel]
                        expected[((item * o + channel) * oh + oy) * ow + ox] = max(value, 0) + 0.1 * min(value, 0)
                    }
                }
            }
        }
        let scale = expected.map(abs).max()!
        let worst = zip(y.data, expected).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-6 * scale, "\(c): worst \(worst) of \(scale)")
    }
}
