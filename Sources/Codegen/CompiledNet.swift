import CaffeFormat
import Foundation
import Graph
import NumPy
import Runtime

/// One execution context of a `CompiledProgram`, ready to run forward: an `Executable` over its
/// own arena, with the program's kernels and read-only constants.
///
/// `run` takes inputs by blob name and returns the kept blobs by name (all of them, or `blobs`),
/// as NumPy arrays in C order. Runs are serialized; for concurrency make one context per thread
/// (`program.makeContext()`), which costs an arena and nothing else.
/// A net with Filter layers returns each run's blobs in the shapes that run's selected row
/// counts give them, as Caffe does, re-specializing itself when a count changes (`RowSpecializer`).
///
///     let outputs = try net.run(inputs: ["data": x])         // every kept blob
///     let prob = try net.run(inputs: ["data": x], blobs: ["prob"])["prob"]!
public final class CompiledNet: @unchecked Sendable {
    /// A blob in someone's memory: its shape and its values in C order.
    public typealias BlobView = (shape: [Int], values: UnsafeBufferPointer<Float>)

    /// The schedule for the graph's own shapes (for a net with Filter layers: Caffe's setup
    /// shapes, all rows selected).
    public let executable: Executable
    /// Where this compilation's kernels came from (compiled, disk cache, already in the process) and their cost.
    public let kernels: KernelStatistics
    /// Kernels this compilation optimized and compiled from IR (the rest came from a cache).
    public var compiledKernels: Int { kernels.compiled }
    /// Wall time of the program's compilation (lowering, kernels, constants) plus this context's
    /// creation (its arena). Graph passes run before it (`Model` runs them) are not included.
    public let compileSeconds: Double
    /// `compileSeconds` by phase.
    public let phases: CompilePhases
    /// The program this context runs (and which keeps the kernels' code and the constants alive).
    public let program: CompiledProgram
    /// Run-time conditions on inputs that Caffe CHECK-fails on (ROI batch indices).
    private let inputChecks: [InputCheck]
    /// This compilation as a variant (with its row guards), for a re-specialization to hand over.
    let first: Variant
    /// For a net with data-dependent rows (Filter, DetectionOutput): its variants by row counts; nil otherwise.
    private let rows: RowSpecializer<Variant>?
    private let lock = NSLock()

    /// One compiled schedule: for the graph's shapes, or re-specialized for Filter row counts.
    struct Variant: RowVariant {
        var executable: Executable
        var rowGuards: [RowGuard]
        var inputChecks: [InputCheck]
    }

