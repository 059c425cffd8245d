import CLLVM
import Foundation
import Runtime

/// Compiled kernels by signature and by content, in this process and optionally on disk, so a
/// kernel is optimized and compiled once per distinct piece of code, ever.
///
/// A signature is a string that spells out everything the generated code depends on — the op
/// family, every extent, stride, pad and constant — for example
/// `pool.max n2c3 h7w9 k3x3 s2x2 p1x1 mask`. A kernel's symbol is its family and a digest of its
/// unoptimized IR (`pool_max_3f9c…`), so two signatures that generate the same code (an im2col
/// over 64 or 128 channels of the same plane) share one function, and reshaping a net recompiles
/// only the kernels whose code changed. With a `KernelDiskCache`, object code also outlives the
/// process: a kernel compiled once is linked, not compiled, by every later process on the machine
/// (see `KernelDiskCache` for the key and its invalidation rules).
///
/// Compilers ask for kernels through a `KernelBatch` while lowering a net and compile the batch
/// once lowering is done: its new kernels are looked up on disk, the rest are optimized and
/// compiled on `compileThreads` threads, and everything is linked at once. Batches compile one at a
/// time; lowering may go on in other threads meanwhile. The cache owns its `KernelJIT` (compiled
/// code lives as long as the cache).
///
///     let cache = try KernelCache(disk: KernelDiskCache.standard())
///     let relu = try cache.kernel("relu n=1024 slope=0", operands: 2) { b in … }
public final class KernelCache: @unchecked Sendable {
    /// The JIT every kernel is compiled by.
    public let jit: KernelJIT
    /// Where object code is kept between processes; nil keeps it in this process only.
    public let disk: KernelDiskCache?
    /// Threads that optimize and compile a batch's new kernels (the calling thread is one of them).
    public let compileThreads: Int

    private let tableLock = NSLock()
    private var bySignature: [String: Kernel] = [:]
    private var bySymbol: [String: Kernel] = [:]
    /// Serializes batch compilation, so a symbol is defined in the JIT once.
    private let compileLock = NSLock()
    private var totalCompiled = 0, totalLoaded = 0
    private var totalSeconds = 0.0
    private var irBySymbol: [String: String]?

    /// When true, a signature that is already known is built into IR again and checked to name the
    /// same code: a lowering that leaves a captured constant (an extent, a flag, a value baked into
    /// the IR) out of its signature would otherwise be handed another kernel's code. Costs IR
    /// generation on every hit, so it is for tests: on when `$SWIFTJIT_VERIFY_KERNEL_SIGNATURES` is
    /// set (tools/test.sh sets it), or when set here.
    public var verifiesSignatures = ProcessInfo.processInfo.environment["SWIFTJIT_VERIFY_KERNEL_SIGNATURES"].map { !$0.isEmpty && $0 != "0" } ?? false

    /// Keeps the IR of every kernel this cache builds from now on (`ir(of:)`), for
    /// `swiftjit compile --emit llvm`. Off by default: the text of a net's kernels runs to MBs.
    public func keepIR() {
        tableLock.withLock { if irBySymbol == nil { irBySymbol = [:] } }
    }

    /// The IR a kernel was built from (as generated, before optimization), when `keepIR` was on.
    public func ir(of symbol: String) -> String? {
        tableLock.withLock { irBySymbol?[symbol] }
    }

    fileprivate func noteIR(_ ir: String, of symbol: String) {
        tableLock.withLock {
            // Under the name it is linked by (it was built as `KernelBuilder.name`).
            if irBySymbol != nil, irBySymbol?[symbol] == nil { irBySymbol?[symbol] = ir.replacingOccurrences(of: KernelBuilder.name, with: symbol) }
        }
    }

    public init(jit: KernelJIT? = nil, disk: KernelDiskCache? = nil,
                compileThreads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        self.jit = try jit ?? KernelJIT()
        self.disk = disk
        self.compileThreads = max(1, compileThreads)
    }

    /// A cache whose JIT generates code for `cpuFeatures` only (e.g. the host's without AVX-512).
    public convenience init(cpuFeatures: CPUFeatures, disk: KernelDiskCache? = nil,
                            compileThreads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        try self.init(jit: KernelJIT(cpuFeatures: cpuFeatures), disk: disk, compileThreads: compileThreads)
    }

