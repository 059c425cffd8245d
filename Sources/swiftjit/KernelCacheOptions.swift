import ArgumentParser
import Foundation
import SwiftJIT

/// `--no-kernel-cache`, shared by every command that compiles a net, and the compile report lines.
///
/// Commands keep compiled kernels in the standard disk cache (`KernelDiskCache.standardDirectory`:
/// `$SWIFTJIT_CACHE_DIR`, `$XDG_CACHE_HOME/swiftjit` or `~/.cache/swiftjit`), so running the same
/// net again links its kernels instead of compiling them.
struct KernelCacheOptions: ParsableArguments {
    @Flag(name: .long, help: "Compile every kernel from IR; neither read nor write the kernel cache ($SWIFTJIT_CACHE_DIR, else $XDG_CACHE_HOME/swiftjit or ~/.cache/swiftjit).")
    var noKernelCache = false

    /// The disk cache these options ask for (nil when disabled or no directory is known).
    var disk: KernelDiskCache? { noKernelCache ? nil : KernelDiskCache.standard() }

    func makeCache() throws -> KernelCache {
        try KernelCache(disk: disk)
    }

    /// `compile: 0.123 s (graph → executable; 23 kernels: …)` and a line of where the time went.
    /// `seconds` is the whole compilation as the command timed it (graph passes included).
    func report(seconds: Double, _ net: CompiledNet) -> String {
        report(seconds: seconds, kernels: net.kernels, phases: net.phases, compileSeconds: net.compileSeconds)
    }

    /// The same lines for a training net: the same phases, counted the same way.
    func report(seconds: Double, _ net: TrainingNet) -> String {
        report(seconds: seconds, kernels: net.kernels, phases: net.phases, compileSeconds: net.compileSeconds)
    }

    private func report(seconds: Double, kernels k: KernelStatistics, phases p: CompilePhases, compileSeconds: Double) -> String {
        var lines = [String(format: "compile: %.3f s (graph → executable; %@)", seconds, k.summary)]
        lines.append(String(format: "  passes %.3f s, lowering %.3f s, kernels %.3f s (IR %.3f s, cache reads %.3f s, optimize %.3f s + codegen %.3f s CPU on %d thread%@, link %.3f s), arena and weights %.3f s",
                            max(0, seconds - compileSeconds), p.lowering, p.kernels, k.generateSeconds, k.loadSeconds,
                            k.optimizeSeconds, k.codegenSeconds, k.threads, k.threads == 1 ? "" : "s", k.linkSeconds, p.executable))
        lines.append(cacheLine)
        lines += slowestLines(k)
        warn(k)
        return lines.joined(separator: "\n")
    }

    /// `  slowest kernels to compile: …` lines, when any kernel took 0.1 s or more, and the kernel
    /// families that took the most compile time in all (when kernels were compiled at all).
    private func slowestLines(_ kernels: KernelStatistics) -> [String] {
        var lines: [String] = []
        let slow = kernels.slowest.filter { $0.seconds >= 0.1 }
        if !slow.isEmpty {
            lines += ["  slowest kernels to compile (CPU s):"] + slow.map { String(format: "    %.3f  %@", $0.seconds, $0.signature) }
        }
        let families = kernels.families.sorted { $0.value.seconds > $1.value.seconds }.prefix(6)
        if kernels.optimizeSeconds + kernels.codegenSeconds >= 0.5, !families.isEmpty {
            lines.append("  compile CPU s by kernel family: " + families.map {
                String(format: "%@ %.2f (%d)", $0.key, $0.value.seconds, $0.value.kernels)
            }.joined(separator: ", "))
        }
        return lines
    }

    private var cacheLine: String {
        guard let disk else { return "  kernel cache: off" + (noKernelCache ? " (--no-kernel-cache)" : " (no $HOME or $SWIFTJIT_CACHE_DIR)") }
        return "  kernel cache: \(disk.directory.path)"
    }

    private func warn(_ kernels: KernelStatistics) {
        for warning in kernels.warnings { FileHandle.standardError.write(Data(("warning: " + warning + "\n").utf8)) }
    }
}

/// Seconds since `start` (a `DispatchTime` uptime in nanoseconds).
func elapsed(since start: UInt64) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}
