import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing
@testable import Passes

/// Residual fusion: which Eltwise sums fold into the convolution before them, and that every way
/// the lowering then computes the sum (accumulating GEMM, or a separate add after Winograd, after
/// a depthwise convolution, or when the shortcut is read again) gives the unfused net's values.
@Suite("residual fusion")
struct FuseResidualTests {
    /// x → a (1×1) → b (1×1) → [conv] ; sum = conv + a ; relu(sum) → pool. `conv`, `shortcut`, `extra`
    /// are filled in by each case.
    static func net(batch: Int, channels: Int, side: Int, conv: String, shortcut: String = "a", extra: String = "",
                    coefficients: String = "") -> String {
        """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(batch) dim: \(channels) dim: \(side) dim: \(side) } } }
        layer { name: "a" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: \(channels) kernel_size: 1 } }
        layer { name: "a_relu" type: "ReLU" bottom: "a" top: "a" }
        layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: \(channels) kernel_size: 1 } }
        layer { name: "conv" type: "Convolution" bottom: "b" top: "c" convolution_param { \(conv) } }
        layer { name: "sum" type: "Eltwise" bottom: "\(shortcut)" bottom: "c" top: "s" eltwise_param { operation: SUM \(coefficients) } }
        layer { name: "sum_relu" type: "ReLU" bottom: "s" top: "s" }
        \(extra)
        layer { name: "pool" type: "Pooling" bottom: "s" top: "p" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
        """
    }

    static func optimized(_ text: String) throws -> (before: Graph, after: PassContext) {
        let graph = try GraphBuilder(phase: .test, insertsSplits: false).build(CaffeFiles.parseNet(text: text, file: "residual.prototxt"))
        return (graph, try InferencePasses.run(graph, parameters: [:]))
    }

    /// Three compilers: every eligible 3×3 convolution as Winograd and one-group ones by the JIT'd
    /// panel GEMM, or neither (im2col + OpenBLAS GEMM), or the first on the AVX2 path (whose panel
    /// GEMM leaves convolutions that add a residual to OpenBLAS with β = 1).
    static let compilers: [Compiler] = {
        do {
            let always = try Compiler(threads: 2), never = try Compiler(threads: 2)
            let avx2 = try Compiler(threads: 2, cpuFeatures: CPUFeatures.effective().applying("-avx512f", from: "the tests' AVX2 path"))
            for compiler in [always, avx2] {
                compiler.options.winograd = WinogradPolicy(minimumTiles: 1, maximumBytes: .max)
                compiler.options.panelGemms = true
            }
            never.options.winograd = nil
            never.options.panelGemms = false
            return [always, never, avx2]
        } catch { fatalError("cannot create the JIT: \(error)") }
    }()