    /// The number of distinct kernel signatures held.
    public var count: Int { tableLock.withLock { bySignature.count } }
    /// How many kernels have been optimized and compiled from IR so far.
    public var compileCount: Int { tableLock.withLock { totalCompiled } }
    /// How many kernels have been linked from the disk cache so far.
    public var loadCount: Int { tableLock.withLock { totalLoaded } }
    /// Seconds spent generating, optimizing, compiling, loading and linking kernels.
    public var compileSeconds: Double { tableLock.withLock { totalSeconds } }

    /// The cached kernel for `signature`, if any.
    public func cached(_ signature: String) -> Kernel? {
        tableLock.withLock { bySignature[signature] }
    }

    /// The kernel for `signature`, generating it with `build` (which receives a builder whose function
    /// takes `operands` buffers) and compiling it now on a miss. Compilers use a `KernelBatch` instead.
    func kernel(_ signature: String, operands: Int, _ build: (KernelBuilder) throws -> Void) throws -> Kernel {
        if let kernel = cached(signature) { return kernel }
        let batch = KernelBatch(cache: self)
        let placeholder = try batch.kernel(signature, operands: operands, build)
        try batch.compile()
        return try batch.resolved(placeholder)
    }

    fileprivate func kernel(symbol: String) -> Kernel? {
        tableLock.withLock { bySymbol[symbol] }
    }

    fileprivate func register(_ kernel: Kernel, signatures: [String]) {
        tableLock.withLock {
            bySymbol[kernel.name] = kernel
            for signature in signatures { bySignature[signature] = kernel }
        }
    }

    fileprivate func record(_ statistics: KernelStatistics, seconds: Double) {
        tableLock.withLock {
            totalCompiled += statistics.compiled
            totalLoaded += statistics.loaded
            totalSeconds += seconds
        }
    }

    fileprivate func withCompileLock<T>(_ body: () throws -> T) rethrows -> T {
        compileLock.lock()
        defer { compileLock.unlock() }
        return try body()
    }
}

/// Where one compilation's kernels came from and what producing them cost.
///
/// `kernels` counts distinct functions (by symbol) the compilation calls; each was either already
/// in this process (`reused`), linked from the disk cache (`loaded`) or optimized and compiled from
/// IR (`compiled`). `optimizeSeconds` and `codegenSeconds` are CPU time summed over the compile
/// threads (so they do not grow when other processes share the cores, and with two threads they
/// can exceed the wall time); the others are wall time.
public struct KernelStatistics: Sendable, Equatable {
    public var reused = 0
    public var loaded = 0
    public var compiled = 0
    /// Disk cache entries found unusable (truncated, damaged, unlinkable); their kernels were compiled.
    public var rejected = 0
    /// Building IR in the lowerings and digesting it.
    public var generateSeconds = 0.0
    public var optimizeSeconds = 0.0
    public var codegenSeconds = 0.0
    /// Reading and checking disk cache entries.
    public var loadSeconds = 0.0
    /// Handing object code to the JIT and resolving every kernel's address.
    public var linkSeconds = 0.0
    /// Threads that compiled kernels from IR.
    public var threads = 0
    /// Problems that did not stop the compilation (an unwritable cache directory, rejected entries).
    public var warnings: [String] = []
    /// The kernels that took longest to optimize and compile, slowest first (at most
    /// `slowestKept`): where a slow cold compile goes (`swiftjit time` prints them).
    public var slowest: [KernelTime] = []
    static let slowestKept = 5

    /// One kernel's optimize + compile CPU seconds, under its symbol and the signature it was built for.
    public struct KernelTime: Sendable, Equatable {
        public var symbol: String
        public var signature: String
        public var seconds: Double
    }

    /// Optimize + compile CPU seconds and kernel counts per kernel family (`conv.panels`,
    /// `im2col`, …): which kind of kernel a cold compile spends its time on.
    public var families: [String: FamilyTime] = [:]

    /// One family's share of a cold compile.
    public struct FamilyTime: Sendable, Equatable {
        public var seconds = 0.0
        public var kernels = 0
    }

    mutating func noteTime(_ time: KernelTime) {
        let family = time.signature.split(separator: " ").first.map(String.init) ?? time.signature
        families[family, default: FamilyTime()].seconds += time.seconds
        families[family, default: FamilyTime()].kernels += 1
        noteSlowest(time)
    }

