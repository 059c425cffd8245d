import CaffeFormat
import Codegen
import Foundation
import Graph
import Runtime
import NumPy
import Testing

/// Inference and training go through one `Compiler`: one option set reaches both, a training
/// forward runs the very kernels an inference compile built (so it gives the same bits and finds
/// them in the kernel cache), and both return the same program type.
@Suite("one compiler for inference and training")
struct OneCompilerTests {
    /// A 1×1 convolution (panel GEMM), a 3×3 one (Winograd when allowed), MAX pooling, ReLU and an
    /// InnerProduct (panels over few rows), with no layer whose TRAIN semantics differ from TEST.
    static let text = """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 dim: 14 dim: 14 } } }
        layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 16 kernel_size: 1 } }
        layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
        layer { name: "c3" type: "Convolution" bottom: "c1" top: "c3" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
        layer { name: "pool" type: "Pooling" bottom: "c3" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
        """

    static func values(_ shape: [Int], salt: Int) -> NDArray {
        NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map { Float(sin(Double($0 * 7 + salt)) * 0.3) })
    }

    static let parameters: [String: [NDArray]] = [
        "c1": [values([16, 8, 1, 1], salt: 1), values([16], salt: 2)],
        "c3": [values([16, 16, 3, 3], salt: 3), values([16], salt: 4)],
        "fc": [values([10, 16 * 7 * 7], salt: 5), values([10], salt: 6)],
    ]

    /// The Winograd policy that takes c3 (7×7 tiles of 2×2 on a 14×14 image).
    static var winogradForC3: WinogradPolicy { WinogradPolicy(minimumTiles: 1, maximumBytes: .max, largeTileMinimumTiles: nil) }

    @Test("a training forward equals inference bit for bit and reuses the kernels inference compiled",
          arguments: [false, true])
    func trainingForwardIsInference(avx2: Bool) throws {
        let features = avx2 ? try CPUFeatures.host().applying("-avx512f") : CPUFeatures.host()
        let compiler = try Compiler(threads: 2, cpuFeatures: features)
        compiler.options.winograd = Self.winogradForC3
        let definition = try CaffeFiles.parseNet(text: Self.text)
        let data = Self.values([2, 8, 14, 14], salt: 9)

        let program = try compiler.compileProgram(graph: try GraphBuilder(phase: .test).build(definition), parameters: Self.parameters,
                                                  constants: ConstantStore())
        let inferred = try program.makeContext().run(inputs: ["data": data])["fc"]!.data
        let net = try compiler.compileTraining(graph: try GraphBuilder(phase: .train, insertsSplits: true).build(definition),
                                               parameters: Self.parameters)
        let trained = try net.run(["data": data], backward: false).outputs["fc"]!.data
        #expect(trained == inferred, "the same lowerings and kernels give the same bits")
        #expect(net.kernels.reused > 0, "the training compile found the inference compile's forward kernels in the cache")
        #expect(net.program.kernels == net.kernels, "a training net is the one context of a CompiledProgram")
    }

    @Test("one option set: turning Winograd and the panel GEMM off changes inference and training alike")
    func optionsReachBothPasses() throws {
        let definition = try CaffeFiles.parseNet(text: Self.text)
        func hostSteps(_ options: CompileOptions) throws -> (inference: [String], training: Int) {
            let compiler = try Compiler(threads: 2)
            compiler.options = options
            let inference = try compiler.compile(graph: try GraphBuilder(phase: .test).build(definition), parameters: Self.parameters)
            let training = try compiler.compileTraining(graph: try GraphBuilder(phase: .train, insertsSplits: true).build(definition),
                                                        parameters: Self.parameters)
            // Training derives panels and Winograd filters from the parameters in host steps before each forward.
            let derivations = training.executable.steps.prefix(training.forwardStepCount).filter {
                if case .host = $0.action { return true } else { return false }
            }.count
            let names = inference.program.program.steps.flatMap { step -> [String] in
                switch step.action {
                case .kernel(let k): return [k.kernel.name]
                case .items(let loop): return loop.body.compactMap { if case .kernel(let k) = $0 { k.kernel.name } else { nil } }
                default: return []
                }
            }
            return (names, derivations)
        }
        var fast = CompileOptions()
        fast.winograd = Self.winogradForC3
        var plain = CompileOptions()
        plain.winograd = nil
        plain.panelGemms = false
        plain.innerProductPanels = false
        let a = try hostSteps(fast), b = try hostSteps(plain)
        #expect(a.inference.contains { $0.contains("winograd") } && !b.inference.contains { $0.contains("winograd") })
        #expect(a.training >= 2, "c1's panels and c3's Winograd filters are derived in training too")
        #expect(b.training == 0, "with both off, training forward reads the parameters as they are")
    }
}
