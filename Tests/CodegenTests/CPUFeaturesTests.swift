import CaffeFormat
@testable import Codegen
import Foundation
import Graph
import NumPy
import Runtime
import Testing

/// The CPU feature override (`SWIFTJIT_CPU_FEATURES`, `Compiler(cpuFeatures:)`): what it removes,
/// how it refuses bad values, that the kernels it produces use no AVX-512 register, and that the
/// disk cache never hands code made for one feature set to the other.
@Suite("CPU feature override")
struct CPUFeaturesTests {
    static let host = CPUFeatures(llvm: "+64bit,+sse4.2,+avx,+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512vl,+avx512bf16,+vaes,-amx-tile,-avxvnni")

    @Test("-avx512f removes AVX-512 and every feature that needs it, and keeps AVX2 and FMA")
    func removesDependents() throws {
        let avx2 = try Self.host.applying("-avx512f")
        #expect(avx2.llvmString == "+64bit,+sse4.2,+avx,+avx2,+fma,+f16c,-avx512f,-avx512bw,-avx512vl,-avx512bf16,+vaes,-amx-tile,-avxvnni")
        #expect(avx2.vectorLanes == 8 && Self.host.vectorLanes == 16)
        let sse = try Self.host.applying("-avx")
        #expect(sse.llvmString == "+64bit,+sse4.2,-avx,-avx2,-fma,-f16c,-avx512f,-avx512bw,-avx512vl,-avx512bf16,-vaes,-amx-tile,-avxvnni")
        #expect(sse.vectorLanes == 4)
        // Items apply left to right; adding back what the host has brings its prerequisites along.
        #expect(try Self.host.applying("-avx2,+avx512vl") == Self.host.applying("-avx512bw,-avx512bf16"))
    }