    private mutating func noteSlowest(_ time: KernelTime) {
        slowest.append(time)
        slowest.sort { $0.seconds > $1.seconds }
        if slowest.count > KernelStatistics.slowestKept { slowest.removeLast() }
    }

    public init() {}

    public var kernels: Int { reused + loaded + compiled }

    /// `23 kernels: 3 compiled, 20 from the kernel cache, 0 already in this process`.
    public var summary: String {
        var text = "\(kernels) kernel\(kernels == 1 ? "" : "s"): \(compiled) compiled, \(loaded) from the kernel cache, \(reused) already in this process"
        if rejected > 0 { text += ", \(rejected) cache entr\(rejected == 1 ? "y" : "ies") rejected" }
        return text
    }

    mutating func add(_ other: KernelStatistics) {
        reused += other.reused; loaded += other.loaded; compiled += other.compiled; rejected += other.rejected
        generateSeconds += other.generateSeconds; optimizeSeconds += other.optimizeSeconds; codegenSeconds += other.codegenSeconds
        loadSeconds += other.loadSeconds; linkSeconds += other.linkSeconds
        threads = max(threads, other.threads)
        warnings += other.warnings
        for time in other.slowest { noteSlowest(time) }
        for (family, time) in other.families {
            families[family, default: FamilyTime()].seconds += time.seconds
            families[family, default: FamilyTime()].kernels += time.kernels
        }
    }
}

/// The kernels one compilation needs, built as IR while a net is lowered and compiled together
/// afterwards, so that disk lookups, parallel compilation and linking happen once per net rather
/// than once per kernel.
///
/// `kernel` returns at once: a compiled kernel if the cache has one with that signature or the
/// same code, else a placeholder named by the kernel's symbol whose function must not be called.
/// `compile` produces every pending kernel; `resolve` then replaces the placeholders in a
/// program's steps. A batch is used by one thread.
///
///     let batch = KernelBatch(cache: cache)
///     let k = try batch.kernel("relu n=16", operands: 2) { b in … }   // placeholder
///     try batch.compile()
///     try batch.resolve(&program)
final class KernelBatch {
    let cache: KernelCache
    /// What this batch's kernels cost so far.
    private(set) var statistics = KernelStatistics()

    private struct Pending {
        var signatures: [String]
        let symbol: String
        let key: SHA256.Digest
        let module: KernelModule
        let size: Int
    }
    private var pending: [Pending] = []
    private var pendingIndex: [String: Int] = [:]
    private var symbolOf: [String: String] = [:]
    private var used: Set<String> = []
    private var functions: [String: KernelFunction] = [:]

    init(cache: KernelCache) {
        self.cache = cache
    }

