import CaffeFormat
import Foundation
import Graph
import NumPy
import Runtime

/// A net compiled for fixed input shapes, ready to run forward: the `Executable` plus the JIT
/// that holds its kernels' code.
///
/// `run` takes inputs by blob name and returns the kept blobs by name (all of them, or `blobs`),
/// as NumPy arrays in C order. Runs are serialized; compile once per thread for concurrency.
/// A net with Filter layers returns each run's blobs in the shapes that run's selected row
/// counts give them, as Caffe does, re-specializing itself when a count changes (`RowSpecializer`).
///
///     let outputs = try net.run(inputs: ["data": x])         // every kept blob
///     let prob = try net.run(inputs: ["data": x], blobs: ["prob"])["prob"]!
public final class CompiledNet: @unchecked Sendable {
    /// The schedule for the graph's own shapes (for a net with Filter layers: Caffe's setup
    /// shapes, all rows selected).
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
    /// This compilation as a variant (with its row guards), for a re-specialization to hand over.
    let first: Variant
    /// For a net with Filter layers: its variants by selected row counts; nil otherwise.
    private let rows: RowSpecializer<Variant>?
    private let lock = NSLock()

    /// One compiled schedule: for the graph's shapes, or re-specialized for Filter row counts.
    struct Variant: RowVariant {
        var executable: Executable
        var rowGuards: [RowGuard]
        var inputChecks: [InputCheck]
    }

    init(first: Variant, cache: KernelCache, kernels: KernelStatistics, compileSeconds: Double, phases: CompilePhases,
         rows: RowSpecializer<Variant>?) {
        executable = first.executable
        inputChecks = first.inputChecks
        self.first = first
        self.rows = rows
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
    /// For a net with Filter layers: the row counts the last run selected (or the setup counts
    /// before any run) and how many re-specializations runs have compiled so far; nil otherwise.
    public var filterRows: (current: [Int], specializations: Int)? {
        lock.lock()
        defer { lock.unlock() }
        return rows.map { ($0.currentRows, $0.specializations) }
    }

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
        guard let rows else {
            let results = try executable.run(inputs: tensors, requested: blobs)
            return results.mapValues { NDArray(shape: $0.shape, data: $0.values) }
        }
        return try run(tensors, blobs: blobs, rows: rows)
    }

    /// A run through the row guards: feed the current variant, `advance` (which may move the run
    /// to the variant for this run's counts), finish there and read its blobs in its shapes.
    private func run(_ inputs: [String: Tensor], blobs: [String]?, rows: RowSpecializer<Variant>) throws -> [String: NDArray] {
        lock.lock()
        defer { lock.unlock() }
        for binding in executable.inputs where inputs[binding.name] == nil {
            throw RuntimeError("missing input '\(binding.name)' (shape \(CompiledNet.format(binding.shape)))",
                               hint: "pass it by name; the net's inputs are " + executable.inputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        if let unknown = inputs.keys.sorted().first(where: { name in !executable.inputs.contains { $0.name == name } }) {
            throw RuntimeError("'\(unknown)' is not an input of this net",
                               hint: "its inputs are " + executable.inputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        let start = rows.current
        for binding in start.executable.inputs {
            start.executable.pointer(to: binding.buffer).update(from: inputs[binding.name]!.buffer.pointer, count: inputs[binding.name]!.count)
        }
        let (variant, resumeAt) = try rows.advance { next, firstNew in
            for binding in next.executable.inputs where binding.buffer >= firstNew {
                next.executable.pointer(to: binding.buffer).update(from: inputs[binding.name]!.buffer.pointer, count: inputs[binding.name]!.count)
            }
        }
        // Checks of layers below a Filter depend on its count (a BatchReindex of filtered rows).
        if variant.executable !== start.executable {
            for check in variant.inputChecks {
                if let tensor = inputs[check.input] { try check.validate(tensor.values) }
            }
        }
        variant.executable.execute(steps: resumeAt..<variant.executable.steps.count)
        var results: [String: NDArray] = [:]
        for name in blobs ?? variant.executable.outputs.map(\.name) {
            guard let output = variant.executable.outputs.last(where: { $0.name == name }) else {
                throw RuntimeError("blob '\(name)' is not kept by this executable",
                                   hint: "compile the net keeping it (or all blobs) to read it back")
            }
            let count = output.shape.reduce(1, *)
            results[name] = NDArray(shape: output.shape, data: Array(UnsafeBufferPointer(start: variant.executable.pointer(to: output.buffer), count: count)))
        }
        return results
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