    /// Deterministic values in [-1, 1).
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 23) - 1
        }
    }

    @Test("the sum after a 1×1, a Winograd 3×3 or a depthwise convolution folds into it; values equal the unfused net's",
          arguments: [(1, "num_output: 16 kernel_size: 1", ""), (2, "num_output: 16 kernel_size: 1", ""),
                      (1, "num_output: 16 kernel_size: 3 pad: 1", ""), (2, "num_output: 16 kernel_size: 3 pad: 1", ""),
                      (1, "num_output: 16 kernel_size: 3 pad: 1 group: 16", ""),
                      (1, "num_output: 16 kernel_size: 1", #"layer { name: "peek" type: "AbsVal" bottom: "a" top: "q" }"#)])
    func fusesAndMatches(_ c: (batch: Int, conv: String, extra: String)) throws {
        let text = Self.net(batch: c.batch, channels: 16, side: 12, conv: c.conv, extra: c.extra)
        let (graph, context) = try Self.optimized(text)
        let conv = try #require(context.graph.node(named: "conv"))
        #expect(context.graph.node(named: "sum") == nil)
        #expect(conv.fusedActivation == .relu(negativeSlope: 0))
        #expect(conv.fusedResidual.map { context.graph.values[$0].name } == "a")
        #expect(context.report.contains { $0.contains("residual") })

        var parameters: [String: [NDArray]] = [:]
        let kernel = c.conv.contains("kernel_size: 3") ? 9 : 1, perGroup = c.conv.contains("group") ? 1 : 16
        parameters["a"] = [NDArray(shape: [16, 16, 1, 1], data: Self.values(256, seed: 1)), NDArray(shape: [16], data: Self.values(16, seed: 2))]
        parameters["b"] = [NDArray(shape: [16, 16, 1, 1], data: Self.values(256, seed: 6)), NDArray(shape: [16], data: Self.values(16, seed: 7))]
        parameters["conv"] = [NDArray(shape: [16, perGroup, kernel == 9 ? 3 : 1, kernel == 9 ? 3 : 1], data: Self.values(16 * perGroup * kernel, seed: 3)),
                              NDArray(shape: [16], data: Self.values(16, seed: 4))]
        let input = NDArray(shape: [c.batch, 16, 12, 12], data: Self.values(c.batch * 16 * 144, seed: 5))
        let outputs = graph.outputs.map { graph.values[$0].name }
        for (index, compiler) in Self.compilers.enumerated() {
            let executable = try compiler.compile(graph: context.graph, parameters: parameters, keeping: .outputs)
            // Only the GEMM path over a shortcut nothing else reads accumulates; the others add after.
            let gemmPath = !c.conv.contains("group") && (index == 1 || !c.conv.contains("kernel_size: 3"))
            #expect(Self.accumulates(executable) == (gemmPath && c.extra.isEmpty))
            #expect(Self.addsSeparately(executable) == !(gemmPath && c.extra.isEmpty))
            let fused = try executable.run(inputs: ["x": input])
            let reference = try compiler.compile(graph: graph, parameters: parameters, keeping: .outputs).run(inputs: ["x": input])
            for name in outputs {
                let a = try #require(fused[name]).data, b = try #require(reference[name]).data
                let scale = b.map(abs).max()!
                #expect(scale > 0.1)
                let worst = zip(a, b).map { abs($0 - $1) }.max()!
                #expect(worst <= 1e-5 * scale, "\(name): worst \(worst) of \(scale)")
            }
        }
    }

    /// Whether the convolution adds its product onto the shortcut's buffer: a GEMM with β = 1, or
    /// the panel GEMM kernel alone (no separate residual kernel after it).
    static func accumulates(_ net: CompiledNet) -> Bool {
        net.executable.steps.contains { step in
            guard step.label == "conv" else { return false }
            if case .gemm(let g) = step.action { return g.beta == 1 }
            if case .kernel(let k) = step.action { return k.kernel.name.hasPrefix("conv_panels") && !addsSeparately(net) }
            if case .items(let loop) = step.action { return loop.body.contains { if case .gemm(let g) = $0 { g.beta == 1 } else { false } } }
            return false
        }
    }

    static func addsSeparately(_ net: CompiledNet) -> Bool {
        net.executable.steps.contains { step in
            if step.label == "conv", case .kernel(let k) = step.action { return k.kernel.name.contains("residual") }
            return false
        }
    }

    @Test("the 1×1 case accumulates onto the shortcut's buffer: no separate add kernel")
    func accumulatesInPlace() throws {
        let (_, context) = try Self.optimized(Self.net(batch: 1, channels: 16, side: 12, conv: "num_output: 16 kernel_size: 1"))
        var parameters: [String: [NDArray]] = [:]
        parameters["a"] = [NDArray(shape: [16, 16, 1, 1], data: Self.values(256, seed: 1)), NDArray(shape: [16], data: Self.values(16, seed: 2))]
        parameters["b"] = [NDArray(shape: [16, 16, 1, 1], data: Self.values(256, seed: 6)), NDArray(shape: [16], data: Self.values(16, seed: 7))]
        parameters["conv"] = [NDArray(shape: [16, 16, 1, 1], data: Self.values(256, seed: 3)), NDArray(shape: [16], data: Self.values(16, seed: 4))]
        let net = try Self.compilers[1].compile(graph: context.graph, parameters: parameters, keeping: .outputs)
        #expect(Self.accumulates(net))
        #expect(!Self.addsSeparately(net))
    }

    @Test("no fusion for a weighted sum, a three-way sum, a shortcut computed after the convolution, or a convolution read elsewhere")
    func keepsWhenUnsafe() throws {
        let weighted = Self.net(batch: 1, channels: 4, side: 4, conv: "num_output: 4 kernel_size: 1", coefficients: "coeff: 1 coeff: 0.5")
        let convReadTwice = Self.net(batch: 1, channels: 4, side: 4, conv: "num_output: 4 kernel_size: 1",
                                     extra: #"layer { name: "peek" type: "AbsVal" bottom: "c" top: "q" }"#)
        let later = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 4 dim: 4 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "pool" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: MAX kernel_size: 1 } }
        layer { name: "sum" type: "Eltwise" bottom: "c" bottom: "p" top: "s" }
        layer { name: "out" type: "AbsVal" bottom: "s" top: "o" }
        """
        let threeWay = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 4 dim: 4 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
        layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "x" bottom: "c" top: "s" }
        layer { name: "out" type: "AbsVal" bottom: "s" top: "o" }
        """
        for text in [weighted, convReadTwice, later, threeWay] {
            let (_, context) = try Self.optimized(text)
            #expect(context.graph.node(named: "sum") != nil, "\(text)")
            #expect(context.graph.nodes.allSatisfy { $0.fusedResidual == nil })
        }
    }
}