    /// The kernel for `signature` (see the type's documentation), generating its IR with `build`
    /// unless the batch or the cache already knows the signature.
    func kernel(_ signature: String, operands: Int, _ build: (KernelBuilder) throws -> Void) throws -> Kernel {
        if let symbol = symbolOf[signature] {
            if cache.verifiesSignatures { try verify(signature, names: symbol, operands: operands, build) }
            return Kernel(name: symbol, function: functions[symbol])
        }
        if let known = cache.cached(signature) {
            if cache.verifiesSignatures { try verify(signature, names: known.name, operands: operands, build) }
            use(known)
            symbolOf[signature] = known.name
            return known
        }
        let start = DispatchTime.now().uptimeNanoseconds
        defer { statistics.generateSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        let (module, ir, key) = try generate(operands: operands, build)
        let symbol = KernelBatch.symbol(family: KernelBatch.family(of: signature), key: key)
        symbolOf[signature] = symbol
        cache.noteIR(ir, of: symbol)
        if let known = cache.kernel(symbol: symbol) {
            // Another signature already compiled to this very code.
            cache.register(known, signatures: [signature])
            use(known)
            return known
        }
        if let index = pendingIndex[symbol] {
            pending[index].signatures.append(signature)
        } else {
            module.rename(to: symbol)
            pendingIndex[symbol] = pending.count
            pending.append(Pending(signatures: [signature], symbol: symbol, key: key, module: module, size: ir.utf8.count))
        }
        return Kernel(name: symbol, function: nil)  // resolved by `resolve` once the batch is compiled
    }

    /// Builds `build`'s IR and digests it under the cache's JIT identity.
    private func generate(operands: Int, _ build: (KernelBuilder) throws -> Void) throws -> (KernelModule, String, SHA256.Digest) {
        let builder = KernelBuilder(operandCount: operands, jit: cache.jit)
        do {
            try build(builder)
        } catch {
            builder.abandon()
            throw error
        }
        let module = builder.finish()
        let ir = module.text
        return (module, ir, KernelDiskCache.key(ir: ir, identity: cache.jit.identity))
    }

    /// A kernel's symbol: its family and the first 16 hex digits of its key.
    static func symbol(family: String, key: SHA256.Digest) -> String { family + "_" + key.hex.prefix(16) }

    /// Checks that `build` generates the code `symbol` was compiled from (see
    /// `KernelCache.verifiesSignatures`).
    private func verify(_ signature: String, names symbol: String, operands: Int, _ build: (KernelBuilder) throws -> Void) throws {
        let (_, _, key) = try generate(operands: operands, build)
        guard symbol.hasSuffix("_" + key.hex.prefix(16)) else {
            throw CodegenError("looking up kernel '\(signature)'",
                               "the signature names two different kernels (\(symbol) and one with key \(key.hex.prefix(16))): its lowering leaves something the code depends on out of the signature")
        }
    }

    private func use(_ kernel: Kernel) {
        functions[kernel.name] = kernel.function
        if used.insert(kernel.name).inserted { statistics.reused += 1 }
    }

    /// `pool.max n2…` → `pool_max`: the part of a signature before its first space, as a C name.
    static func family(of signature: String) -> String {
        let head = signature.prefix { $0 != " " }
        let name = String(head.map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
        return name.isEmpty ? "kernel" : name
    }

    /// `placeholder` (from `kernel`) with its compiled function.
    func resolved(_ placeholder: Kernel) throws -> Kernel {
        guard let function = functions[placeholder.name] else {
            throw CodegenError("resolving kernel \(placeholder.name)", "it was not compiled by this batch")
        }
        return Kernel(name: placeholder.name, function: function)
    }

    /// Replaces every placeholder in `program`'s kernel steps (item loops' included) by its
    /// compiled function.
    func resolve(_ program: inout Program) throws {
        for index in program.steps.indices {
            program.steps[index].action = try resolve(program.steps[index].action)
        }
    }

    private func resolve(_ action: Step.Action) throws -> Step.Action {
        switch action {
        case .kernel(var step):
            guard step.kernel.function == nil else { return action }
            step.kernel = try resolved(step.kernel)
            return .kernel(step)
        case .gemm, .host:
            return action
        case .items(var loop):
            loop.body = try loop.body.map(resolve)
            return .items(loop)
        }
    }

    /// Produces every pending kernel: from this process's cache if another batch compiled it
    /// meanwhile, else from the disk cache, else by optimizing and compiling its IR (on the cache's
    /// compile threads, largest first); then links them all and records them in the cache. A disk
    /// entry that cannot be linked is discarded and its kernel compiled. Returns the batch's
    /// statistics.
    @discardableResult
    func compile() throws -> KernelStatistics {
        guard !pending.isEmpty else { return statistics }
        let start = DispatchTime.now().uptimeNanoseconds
        try cache.withCompileLock {
            var work: [Pending] = []
            for item in pending {
                if let known = cache.kernel(symbol: item.symbol) {
                    cache.register(known, signatures: item.signatures)
                    use(known)
                } else {
                    work.append(item)
                }
            }
            var objects = [[UInt8]?](repeating: nil, count: work.count)
            var fromDisk: [Int] = []
            if let disk = cache.disk {
                let loadStart = DispatchTime.now().uptimeNanoseconds
                for (index, item) in work.enumerated() {
                    switch disk.load(key: item.key, symbol: item.symbol) {
                    case .hit(let object):
                        objects[index] = object
                        fromDisk.append(index)
                    case .miss:
                        break
                    case .invalid(let why):
                        statistics.rejected += 1
                        statistics.warnings.append("kernel cache: \(why); compiled it again")
                    }
                }
                statistics.loadSeconds += Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
            }
            try compileFromIR(work, into: &objects, indices: work.indices.filter { objects[$0] == nil })

            var linked: [KernelFunction]
            do {
                linked = try link(work, objects)
            } catch let error where !fromDisk.isEmpty {
                // Some cached object would not link: compile those kernels from IR and link again.
                statistics.rejected += fromDisk.count
                statistics.warnings.append("kernel cache: linking \(fromDisk.count) cached kernel\(fromDisk.count == 1 ? "" : "s") failed (\(error)); compiled them again")
                try compileFromIR(work, into: &objects, indices: fromDisk)
                fromDisk = []
                linked = try link(work, objects)
            }
            statistics.loaded += fromDisk.count
            for (item, function) in zip(work, linked) {
                let kernel = Kernel(name: item.symbol, function: function)
                cache.register(kernel, signatures: item.signatures)
                functions[item.symbol] = function
                used.insert(item.symbol)
            }
        }
        pending = []
        pendingIndex = [:]
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        cache.record(statistics, seconds: seconds + statistics.generateSeconds)
        return statistics
    }

    /// Optimizes and compiles `work[indices]` on up to `compileThreads` threads, largest IR first,
    /// and writes each object to the disk cache.
    private func compileFromIR(_ work: [Pending], into objects: inout [[UInt8]?], indices: [Int]) throws {
        guard !indices.isEmpty else { return }
        let order = indices.sorted { work[$0].size > work[$1].size }
        let jobs = CompileJobs(modules: order.map { (work[$0].module, work[$0].symbol) })
        let threads = min(cache.compileThreads, order.count)
        let jit = cache.jit
        concurrently(order.count, threads: threads) { job in
            let (module, symbol) = jobs.modules[job]
            jobs.finish(job, Result { try jit.compile(module.module, name: symbol) })
        }
        statistics.threads = max(statistics.threads, threads)
        for (job, index) in order.enumerated() {
            let object = try jobs.results[job]!.get()
            statistics.optimizeSeconds += object.optimizeSeconds
            statistics.codegenSeconds += object.codegenSeconds
            statistics.noteTime(.init(symbol: work[index].symbol, signature: work[index].signatures[0],
                                      seconds: object.optimizeSeconds + object.codegenSeconds))
            statistics.compiled += 1
            objects[index] = object.bytes
            guard let disk = cache.disk else { continue }
            do {
                try disk.store(key: work[index].key, symbol: work[index].symbol, object: object.bytes)
            } catch {
                if statistics.warnings.allSatisfy({ !$0.hasPrefix("kernel cache: cannot write") }) {
                    statistics.warnings.append("kernel cache: cannot write to \(disk.directory.path) (\(error.localizedDescription)); kernels will be compiled again next time")
                }
            }
        }
    }

    /// Links every object in one group and returns each kernel's address; on failure the group
    /// is removed again, so its symbols can be defined anew.
    private func link(_ work: [Pending], _ objects: [[UInt8]?]) throws -> [KernelFunction] {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { statistics.linkSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        let jit = cache.jit
        let group = jit.makeObjectGroup()
        do {
            for (item, object) in zip(work, objects) {
                try jit.link(object!, name: item.symbol, into: group)
            }
            return try work.map { try jit.lookupKernel($0.symbol) }
        } catch {
            try? jit.remove(group)
            throw error
        }
    }
}

/// The modules a batch compiles and their results, shared with the compile threads.
private final class CompileJobs: @unchecked Sendable {
    let modules: [(KernelModule, String)]
    private(set) var results: [Result<KernelJIT.CompiledObject, Error>?]
    private let lock = NSLock()

    init(modules: [(KernelModule, String)]) {
        self.modules = modules
        results = Array(repeating: nil, count: modules.count)
    }

    func finish(_ job: Int, _ result: Result<KernelJIT.CompiledObject, Error>) {
        lock.withLock { results[job] = result }
    }
}

/// Runs `body(0)`, `body(1)`, … `body(count - 1)` on up to `threads` threads, the caller included,
/// each taking the next index when it is free; returns when all have run. Compile threads get
/// 16 MiB stacks: LLVM's analyses recurse deeply on large kernels.
private func concurrently(_ count: Int, threads: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Counter: @unchecked Sendable {
        private var next = 0
        private let lock = NSLock()
        func take(below limit: Int) -> Int? {
            lock.withLock {
                guard next < limit else { return nil }
                next += 1
                return next - 1
            }
        }
    }
    let counter = Counter()
    let group = DispatchGroup()
    for _ in 1..<max(1, min(threads, count)) {
        group.enter()
        let thread = Thread {
            while let index = counter.take(below: count) { body(index) }
            group.leave()
        }
        thread.name = "swiftjit-compile"
        thread.stackSize = 16 << 20
        thread.start()
    }
    while let index = counter.take(below: count) { body(index) }
    group.wait()
}
