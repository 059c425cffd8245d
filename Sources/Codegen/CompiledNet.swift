import CaffeFormat
import Graph
import NumPy
import Runtime

/// A net compiled for fixed input shapes, ready to run forward: the `Executable` plus the JIT
/// that holds its kernels' code.
///
/// `run` takes inputs by blob name and returns the kept blobs by name (all of them, or `blobs`),
/// as NumPy arrays in C order. Runs are serialized; compile once per thread for concurrency.
///
///     let outputs = try net.run(inputs: ["data": x])         // every kept blob
///     let prob = try net.run(inputs: ["data": x], blobs: ["prob"])["prob"]!
public final class CompiledNet: @unchecked Sendable {
    public let executable: Executable
    /// Where this compilation's kernels came from (compiled, disk cache, already in the process) and their cost.
    public let kernels: KernelStatistics
    /// Kernels this compilation optimized and compiled from IR (the rest came from a cache).
    public var compiledKernels: Int { kernels.compiled }
    /// Wall time of `NetCompiler.compile`, graph to executable: lowering, kernels, memory planning
    /// and binding the weights. Graph passes run before it (`Net` runs them) are not included.
    public let compileSeconds: Double
    /// `compileSeconds` by phase.
    public let phases: CompilePhases
    /// Keeps the JIT (and so the kernels' code) alive.
    private let cache: KernelCache
    /// Run-time conditions on inputs that Caffe CHECK-fails on (ROI batch indices).
    private let inputChecks: [InputCheck]

    init(executable: Executable, cache: KernelCache, kernels: KernelStatistics, compileSeconds: Double, phases: CompilePhases,
         inputChecks: [InputCheck] = []) {
        self.executable = executable
        self.inputChecks = inputChecks
        self.cache = cache
        self.kernels = kernels
        self.compileSeconds = compileSeconds
        self.phases = phases
    }

    /// The net's inputs and their shapes.
    public var inputShapes: [(name: String, shape: [Int])] { executable.inputs.map { ($0.name, $0.shape) } }
    /// The blobs `run` can return.
    public var blobNames: [String] { executable.outputs.map(\.name) }
    /// Arena floats with reuse, and what one buffer per blob would take.
    public var memory: (planned: Int, naive: Int) { (executable.memoryPlan.arenaCount, executable.memoryPlan.naiveCount) }

    /// Runs the net forward once. Every input must be given with exactly its compiled shape; an
    /// error names the blob and both shapes.
    public func run(inputs: [String: NDArray], blobs: [String]? = nil) throws -> [String: NDArray] {
        for check in inputChecks {
            if let array = inputs[check.input] { try check.validate(array.data) }
        }
        var tensors: [String: Tensor] = [:]
        for (name, array) in inputs {
            if let expected = executable.inputs.first(where: { $0.name == name }), expected.shape != array.shape {
                throw RuntimeError("input '\(name)' has shape \(CompiledNet.format(array.shape)), but the net was compiled for \(CompiledNet.format(expected.shape))",
                                   hint: "reshape the input, or compile the net for that shape")
            }
            tensors[name] = try Tensor(shape: array.shape, values: array.data)
        }
        let results = try executable.run(inputs: tensors, requested: blobs)
        return results.mapValues { NDArray(shape: $0.shape, data: $0.values) }
    }

    static func format(_ shape: [Int]) -> String {
        shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "×")
    }
}

/// Where a compilation's wall time went, in seconds.
public struct CompilePhases: Sendable, Equatable {
    /// Lowering layers into steps (kernel IR building excluded).
    public var lowering: Double
    /// Building, digesting, loading, optimizing, compiling and linking kernels.
    public var kernels: Double
    /// Planning the arena, allocating it and copying the constants (weights) into place.
    public var executable: Double

    public init(lowering: Double, kernels: Double, executable: Double) {
        self.lowering = lowering
        self.kernels = kernels
        self.executable = executable
    }
}

/// Reads a caffemodel's parameter blobs into arrays by layer name, for `NetCompiler.compile`.
public enum CaffeParameters {
    /// Each layer's blobs in order, from `data` (or `double_data`, narrowed to float), shaped by
    /// `shape { dim }` or the legacy num/channels/height/width fields. Layers without blobs are
    /// left out; a layer name that appears twice keeps its first occurrence, as Caffe copies it.
    public static func arrays(from net: Caffe_NetParameter) throws -> [String: [NDArray]] {
        var result: [String: [NDArray]] = [:]
        for layer in net.layer where !layer.blobs.isEmpty && result[layer.name] == nil {
            result[layer.name] = try layer.blobs.enumerated().map { index, blob in
                let values = blob.data.isEmpty ? blob.doubleData.map(Float.init) : blob.data
                var dims = WeightBinding.declaredShape(blob).dims
                if !blob.hasShape, dims.isEmpty { dims = [values.count] }
                guard dims.reduce(1, *) == values.count else {
                    throw Diagnostic("blob \(index) declares \(dims.map(String.init).joined(separator: "×")) = \(dims.reduce(1, *)) values but stores \(values.count)",
                                     layer: layer.name, hint: "the caffemodel is corrupt or truncated; re-export it")
                }
                return NDArray(shape: dims, data: values)
            }
        }
        return result
    }
}
