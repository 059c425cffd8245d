import CaffeFormat
@testable import Codegen
import Foundation
import Graph
import NumPy
import Runtime
import Testing

/// Builds a graph from prototxt text.
func graph(_ text: String, inputShapes: [String: TensorShape] = [:]) throws -> Graph {
    try GraphBuilder(phase: .test, inputShapes: inputShapes).build(CaffeFiles.parseNet(text: text, file: "test.prototxt"))
}

let poolNet = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "pool" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "p" top: "p" }
"""

@Suite("JIT and compiler")
struct CompilerTests {
    @Test("the kernel cache returns the same function for the same signature or the same code, and compiles new code")
    func kernelCache() throws {
        let cache = try KernelCache()
        var builds = 0
        func relu(_ signature: String, slope: Float = 0) throws -> Kernel {
            try cache.kernel(signature, operands: 2) { b in
                builds += 1
                let (x, y) = (b.operand(0), b.operand(1))
                b.forEachTask { i in y[i] = b.select(x[i] > 0, x[i], x[i] * slope) }
            }
        }
        let first = try relu("relu n=16")
        let again = try relu("relu n=16")
        #expect(unsafeBitCast(first.function, to: UInt.self) == unsafeBitCast(again.function, to: UInt.self))
        #expect(builds == 1 && cache.compileCount == 1)
        // A new signature whose code is the same (the kernel does not depend on n) shares the function.
        let shared = try relu("relu n=32")
        #expect(unsafeBitCast(first.function, to: UInt.self) == unsafeBitCast(shared.function, to: UInt.self))
        #expect(builds == 2 && cache.compileCount == 1 && cache.count == 2)
        let other = try relu("relu n=16 slope=0.5", slope: 0.5)
        #expect(unsafeBitCast(first.function, to: UInt.self) != unsafeBitCast(other.function, to: UInt.self))
        #expect(builds == 3 && cache.compileCount == 2 && cache.count == 3)

        // The compiled code runs: max(x, 0) over a task range.
        var x: [Float] = [-1, 2, -3, 4], y = [Float](repeating: 9, count: 4)
        x.withUnsafeMutableBufferPointer { xs in
            y.withUnsafeMutableBufferPointer { ys in
                var operands: [UnsafeMutablePointer<Float>?] = [xs.baseAddress, ys.baseAddress]
                first.function!(&operands, 1, 4)
            }
        }
        #expect(y == [9, 2, 0, 4])
    }

    @Test("recompiling a net reuses its kernels; a new input shape compiles only the changed ones")
    func recompilation() throws {
        let compiler = try Compiler(cache: KernelCache())
        let first = try compiler.compile(graph: graph(poolNet), parameters: [:])
        #expect(first.compiledKernels == 2)
        let same = try compiler.compile(graph: graph(poolNet), parameters: [:])
        #expect(same.compiledKernels == 0)
        let reshaped = try compiler.compile(graph: graph(poolNet, inputShapes: ["x": TensorShape([2, 3, 10, 10])]), parameters: [:])
        // Pooling is specialized on the plane size; ReLU's element-wise kernel is shape-agnostic.
        #expect(reshaped.compiledKernels == 1)
        let out = try reshaped.run(inputs: ["x": NDArray(shape: [2, 3, 10, 10], repeating: -1)])
        #expect(out["p"]?.shape == [2, 3, 5, 5])
        #expect(out["p"]?.data.allSatisfy { $0 == 0 } == true)
    }

    @Test("an element-wise kernel vectorizes to the host's vector width")
    func vectorization() throws {
        let jit = try KernelJIT()
        let seen = Locked<String>("")
        jit.inspectOptimizedIR = { _, ir in seen.value = ir }
        let cache = try KernelCache(jit: jit)
        _ = try cache.kernel("scale 64", operands: 2) { b in
            let (x, y) = (b.operand(0), b.operand(1))
            b.loop(0..<64) { i in y[i] = x[i] * 2 }
        }
        #expect(seen.value.contains("x float>"))
        if jit.cpuFeatures.contains("+avx512f") { #expect(seen.value.contains("<16 x float>") || seen.value.contains("<8 x float>")) }
    }

    @Test("a missing or misshapen input is an error naming the blob and both shapes")
    func inputErrors() throws {
        let net = try sharedCompiler.compile(graph: graph(poolNet), parameters: [:])
        #expect(throws: RuntimeError.self) { try net.run(inputs: [:]) }
        do {
            _ = try net.run(inputs: [:])
        } catch let error as RuntimeError {
            #expect(error.message.contains("'x'") && error.message.contains("2×3×8×8"))
        }
        do {
            _ = try net.run(inputs: ["x": NDArray(shape: [1, 3, 8, 8], repeating: 0)])
            Issue.record("expected a shape error")
        } catch let error as RuntimeError {
            #expect(error.message.contains("'x'") && error.message.contains("1×3×8×8") && error.message.contains("2×3×8×8"))
        }
    }

    @Test("missing weights and unsupported layers are diagnostics naming the layer")
    func compileErrors() throws {
        let conv = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
        layer { name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 3 } }
        """
        do {
            _ = try sharedCompiler.compile(graph: graph(conv), parameters: [:])
            Issue.record("expected missing weights to fail")
        } catch let error as Diagnostic {
            #expect(error.layer == "conv" && error.message.contains("2 parameter blobs"))
        }
        do {
            _ = try sharedCompiler.compile(graph: graph(conv), parameters: ["conv": [NDArray(shape: [2, 1, 2, 2], repeating: 1), NDArray([0, 0])]])
            Issue.record("expected misshapen weights to fail")
        } catch let error as Diagnostic {
            #expect(error.layer == "conv" && error.message.contains("2×1×3×3"))
        }
        // A user's own Python layer has no lowering in inference (MultiBoxLoss, the example
        // before, now runs).
        let python = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 8 } } }
        layer { name: "top" type: "Python" bottom: "x" top: "y" python_param { module: "my_layers" layer: "MyScale" } }
        """
        do {
            _ = try sharedCompiler.compile(graph: graph(python), parameters: [:])
            Issue.record("expected a user's Python layer to be unsupported")
        } catch let error as Diagnostic {
            #expect(error.layer == "top" && error.message.contains("Python"), "\(error)")
        }
    }

    @Test("keeping only the outputs lets activations share the arena, with the same results")
    func memoryReuse() throws {
        let lenet = try GoldenCase("nets", "lenet_deploy")
        let all = try sharedCompiler.compile(graph: lenet.graph(), parameters: lenet.parameters(), keeping: .all)
        let outputs = try sharedCompiler.compile(graph: lenet.graph(), parameters: lenet.parameters(), keeping: .outputs)
        #expect(outputs.memory.planned < all.memory.planned)
        #expect(outputs.memory.planned < outputs.memory.naive)
        #expect(outputs.blobNames == ["prob"])
        let inputs = try lenet.inputs()
        let expected = try lenet.expected()["prob"]!
        let result = try outputs.run(inputs: inputs)["prob"]!
        #expect(zip(result.data, expected.data).allSatisfy { abs($0 - $1) <= 1e-6 })
        #expect(throws: RuntimeError.self) { try outputs.run(inputs: inputs, blobs: ["conv1"]) }
        // Runs are repeatable (the arena is reused between runs).
        #expect(try outputs.run(inputs: inputs)["prob"]! == result)
    }
}

/// A value guarded by a lock, for callbacks.
final class Locked<T>: @unchecked Sendable {
    private var stored: T
    private let lock = NSLock()
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
    /// Changes the value under the lock (a read-modify-write no other thread can interleave with).
    func update(_ change: (inout T) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        change(&stored)
    }
}
