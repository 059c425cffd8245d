import CaffeFormat
import Codegen
import Foundation
import Graph
import NumPy
import Testing

/// Convolution backward's paths agree: a 1×1 convolution's input diff through the panel GEMM over the
/// batch (transposed weights packed before each backward), and a k×k one's through the panel GEMM
/// into its columns and col2im, equal the per-image OpenBLAS product, the
/// weight gradient summed per thread equals the single-thread (Caffe-order) sum, a 3×3 stride-1
/// convolution's input diff by Winograd (the top diff convolved with the turned, exchanged
/// filters) equals im2col's, and the derived constants follow parameter updates between runs.
@Suite("convolution backward paths")
struct ConvolutionBackwardPathTests {
    static func net(kernel: Int, pad: Int, channels: Int, outputs: Int) -> String {
        """
        force_backward: true
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: \(channels) dim: 5 dim: 7 } } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                convolution_param { num_output: \(outputs) kernel_size: \(kernel) pad: \(pad) } }
        """
    }

    static func values(_ shape: [Int], salt: Int) -> NDArray {
        NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { Float(sin(Double($0 * 13 + salt)) * 0.5) })
    }

    /// One forward/backward of `text`'s convolution with seeded weights, data and top diff; returns
    /// the output, the input diff and the weight diff.
    static func run(_ text: String, panels: Bool, threads: Int, channels: Int, outputs: Int, kernel: Int) throws
        -> (y: [Float], dx: [Float], dw: [Float], derivations: Int) {
        let compiler = try Compiler(threads: threads)
        compiler.options.panelGemms = panels
        compiler.options.winograd = nil  // so the forward's only derived constant is its panels
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
        let weights = values([outputs, channels, kernel, kernel], salt: 1), bias = values([outputs], salt: 2)
        let net = try compiler.compileTraining(graph: graph, parameters: ["conv": [weights, bias]], keepingAllBlobs: true)
        net.setTopDiffs(["conv": values([3, outputs, 5, 7], salt: 3)])
        net.zeroParameterDiffs()
        let (_, outputsByName) = try net.run(["data": values([3, channels, 5, 7], salt: 4)], backward: true)
        return (try #require(outputsByName["conv"]).data, try #require(net.blobDiff("data")).data,
                try #require(net.parameterDiffs()["conv"]?[0]).data, derivations(net))
    }

    /// The host steps that derive weights from parameters (packing, Winograd transforms).
    static func derivations(_ net: TrainingNet) -> Int {
        net.executable.steps.filter { if case .host = $0.action { return true } else { return false } }.count
    }

    static func expectClose(_ a: [Float], _ b: [Float], _ what: String) {
        let scale = max(1e-6, b.map(abs).max() ?? 0)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        #expect(a.count == b.count && worst <= 1e-5 * scale, "\(what): worst difference \(worst) of max \(scale)")
    }

    @Test("a 1×1 convolution's input diff by the panel GEMM equals OpenBLAS's, forward and weight diff too",
          arguments: [(16, 24), (8, 40), (32, 8)])
    func pointwise(_ shape: (channels: Int, outputs: Int)) throws {
        let text = Self.net(kernel: 1, pad: 0, channels: shape.channels, outputs: shape.outputs)
        let panels = try Self.run(text, panels: true, threads: 2, channels: shape.channels, outputs: shape.outputs, kernel: 1)
        let blas = try Self.run(text, panels: false, threads: 2, channels: shape.channels, outputs: shape.outputs, kernel: 1)
        // Packed for the forward (outputs a multiple of 8) and, transposed, for backward (channels a multiple of 8).
        #expect(panels.derivations == (shape.outputs % 8 == 0 ? 1 : 0) + (shape.channels % 8 == 0 ? 1 : 0))
        #expect(blas.derivations == 0)
        Self.expectClose(panels.y, blas.y, "forward")
        Self.expectClose(panels.dx, blas.dx, "input diff")
        Self.expectClose(panels.dw, blas.dw, "weight diff")
    }

    @Test("a k×k convolution's input diff by the panel GEMM into its columns, then col2im, equals OpenBLAS's",
          arguments: [(3, 1, 8, 16), (5, 2, 8, 8), (3, 1, 3, 8)])
    func columns(_ shape: (kernel: Int, pad: Int, channels: Int, outputs: Int)) throws {
        let text = Self.net(kernel: shape.kernel, pad: shape.pad, channels: shape.channels, outputs: shape.outputs)
        let panels = try Self.run(text, panels: true, threads: 2, channels: shape.channels, outputs: shape.outputs, kernel: shape.kernel)
        let blas = try Self.run(text, panels: false, threads: 2, channels: shape.channels, outputs: shape.outputs, kernel: shape.kernel)
        // Transposed panels need the column rows (channels·k²) to fill the tile's panels (8 rows with
        // AVX-512, 4 with AVX2): 3·9 = 27 fills neither, 72 and 200 both.
        let columnRows = shape.channels * shape.kernel * shape.kernel
        #expect(panels.derivations == (shape.outputs % 8 == 0 ? 1 : 0) + (columnRows % 8 == 0 ? 1 : 0))
        #expect(blas.derivations == 0)
        Self.expectClose(panels.y, blas.y, "forward")
        Self.expectClose(panels.dx, blas.dx, "input diff")
        Self.expectClose(panels.dw, blas.dw, "weight diff")
    }

    @Test("small images' weight gradient over blocks of images (one product per block) equals OpenBLAS's per-image sum",
          arguments: [(1, 0, 7, 16, 8, 8), (3, 1, 7, 8, 16, 8), (1, 0, 14, 8, 8, 2), (3, 1, 5, 8, 8, 8)])
    func blockedWeightGradient(_ shape: (kernel: Int, pad: Int, size: Int, channels: Int, outputs: Int, block: Int)) throws {
        let text = """
            force_backward: true
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 16 dim: \(shape.channels) dim: \(shape.size) dim: \(shape.size) } } }
            layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                    convolution_param { num_output: \(shape.outputs) kernel_size: \(shape.kernel) pad: \(shape.pad) } }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
        let spatial = shape.size * shape.size
        let parameters = ["conv": [Self.values([shape.outputs, shape.channels, shape.kernel, shape.kernel], salt: 21), Self.values([shape.outputs], salt: 22)]]
        func run(panels: Bool) throws -> (dx: [Float], dw: [Float], net: TrainingNet) {
            let compiler = try Compiler(threads: 2)
            compiler.options.panelGemms = panels
            compiler.options.winograd = nil
            let net = try compiler.compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: true)
            net.setTopDiffs(["conv": Self.values([16, shape.outputs, shape.size, shape.size], salt: 23)])
            net.zeroParameterDiffs()
            _ = try net.run(["data": Self.values([16, shape.channels, shape.size, shape.size], salt: 24)], backward: true)
            return (try #require(net.blobDiff("data")).data, try #require(net.parameterDiffs()["conv"]?[0]).data, net)
        }
        let blocked = try run(panels: true), blas = try run(panels: false)
        // The transposed top diffs of a block of images, per thread: the block's size, read back.
        let transposed = blocked.net.program.program.buffers.first { $0.name == "conv/top diff transposed" }
        // AVX2's in-place tile takes K ≤ 256, so its blocks are at most 256 / spatial images.
        let lanes = try CPUFeatures.effective().vectorLanes
        let expected = lanes == 16 ? shape.block : (1...shape.block).last { 16 % $0 == 0 && $0 * spatial <= 256 }!
        #expect(transposed?.count == spatial * shape.outputs * expected * 2)
        Self.expectClose(blocked.dw, blas.dw, "weight diff")
        Self.expectClose(blocked.dx, blas.dx, "input diff")
    }

    @Test("the weight gradient summed per thread equals the one-thread sum in Caffe's image order")
    func perThreadWeightGradient() throws {
        let text = Self.net(kernel: 3, pad: 1, channels: 4, outputs: 8)
        let two = try Self.run(text, panels: false, threads: 2, channels: 4, outputs: 8, kernel: 3)
        let one = try Self.run(text, panels: false, threads: 1, channels: 4, outputs: 8, kernel: 3)
        Self.expectClose(two.dw, one.dw, "weight diff")
        #expect(two.dx == one.dx, "the input diff is per image: the same arithmetic on any thread")
    }

    @Test("a 3×3 stride-1 convolution's input diff by Winograd equals im2col's, F(4×4) and F(2×2), every pad, banded too",
          arguments: [(28, 1, 8, 16, false), (14, 1, 16, 8, false), (16, 0, 8, 8, false), (30, 2, 4, 8, false), (112, 1, 4, 8, true)])
    func winogradInputDiff(_ shape: (size: Int, pad: Int, channels: Int, outputs: Int, banded: Bool)) throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: \(shape.channels) dim: \(shape.size) dim: \(shape.size) } } }
            layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                    convolution_param { num_output: \(shape.outputs) kernel_size: 3 pad: \(shape.pad) } }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: "force_backward: true\n" + text))
        let result = shape.size + 2 * shape.pad - 2
        let parameters = ["conv": [Self.values([shape.outputs, shape.channels, 3, 3], salt: 11), Self.values([shape.outputs], salt: 12)]]
        func run(winograd: Bool) throws -> (dx: [Float], dw: [Float], net: TrainingNet) {
            let compiler = try Compiler(threads: 2)
            if !winograd { compiler.options.winograd = nil }
            if shape.banded { compiler.options.convolutionBanding.minimumBytes = 1 }
            let net = try compiler.compileTraining(graph: graph, parameters: parameters, keepingAllBlobs: true)
            net.setTopDiffs(["conv": Self.values([2, shape.outputs, result, result], salt: 13)])
            net.zeroParameterDiffs()
            _ = try net.run(["data": Self.values([2, shape.channels, shape.size, shape.size], salt: 14)], backward: true)
            return (try #require(net.blobDiff("data")).data, try #require(net.parameterDiffs()["conv"]?[0]).data, net)
        }
        let fast = try run(winograd: true), reference = try run(winograd: false)
        let buffers = fast.net.program.program.buffers.map(\.name)
        #expect(buffers.contains("conv/data-gradient winograd input"), "the input diff ran as Winograd")
        #expect(!reference.net.program.program.buffers.map(\.name).contains("conv/data-gradient winograd input"))
        // F(4×4)'s transforms round to ~1e-5 of the values' magnitude (see `WinogradTile`).
        let scale = max(1e-6, reference.dx.map(abs).max() ?? 0)
        let worst = zip(fast.dx, reference.dx).map { abs($0 - $1) }.max() ?? 0
        #expect(fast.dx.count == reference.dx.count && worst <= 1e-4 * scale, "input diff: worst difference \(worst) of max \(scale)")
        Self.expectClose(fast.dw, reference.dw, "weight diff")
    }

    @Test("derived weights (panels, Winograd filters) follow the parameters a solver updates between runs")
    func derivedWeightsFollowUpdates() throws {
        let text = """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 dim: 12 dim: 12 } } }
            layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 16 kernel_size: 1 } }
            layer { name: "c3" type: "Convolution" bottom: "c1" top: "c3" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
            """
        let graph = try GraphBuilder(phase: .train, insertsSplits: true).build(CaffeFiles.parseNet(text: text))
        let parameters = ["c1": [Self.values([16, 8, 1, 1], salt: 5), Self.values([16], salt: 6)],
                          "c3": [Self.values([16, 16, 3, 3], salt: 7), Self.values([16], salt: 8)]]
        let data = Self.values([2, 8, 12, 12], salt: 9)
        let fast = try Compiler(threads: 2).compileTraining(graph: graph, parameters: parameters)
        let plain = try Compiler(threads: 2)
        plain.options.panelGemms = false
        plain.options.winograd = nil
        let reference = try plain.compileTraining(graph: graph, parameters: parameters)
        #expect(Self.derivations(fast) == 2, "c1's panels and c3's Winograd filters are derived before each forward")
        for round in 0..<3 {
            let a = try fast.run(["data": data], backward: false).outputs["c3"]!.data
            let b = try reference.run(["data": data], backward: false).outputs["c3"]!.data
            Self.expectClose(a, b, "round \(round)")
            // What a solver does between runs: write new values into the parameters in place.
            for net in [fast, reference] {
                for parameter in net.learnableParameters {
                    for j in 0..<parameter.data.count { parameter.data[j] = parameter.data[j] * 0.5 + Float(j % 7) * 0.01 }
                }
            }
        }
    }
}