    init(first: Variant, program: CompiledProgram, kernels: KernelStatistics, compileSeconds: Double, phases: CompilePhases,
         rows: RowSpecializer<Variant>?) {
        executable = first.executable
        inputChecks = first.inputChecks
        self.first = first
        self.rows = rows
        self.program = program
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
    /// For a net with data-dependent rows (Filter, DetectionOutput): the row counts the last run gave (or the setup counts
    /// before any run) and how many re-specializations runs have compiled so far; nil otherwise.
    public var filterRows: (current: [Int], specializations: Int)? {
        lock.lock()
        defer { lock.unlock() }
        return rows.map { ($0.currentRows, $0.specializations) }
    }

    /// Runs the net forward once. Every input must be given with exactly its compiled shape; an
    /// error names the blob and both shapes.
    public func run(inputs: [String: NDArray], blobs: [String]? = nil) throws -> [String: NDArray] {
        for binding in executable.inputs where inputs[binding.name] == nil {
            throw RuntimeError("missing input '\(binding.name)' (shape \(CompiledNet.format(binding.shape)))",
                               hint: "pass it by name; the net's inputs are " + executable.inputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        return try CompiledNet.withViews(inputs[...], [:]) { views in
            let results = try runInPlace(inputs: views, blobs: blobs)
            return results.mapValues { NDArray(shape: $0.shape, data: Array($0.values)) }
        }
    }

    /// Runs the net forward once with inputs read straight from the caller's memory into the arena,
    /// and returns the kept blobs as views of this context's own memory — valid until its next run
    /// (no copies: what the C API and the server hand out). Inputs missing from `inputs` keep what
    /// the arena holds (values the caller wrote through `inputBuffer`). Errors as `run`.
    public func runInPlace(inputs: [String: BlobView],
                           blobs: [String]? = nil) throws -> [String: BlobView] {
        lock.lock()
        defer { lock.unlock() }
        if let unknown = inputs.keys.sorted().first(where: { name in !executable.inputs.contains { $0.name == name } }) {
            throw RuntimeError("'\(unknown)' is not an input of this net",
                               hint: "its inputs are " + executable.inputs.map { "'\($0.name)'" }.joined(separator: ", "))
        }
        for binding in executable.inputs {
            guard let given = inputs[binding.name] else { continue }
            guard given.shape == binding.shape, given.values.count == binding.shape.reduce(1, *) else {
                throw RuntimeError("input '\(binding.name)' has shape \(CompiledNet.format(given.shape)), but the net was compiled for \(CompiledNet.format(binding.shape))",
                                   hint: "reshape the input, or compile the net for that shape")
            }
        }
        for check in inputChecks {
            if let given = inputs[check.input] { try check.validate(given.values) }
        }
        let finished: Executable
        if let rows {
            finished = try run(inputs, rows: rows)
        } else {
            write(inputs, into: executable)
            executable.execute(steps: 0..<executable.steps.count)
            finished = executable
        }
        var results: [String: BlobView] = [:]
        for name in blobs ?? finished.outputs.map(\.name) {
            guard let output = finished.outputs.last(where: { $0.name == name }) else {
                throw RuntimeError("blob '\(name)' is not kept by this executable",
                                   hint: "compile the net keeping it (or all blobs) to read it back")
            }
            results[name] = (output.shape, UnsafeBufferPointer(start: finished.pointer(to: output.buffer), count: output.shape.reduce(1, *)))
        }
        return results
    }

    /// This context's own memory for input `name` (the compiled shape's worth of floats): values
    /// written there are what the next `runInPlace` reads for inputs it is not given. Nil for a
    /// name that is not an input.
    public func inputBuffer(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        guard let binding = executable.inputs.first(where: { $0.name == name }) else { return nil }
        return UnsafeMutableBufferPointer(start: executable.pointer(to: binding.buffer), count: binding.shape.reduce(1, *))
    }

    /// Copies each given input into `target`'s buffer for it (buffers from `first` on only).
    private func write(_ inputs: [String: BlobView], into target: Executable, from first: BufferID = 0) {
        for binding in target.inputs where binding.buffer >= first {
            guard let given = inputs[binding.name], let base = given.values.baseAddress else { continue }
            target.pointer(to: binding.buffer).update(from: base, count: given.values.count)
        }
    }

    /// A run through the row guards: feed the current variant, `advance` (which may move the run
    /// to the variant for this run's counts), and finish there; returns that variant's executable.
    private func run(_ inputs: [String: BlobView], rows: RowSpecializer<Variant>) throws -> Executable {
        let start = rows.current
        // Inputs not given keep their values; a switch copies them into the new variant too.
        var carried = inputs
        for binding in start.executable.inputs where carried[binding.name] == nil {
            carried[binding.name] = (binding.shape, UnsafeBufferPointer(start: start.executable.pointer(to: binding.buffer),
                                                                        count: binding.shape.reduce(1, *)))
        }
        write(inputs, into: start.executable)
        let (variant, resumeAt) = try rows.advance { next, firstNew in self.write(carried, into: next.executable, from: firstNew) }
        // Checks of layers below a Filter depend on its count (a BatchReindex of filtered rows).
        if variant.executable !== start.executable {
            for check in variant.inputChecks {
                if let given = carried[check.input] { try check.validate(given.values) }
            }
        }
        variant.executable.execute(steps: resumeAt..<variant.executable.steps.count)
        return variant.executable
    }

    /// Calls `body` with `arrays` viewed as buffers (pinned for the call's duration), added to `views`.
    private static func withViews<R>(_ arrays: Dictionary<String, NDArray>.SubSequence, _ views: [String: BlobView],
                                     _ body: ([String: BlobView]) throws -> R) throws -> R {
        guard let (name, array) = arrays.first else { return try body(views) }
        return try array.data.withUnsafeBufferPointer { values in
            var views = views
            views[name] = (array.shape, values)
            return try withViews(arrays.dropFirst(), views, body)
        }
    }

    /// `2×3×4`, or `scalar` for a 0-d shape, as every message prints shapes.
    public static func format(_ shape: [Int]) -> String {
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