    @Test("a malformed or unknown value is an error naming the variable and the value",
          arguments: ["avx512f", "-avx51f", "-avx512f,,+fma", "+amx-tile", "-"])
    func refusesBadValues(_ value: String) {
        do {
            _ = try Self.host.applying(value)
            Issue.record("'\(value)' was accepted")
        } catch let error as CPUFeaturesError {
            #expect(error.description.hasPrefix("SWIFTJIT_CPU_FEATURES='\(value)': "), "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("the environment variable narrows the host's features; unset or empty leaves them")
    func environment() throws {
        let host = CPUFeatures.host()
        #expect(try CPUFeatures.effective(environment: [:]) == host)
        #expect(try CPUFeatures.effective(environment: ["SWIFTJIT_CPU_FEATURES": " "]) == host)
        #expect(try CPUFeatures.effective(environment: ["SWIFTJIT_CPU_FEATURES": "-avx512f"]) == host.applying("-avx512f"))
        #expect(throws: CPUFeaturesError.self) { try CPUFeatures.effective(environment: ["SWIFTJIT_CPU_FEATURES": "-avx51f"]) }
    }

    /// A net with every vector kernel family: 1×1 convolutions (the panel GEMM reading X in place,
    /// K = 16, and packing it, K = 64 over 196 columns), a depthwise one (vector rows), a 3×3 one
    /// (Winograd), pooling and an InnerProduct.
    static let net = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 16 dim: 14 dim: 14 } } }
    layer { name: "pw" type: "Convolution" bottom: "x" top: "pw" convolution_param { num_output: 64 kernel_size: 1 } }
    layer { name: "relu" type: "ReLU" bottom: "pw" top: "pw" }
    layer { name: "dw" type: "Convolution" bottom: "pw" top: "dw" convolution_param { num_output: 64 group: 64 kernel_size: 3 pad: 1 } }
    layer { name: "pk" type: "Convolution" bottom: "dw" top: "pk" convolution_param { num_output: 32 kernel_size: 1 } }
    layer { name: "c3" type: "Convolution" bottom: "pk" top: "c3" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
    layer { name: "pool" type: "Pooling" bottom: "c3" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
    layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
    """

    /// Compiles `net` for `isa`'s features, returning each compiled kernel's assembly and the net.
    static func compile(_ isa: VectorISA, disk: KernelDiskCache? = nil) throws -> (assembly: [String: String], net: CompiledNet) {
        let jit = try KernelJIT(cpuFeatures: isa.features())
        let assembly = Locked<[String: String]>([:])
        jit.inspectAssembly = { name, text in assembly.update { $0[name] = text } }
        let compiler = try Compiler(threads: 2, cache: KernelCache(jit: jit, disk: disk))
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: net, file: "features.prototxt"))
        var values = SeededValues(seed: 7, step: 1 / 500.0)
        var parameters: [String: [NDArray]] = [:]
        for node in graph.nodes where !node.parameters.isEmpty {
            parameters[node.name] = node.parameters.map { NDArray(shape: $0.shape.dims, data: values.next($0.shape.dims.reduce(1, *))) }
        }
        let compiled = try compiler.compile(graph: graph, parameters: parameters)
        return (assembly.value, compiled)
    }

    @Test("under -avx512f the panel GEMM runs on ymm registers and no kernel uses zmm, an opmask or ymm16–31; the host's uses zmm")
    func noAVX512Code() throws {
        let (assembly, net) = try Self.compile(.avx2)
        #expect(assembly.count >= 4)
        for (name, text) in assembly {
            #expect(!text.contains("zmm"), "\(name) uses zmm registers")
            #expect(!text.contains("{%k"), "\(name) uses AVX-512 opmask registers")
            #expect(text.range(of: "%ymm(1[6-9]|2[0-9]|3[01])", options: .regularExpression) == nil, "\(name) uses EVEX-only ymm registers")
        }
        // The compiler chose the vector kernels for AVX2: the panel GEMM with FMAs on ymm registers.
        let avx2Panel = assembly.filter { $0.key.hasPrefix("conv_panels") }
        #expect(!avx2Panel.isEmpty && avx2Panel.values.allSatisfy { $0.contains("vfmadd") && $0.contains("ymm") })
        let pointwise = net.executable.steps.filter { $0.label == "pw" }.map { step -> String in
            if case .kernel(let k) = step.action { return k.kernel.name } else { return "not a kernel" }
        }
        #expect(pointwise.count == 1 && pointwise[0].hasPrefix("conv_panels") && !pointwise[0].hasPrefix("conv_panels_packed"), "\(pointwise)")
        let packed = net.executable.steps.filter { $0.label == "pk" }.map { step -> String in
            if case .kernel(let k) = step.action { return k.kernel.name } else { return "not a kernel" }
        }
        #expect(packed.count == 1 && packed[0].hasPrefix("conv_panels_packed"), "\(packed)")
        guard CPUFeatures.host().contains("avx512f") else { return }
        let (hostAssembly, _) = try Self.compile(.host)
        let panel = hostAssembly.filter { $0.key.hasPrefix("conv_panels") }
        #expect(!panel.isEmpty && panel.values.allSatisfy { $0.contains("zmm") })
    }

    @Test("the host's features and the AVX2 path never share a disk cache entry, and compute the same outputs")
    func cacheKeysDiffer() throws {
        let host = try VectorISA.host.features(), avx2 = try VectorISA.avx2.features()
        let a = try KernelJIT(cpuFeatures: host), b = try KernelJIT(cpuFeatures: avx2)
        if host.contains("avx512f") {
            #expect(a.identity != b.identity)
            #expect(KernelDiskCache.key(ir: "same IR", identity: a.identity) != KernelDiskCache.key(ir: "same IR", identity: b.identity))
        }
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let (_, first) = try Self.compile(.host, disk: folder.disk)
        let (_, second) = try Self.compile(.avx2, disk: folder.disk)
        #expect(first.kernels.compiled > 3 && first.kernels.loaded == 0)
        // Nothing of the host's is loaded: every AVX2 kernel is compiled (their counts may differ,
        // as each path shares kernels across layers by its own tiles and tails).
        if host.contains("avx512f") { #expect(second.kernels.loaded == 0 && second.kernels.compiled == second.kernels.kernels) }
        let (_, warm) = try Self.compile(.avx2, disk: folder.disk)
        #expect(warm.kernels.compiled == 0 && warm.kernels.loaded == second.kernels.compiled)
        var values = SeededValues(seed: 3, step: 1 / 100.0)
        let input = NDArray(shape: [2, 16, 14, 14], data: values.next(2 * 16 * 14 * 14))
        let x = try first.run(inputs: ["x": input])["fc"]!, y = try second.run(inputs: ["x": input])["fc"]!
        let scale = x.data.map(abs).max()!
        #expect(zip(x.data, y.data).allSatisfy { abs($0 - $1) <= 1e-5 * scale })
    }
}
