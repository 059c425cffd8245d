import CLLVM
import Foundation
import Runtime

/// Compiled kernels by signature, so a kernel is generated once per distinct op and shape.
///
/// A signature is a string that spells out everything the generated code depends on — the op
/// family, every extent, stride, pad and constant — for example
/// `pool.max n2c3 h7w9 k3x3 s2x2 p1x1 mask`. Two layers with equal signatures share one function;
/// reshaping a net changes only the signatures of the layers whose shapes changed, so only those
/// recompile. The cache owns its `KernelJIT` (compiled code lives as long as the cache).
///
///     let cache = try KernelCache()
///     let relu = try cache.kernel("relu n=1024 slope=0", operands: 2) { b in … }
public final class KernelCache: @unchecked Sendable {
    /// The JIT every kernel is compiled by.
    public let jit: KernelJIT
    private var kernels: [String: Kernel] = [:]
    private var counter = 0
    /// How many kernels have been compiled (cache misses) so far.
    public private(set) var compileCount = 0
    /// Seconds spent generating, optimizing and compiling kernels.
    public private(set) var compileSeconds = 0.0

    public init(jit: KernelJIT? = nil) throws {
        self.jit = try jit ?? KernelJIT()
    }

    /// The number of distinct kernels held.
    public var count: Int { jit.withLock { kernels.count } }

    /// The cached kernel for `signature`, if any.
    public func cached(_ signature: String) -> Kernel? {
        jit.withLock { kernels[signature] }
    }

    /// The kernel for `signature`, generating it with `build` (which receives a builder whose function
    /// takes `operands` buffers) on a miss.
    func kernel(_ signature: String, operands: Int, _ build: (KernelBuilder) throws -> Void) throws -> Kernel {
        try jit.withLock {
            if let kernel = kernels[signature] { return kernel }
            let start = Date()
            counter += 1
            let family = signature.prefix { $0.isLetter || $0 == "." || $0 == "_" }
            let name = "\(family.replacingOccurrences(of: ".", with: "_"))_\(counter)"
            let builder = KernelBuilder(name: name, operandCount: operands, jit: jit)
            do {
                try build(builder)
            } catch {
                LLVMDisposeModule(builder.finish())
                throw error
            }
            try jit.add(builder.finish(), name: name)
            let kernel = Kernel(name: name, function: try jit.lookupKernel(name))
            kernels[signature] = kernel
            compileCount += 1
            compileSeconds += Date().timeIntervalSince(start)
            return kernel
        }
    }
}
