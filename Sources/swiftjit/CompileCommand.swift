import ArgumentParser
import Foundation
import Runtime
import SwiftJIT

/// `swiftjit compile`: what every layer of a net produces, and whether weights fit it.
struct CompileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compile",
        abstract: "Read a net, infer every blob's shape, and print one row per layer.",
        discussion: """
        Reads today's `layer {}` prototxt and the old V0/V1 `layers {}` formats (upgraded on load). Each row shows the layer's tops with their shapes, its parameter shapes (weights, bias, ...) and its forward FLOPs (a multiply-add counts 2). A `?` is an extent known only once data is read (e.g. a Data layer's image size): give it with --input.

        With --weights, checks the .caffemodel against the net the way Caffe copies weights (by layer name, shape by shape) and lists the layers it initializes and those it leaves to their fillers.

        A TEST-phase net is then JIT-compiled for inference (with --weights, or the prototxt's fillers), and the summary reports the compile time (graph to executable) and how many kernels were compiled or came from the kernel cache; when it cannot be compiled, the summary says why. --no-jit skips this.

        --emit llvm prints, instead of the table, the compiled schedule step by step as comment lines (each step's kernel, OpenBLAS GEMM or host call), then the IR of every kernel (as generated, before the optimizer; specialized to the net's shapes) linked into one LLVM module, so the output is one file `llvm-as`, `opt` and `llc` accept.

          swiftjit compile deploy.prototxt --input data=1,3,224,224 --emit llvm > kernels.ll
        """
    )

    @Argument(help: "The net definition (.prototxt).")
    var net: String

    @Option(name: .long, help: "A .caffemodel to check against the net.")
    var weights: String?

    @Option(name: .long, help: "The phase to build: test or train.")
    var phase: PhaseOption = .test

    @Option(name: .long, help: "Net stages to enable (repeatable), as in Caffe's NetState.")
    var stage: [String] = []

    @Option(name: .long, help: "Net level, as in Caffe's NetState.")
    var level: Int32?

    @Option(name: .long, help: "Override an input's shape: NAME=d0,d1,... (repeatable), e.g. data=1,3,224,224.")
    var input: [InputShape] = []

    @Flag(name: .long, help: "Print one JSON document instead of the table.")
    var json = false

    @Flag(name: .long, help: "Only read the net and infer shapes: do not JIT-compile it.")
    var noJit = false

    @Option(name: .long, help: "Print the compiled kernels instead of the table: llvm (their IR, step by step).")
    var emit: EmitFormat?

    @OptionGroup var kernelCache: KernelCacheOptions

    func run() throws {
        let shapes = Dictionary(input.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 })
        let inspection = NetInspection(netPath: net, weightsPath: weights, phase: phase.caffePhase,
                                       stages: stage.isEmpty ? nil : stage, level: level, inputShapes: shapes)
        do {
            if let emit {
                guard !noJit, phase == .test, stage.isEmpty, level == nil else {
                    throw ValidationError("--emit \(emit.rawValue) prints the kernels of the TEST-phase inference net: drop --no-jit, --phase train, --stage and --level")
                }
                try emitLLVM(shapes.mapValues(\.dims))
                return
            }
            var summary = try inspection.summarize()
            if !noJit, phase == .test, stage.isEmpty, level == nil {
                summary.compilation = compileForInference(shapes.mapValues(\.dims))
            }
            print(json ? summary.json : summary.table)
        } catch {
            throw fail(error)
        }
    }

    /// Compiles the net as `swiftjit run` would, keeping every kernel's IR, and prints the
    /// schedule as comment lines (one per step, naming its kernel), then every kernel's IR linked
    /// into one module, so the whole output is one file LLVM's tools accept.
    private func emitLLVM(_ shapes: [String: [Int]]) throws {
        let cache = try kernelCache.makeCache()
        cache.keepIR()
        let (compiled, _) = try compile(shapes, cache: cache)
        var printed = Set<String>()
        var modules: [(name: String, ir: String)] = []
        var missing: [String] = []
        print("; swiftjit compile --emit llvm \(net): the schedule, one line per step, then every kernel's IR (as generated, before the optimizer) in one module")
        func show(_ action: Step.Action, layer: String) {
            switch action {
            case .kernel(let step):
                let name = step.kernel.name
                let first = printed.insert(name).inserted
                print("; \(layer): kernel \(name)\(first ? "" : " (above)"), \(step.taskCount) task\(step.taskCount == 1 ? "" : "s")")
                if first {
                    if let ir = cache.ir(of: name) { modules.append((name, ir)) } else { missing.append(name) }
                }
            case .gemm(let g):
                print("; \(layer): OpenBLAS sgemm M=\(g.m) N=\(g.n) K=\(g.k)\(g.repeats > 1 ? " ×\(g.repeats)" : "")\(g.beta != 0 ? " accumulating" : "")")
            case .host:
                print("; \(layer): a call into the host (a caller-implemented layer)")
            case .items(let loop):
                print("; \(layer): for each of \(loop.items) items:")
                for inner in loop.body { show(inner, layer: layer) }
            }
        }
        for step in compiled.executable.steps { show(step.action, layer: step.label) }
        for name in missing { print("; \(name): its IR was not built in this process") }
        print("")
        print(try LinkedIR.link(modules, name: URL(fileURLWithPath: net).lastPathComponent), terminator: "")
        FileHandle.standardError.write(Data("\(compiled.executable.steps.count) steps, \(printed.count) kernels\n".utf8))
    }

    /// The net compiled for inference as `swiftjit run` compiles it, with its kernels in `cache`,
    /// and the seconds from graph to executable (not reading the weights).
    private func compile(_ shapes: [String: [Int]], cache: KernelCache) throws -> (CompiledNet, seconds: Double) {
        let net = try Net(prototxt: self.net, weights: weights, inputShapes: shapes, compiler: Compiler(cache: cache))
        let start = DispatchTime.now().uptimeNanoseconds
        let compiled = try net.compiled(for: Dictionary(net.inputs.map { ($0.name, $0.shape) }, uniquingKeysWith: { $1 }))
        return (compiled, elapsed(since: start))
    }

    /// Compiles the net as `swiftjit run` would, timing graph to executable (not the weights).
    private func compileForInference(_ shapes: [String: [Int]]) -> NetSummary.Compilation {
        do {
            let (compiled, seconds) = try compile(shapes, cache: kernelCache.makeCache())
            for warning in compiled.kernels.warnings { FileHandle.standardError.write(Data(("warning: " + warning + "\n").utf8)) }
            return NetSummary.Compilation(seconds: seconds, kernels: compiled.kernels, plannedActivationBytes: 4 * compiled.memory.planned,
                                          kernelCache: kernelCache.disk?.directory.path)
        } catch {
            return NetSummary.Compilation(notCompiled: (error as? Diagnostic)?.description ?? "\(error)")
        }
    }
}

/// What `swiftjit compile --emit` prints.
enum EmitFormat: String, ExpressibleByArgument, CaseIterable {
    case llvm
}

enum PhaseOption: String, ExpressibleByArgument, CaseIterable {
    case test, train
    var caffePhase: Caffe_Phase { self == .train ? .train : .test }
}

/// `NAME=d0,d1,...` from the command line.
struct InputShape: ExpressibleByArgument {
    var name: String
    var shape: TensorShape

    init?(argument: String) {
        guard let equals = argument.lastIndex(of: "=") else { return nil }
        name = String(argument[..<equals])
        let dims = argument[argument.index(after: equals)...].split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !name.isEmpty, !dims.isEmpty, dims.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        shape = TensorShape(dims.map { $0! })
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
