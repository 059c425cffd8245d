import Foundation

/// The instruction-set features kernels are generated for: an LLVM feature string (`+avx2,-avx512f,…`)
/// that starts as the host's and may be narrowed, so an AVX-512 machine can generate, choose and run
/// the kernels an AVX2-only machine would (to test and measure both paths on one host).
///
/// Narrowing follows LLVM's dependencies: removing a feature removes every feature that needs it
/// (`-avx512f` also removes `avx512bw`, `avx512vl`, … `avx512bf16`; `-avx2` also removes AVX-512
/// and `avxvnni`), so the string never says `+avx512vl` without `+avx512f`. Adding a feature the
/// host does not have is refused: the kernels would stop with an illegal instruction.
///
/// The `swiftjit` command line, the C API and the library take an override from the environment
/// variable `SWIFTJIT_CPU_FEATURES` (`KernelJIT()` reads it, nowhere else), e.g.
///
///     SWIFTJIT_CPU_FEATURES=-avx512f swiftjit time net.prototxt    # the AVX2 kernels on an AVX-512 host
///     let avx2 = try CPUFeatures.host().applying("-avx512f")        // in code: Compiler(cpuFeatures: avx2)
public struct CPUFeatures: Hashable, Sendable, CustomStringConvertible {
    /// Feature names in the order LLVM gave them, each enabled or not.
    public private(set) var names: [String]
    private var enabled: Set<String>

    /// The environment variable that narrows the host's features.
    public static let environmentVariable = "SWIFTJIT_CPU_FEATURES"

    /// Features from an LLVM feature string (`+avx2,-avx512f`); items without a sign count as `+`.
    public init(llvm string: String) {
        names = []
        enabled = []
        for item in string.split(separator: ",") where !item.isEmpty {
            let on = !item.hasPrefix("-"), name = String(item.drop { $0 == "+" || $0 == "-" })
            if !names.contains(name) { names.append(name) }
            if on { enabled.insert(name) } else { enabled.remove(name) }
        }
    }

    /// The host CPU's features, as LLVM detects them.
    public static func host() -> CPUFeatures { CPUFeatures(llvm: KernelJIT.hostFeatureString()) }

    /// The host's features narrowed by `$SWIFTJIT_CPU_FEATURES` when it is set and not empty.
    public static func effective(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> CPUFeatures {
        guard let value = environment[environmentVariable], !value.trimmingCharacters(in: .whitespaces).isEmpty else { return host() }
        return try host().applying(value, from: environmentVariable)
    }

    /// The LLVM feature string: every known feature, `+` or `-`.
    public var llvmString: String { names.map { (enabled.contains($0) ? "+" : "-") + $0 }.joined(separator: ",") }
    public var description: String { llvmString }

    public func contains(_ feature: String) -> Bool { enabled.contains(feature) }

    /// How wide a float vector the kernels' hand-written vector code uses: 16 lanes with AVX-512, 8
    /// with AVX, else 4 (SSE).
    public var vectorLanes: Int { contains("avx512f") ? 16 : contains("avx") ? 8 : 4 }

    /// These features after the comma-separated `+name`/`-name` items of `spec`, left to right.
    /// Throws `CPUFeaturesError` naming `source` (the variable or argument it came from) for an
    /// item without a sign, a name LLVM does not know for this CPU, or a feature the host lacks.
    public func applying(_ spec: String, from source: String = environmentVariable) throws -> CPUFeatures {
        var result = self
        for raw in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let item = raw.trimmingCharacters(in: .whitespaces)
            guard let sign = item.first, sign == "+" || sign == "-", item.count > 1 else {
                throw CPUFeaturesError(source: source, value: spec,
                                       problem: "'\(item)' is not '+feature' or '-feature' (write e.g. -avx512f; items are separated by commas)")
            }
            let name = String(item.dropFirst())
            guard names.contains(name) else {
                let near = names.filter { $0.hasPrefix(String(name.prefix(4))) }.prefix(8)
                throw CPUFeaturesError(source: source, value: spec, problem: "'\(name)' is not an LLVM feature of this CPU"
                                       + (near.isEmpty ? "" : " (similar: \(near.joined(separator: ", ")))"))
            }
            if sign == "-" {
                result.enabled.subtract(CPUFeatures.dependents(of: name, among: names))
            } else {
                let needed = CPUFeatures.prerequisites(of: name).filter(names.contains)
                if let missing = needed.first(where: { !contains($0) }) {
                    throw CPUFeaturesError(source: source, value: spec,
                                           problem: "this CPU has no '\(missing)': kernels using it would stop with an illegal instruction")
                }
                result.enabled.formUnion(needed)
            }
        }
        return result
    }

    // MARK: Dependencies (x86, as LLVM 14's X86.td implies them)

    /// What each feature needs directly; every `avx512…` feature also needs `avx512f`.
    private static let requires: [String: [String]] = [
        "sse2": ["sse"], "sse3": ["sse2"], "ssse3": ["sse3"], "sse4.1": ["ssse3"], "sse4.2": ["sse4.1"], "sse4a": ["sse3"],
        "avx": ["sse4.2"], "avx2": ["avx"], "fma": ["avx"], "f16c": ["avx"], "fma4": ["avx", "sse4a"], "xop": ["fma4"],
        "avxvnni": ["avx2"], "vaes": ["aes", "avx"], "vpclmulqdq": ["avx", "pclmul"], "gfni": ["sse2"], "aes": ["sse2"],
        "pclmul": ["sse2"], "sha": ["sse2"], "avx512f": ["avx2", "fma", "f16c"], "evex512": ["avx512f"],
        "avx512bf16": ["avx512bw"], "avx512vbmi": ["avx512bw"], "avx512vbmi2": ["avx512bw"], "avx512bitalg": ["avx512bw"],
        "avx512fp16": ["avx512bw", "avx512dq", "avx512vl"], "avx512er": ["avx512cd"], "avx512pf": ["avx512cd"],
        "amx-int8": ["amx-tile"], "amx-bf16": ["amx-tile"], "widekl": ["kl"],
    ]

    private static func directRequirements(_ name: String) -> [String] {
        (requires[name] ?? []) + (name.hasPrefix("avx512") && name != "avx512f" ? ["avx512f"] : [])
    }

    /// `name` and everything it needs, transitively.
    static func prerequisites(of name: String) -> Set<String> {
        var found: Set<String> = [name], pending = [name]
        while let next = pending.popLast() {
            for needed in directRequirements(next) where found.insert(needed).inserted { pending.append(needed) }
        }
        return found
    }

    /// `name` and every feature among `names` that needs it, transitively.
    static func dependents(of name: String, among names: [String]) -> Set<String> {
        Set(names.filter { prerequisites(of: $0).contains(name) }).union([name])
    }
}

/// A malformed or impossible CPU feature override, e.g. `SWIFTJIT_CPU_FEATURES=-avx51f`.
public struct CPUFeaturesError: Error, CustomStringConvertible, Sendable {
    /// Where the value came from (`SWIFTJIT_CPU_FEATURES`).
    public var source: String
    public var value: String
    public var problem: String

    public var description: String { "\(source)='\(value)': \(problem)" }
}
