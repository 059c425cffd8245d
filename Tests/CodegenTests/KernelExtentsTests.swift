import CaffeFormat
@testable import Codegen
import Foundation
import Graph
import NumPy
import Runtime
import Testing

/// Extents read at run time (`KernelExtents`): layers whose panel GEMMs differ only in depth,
/// output channels and column count share one compiled kernel, on the in-place and the packing
/// kernel alike, and each layer still computes its own product.
@Suite("kernel extents at run time")
struct KernelExtentsTests {
    /// Three 1×1 convolutions with ReLU over 8×8 images: K = 64, 128, 64 and M = 128, 64, 32
    /// over the same 64 columns (the same tail on both vector widths). On AVX-512 all three run
    /// the in-place panel GEMM, on AVX2 all three the packing one (K ≥ 64 over ≥ 64 columns).
    static let net = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 64 dim: 8 dim: 8 } } }
    layer { name: "a" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 128 kernel_size: 1 } }
    layer { name: "ra" type: "ReLU" bottom: "a" top: "a" }
    layer { name: "b" type: "Convolution" bottom: "a" top: "b" convolution_param { num_output: 64 kernel_size: 1 } }
    layer { name: "rb" type: "ReLU" bottom: "b" top: "b" }
    layer { name: "c" type: "Convolution" bottom: "b" top: "c" convolution_param { num_output: 32 kernel_size: 1 } }
    layer { name: "rc" type: "ReLU" bottom: "c" top: "c" }
    """

    /// `relu(W · x + bias)` per image for a 1×1 convolution, in Double, as Caffe's loops define it.
    static func reference(_ x: [Float], images: Int, inputs c: Int, pixels: Int, weights: [Float], bias: [Float]) -> [Float] {
        let o = bias.count
        var y = [Float](repeating: 0, count: images * o * pixels)
        for image in 0..<images {
            for out in 0..<o {
                for p in 0..<pixels {
                    var sum = Double(bias[out])
                    for i in 0..<c { sum += Double(weights[out * c + i]) * Double(x[(image * c + i) * pixels + p]) }
                    y[(image * o + out) * pixels + p] = Float(max(0, sum))
                }
            }
        }
        return y
    }

    @Test("three 1×1 convolutions of different depth and width share one panel GEMM kernel and match the reference",
          arguments: VectorISA.allCases)
    func productsShareOneKernel(_ isa: VectorISA) throws {
        let cache = try KernelCache(cpuFeatures: isa.features())
        cache.verifiesSignatures = true
        let compiler = try Compiler(threads: 2, cache: cache)
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: Self.net, file: "extents.prototxt"))
        let parameters = try Self.parameters(for: Self.net)
        let net = try compiler.compile(graph: graph, parameters: parameters)
        let kernels = Set(net.executable.steps.compactMap { step -> String? in
            guard ["a", "b", "c"].contains(step.label), case .kernel(let k) = step.action else { return nil }
            return k.kernel.name
        })
        #expect(kernels.count == 1 && kernels.allSatisfy { $0.hasPrefix("conv_panels") }, "\(kernels)")

        var values = SeededValues(seed: 11, step: 1 / 1000.0)
        let x = values.next(2 * 64 * 64)
        let outputs = try net.run(inputs: ["x": NDArray(shape: [2, 64, 8, 8], data: x)])
        var bottom = x, channels = 64
        for layer in ["a", "b", "c"] {
            let expected = Self.reference(bottom, images: 2, inputs: channels, pixels: 64, weights: parameters[layer]![0].data,
                                          bias: parameters[layer]![1].data)
            let actual = try #require(outputs[layer]).data
            #expect(actual.count == expected.count)
            let worst = zip(actual, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            #expect(worst < 1e-5, "\(layer) on \(isa): worst relative error \(worst)")
            (bottom, channels) = (actual, expected.count / 2 / 64)
        }

        // A second net whose products differ only in their extents compiles no kernel at all.
        let wider = Self.net.replacingOccurrences(of: "dim: 8 dim: 8", with: "dim: 16 dim: 4")
            .replacingOccurrences(of: "num_output: 128", with: "num_output: 96")
        let second = try compiler.compile(graph: GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: wider, file: "wider.prototxt")),
                                          parameters: Self.parameters(for: wider))
        #expect(second.kernels.compiled == 0, "\(second.kernels.summary)")
    }

    /// Seeded parameters for `net`'s layers.
    static func parameters(for net: String) throws -> [String: [NDArray]] {
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: net, file: "extents.prototxt"))
        var values = SeededValues(seed: 12, step: 1 / 1000.0)
        var parameters: [String: [NDArray]] = [:]
        for node in graph.nodes where !node.parameters.isEmpty {
            parameters[node.name] = node.parameters.map { NDArray(shape: $0.shape.dims, data: values.next($0.shape.dims.reduce(1, *))) }
        }
        return parameters
    }
}
