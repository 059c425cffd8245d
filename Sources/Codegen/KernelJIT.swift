import CLLVM
import Foundation
import Runtime

/// The host CPU's code generator: optimizes kernel modules, compiles them to relocatable object
/// code, and links object code into an ORC LLJIT so kernels become callable functions.
///
/// Compiling and linking are separate steps so object code can come from two places: `compile`
/// (O3 for the host's CPU name and its features — or fewer, see `CPUFeatures` — then machine code) or the on-disk
/// `KernelDiskCache`, which stores what `compile` produced in an earlier process. `compile` is
/// thread-safe for modules built in different LLVM contexts: each call borrows a target machine of
/// its own, so a batch of kernels compiles on several threads. Linking (`link`, `lookupKernel`) is
/// cheap and serialized. The main JITDylib searches the process's own symbols, so kernels can call
/// `expf`, `tanhf` or `cblas_sgemm`; those addresses are resolved when an object is linked, never
/// stored in it. Linked code lives as long as the JIT: keep it alive while any kernel may run.
///
/// `identity` spells out everything besides a kernel's IR that its machine code depends on (LLVM
/// version, triple, CPU name and features, pipeline); the disk cache keys entries with it.
///
///     let jit = try KernelJIT()
///     let object = try jit.compile(module, name: "relu_…")   // verify, O3, codegen (any thread)
///     let group = jit.makeObjectGroup()
///     try jit.link(object, name: "relu_…", into: group)
///     let f: KernelFunction = try jit.lookupKernel("relu_…")
public final class KernelJIT: @unchecked Sendable {
    /// What a kernel's machine code depends on besides its IR.
    public struct Identity: Hashable, Sendable, CustomStringConvertible {
        /// The LLVM library the code generator comes from (`14.0.6`).
        public var llvmVersion: String
        public var triple: String
        /// The host CPU as LLVM names it (`znver3`) and its feature string (`+avx512f,…`).
        public var cpuName: String
        public var cpuFeatures: String
        /// The optimization pipeline and code generation settings `compile` uses.
        public var pipeline: String

        public var description: String {
            "llvm \(llvmVersion)\ntriple \(triple)\ncpu \(cpuName)\nfeatures \(cpuFeatures)\npipeline \(pipeline)\n"
        }
    }

    /// LLVM options set once per process before the first compilation (LLVM keeps them in global
    /// state). Loop strength reduction is off: on our im2col kernels (hundreds of address
    /// computations in one loop nest) it took 80 % of code generation, up to 0.5 s for one kernel,
    /// and the kernels ran no faster with it (Benchmarks/README.md, "compile time").
    static let codegenArguments = ["-disable-lsr"]
    private static let codegenArgumentsParsed: Void = {
        let arguments = ["swiftjit"] + codegenArguments
        var pointers = arguments.map { UnsafePointer<CChar>?(strdup($0)) }
        LLVMParseCommandLineOptions(Int32(pointers.count), &pointers, nil)
        for pointer in pointers { free(UnsafeMutablePointer(mutating: pointer)) }
    }()

    public let identity: Identity
    /// The features kernels are generated for (`identity.cpuFeatures`); the compiler chooses
    /// kernels by them (`vectorLanes`, the panel GEMM's tile).
    public let features: CPUFeatures
    public var cpuName: String { identity.cpuName }
    public var cpuFeatures: String { identity.cpuFeatures }
    /// The target triple and data layout modules are built for.
    public var triple: String { identity.triple }
    let dataLayout: String

    /// Called with each kernel's name and optimized IR after optimization, on the compiling thread
    /// (for inspection and tests, e.g. to check that a loop vectorized); nil by default. Kernels
    /// linked from the disk cache are not optimized again, so it does not see them.
    public var inspectOptimizedIR: (@Sendable (_ kernel: String, _ ir: String) -> Void)?
    /// Called with each compiled kernel's name and assembly (from a copy of the optimized module),
    /// on the compiling thread; nil by default. Tests use it to see which registers kernels use.
    public var inspectAssembly: (@Sendable (_ kernel: String, _ assembly: String) -> Void)?

    private let jit: LLVMOrcLLJITRef
    private let target: LLVMTargetRef
    /// Target machines not in use by a `compile` call; one is made per concurrent call.
    private var idleMachines: [LLVMTargetMachineRef] = []
    private let machineLock = NSLock()
    private let linkLock = NSLock()

    /// A JIT for this host. `llvmVersion` stands in for the linked LLVM's version in `identity`
    /// only, and `cpuFeatures` (a subset of the host's, such as the host's without AVX-512)
    /// replaces the host's feature string everywhere: the optimizer, code generation and the disk
    /// cache key see only these features. Tests use them to see that the disk cache does not
    /// reuse code made for another LLVM or another CPU.
    init(llvmVersion: String, cpuFeatures: String? = nil) throws {
        guard LLVMInitializeNativeTarget() == 0, LLVMInitializeNativeAsmPrinter() == 0 else {
            throw CodegenError("initializing LLVM", "the native target is not available in this LLVM build")
        }
        _ = KernelJIT.codegenArgumentsParsed
        let cpuName = LLVMErrors.take(LLVMGetHostCPUName())
        let cpuFeatures = cpuFeatures ?? KernelJIT.hostFeatureString()

        var machineBuilder: LLVMOrcJITTargetMachineBuilderRef?
        try LLVMErrors.check(LLVMOrcJITTargetMachineBuilderDetectHost(&machineBuilder), "detecting the host CPU")
        let builder = LLVMOrcCreateLLJITBuilder()
        LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, machineBuilder)
        var created: LLVMOrcLLJITRef?
        try LLVMErrors.check(LLVMOrcCreateLLJIT(&created, builder), "creating the ORC LLJIT")
        guard let created else { throw CodegenError("creating the ORC LLJIT", "no JIT returned") }
        jit = created

        var generator: LLVMOrcDefinitionGeneratorRef?
        do {
            try LLVMErrors.check(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&generator, LLVMOrcLLJITGetGlobalPrefix(created), nil, nil),
                                 "making the process's symbols visible to kernels")
        } catch {
            _ = LLVMOrcDisposeLLJIT(created)
            throw error
        }
        LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(created), generator)

        let triple = String(cString: LLVMOrcLLJITGetTripleString(created))
        dataLayout = String(cString: LLVMOrcLLJITGetDataLayoutStr(created))
        var target: LLVMTargetRef?
        var message: UnsafeMutablePointer<CChar>?
        guard LLVMGetTargetFromTriple(triple, &target, &message) == 0, let target else {
            _ = LLVMOrcDisposeLLJIT(created)
            throw CodegenError("finding the LLVM target for \(triple)", LLVMErrors.take(message))
        }
        self.target = target
        // The settings ORC's own IR compiler used before object code was produced here: codegen
        // level Default, the JIT code model (large on x86-64), the default relocation model.
        let pipeline = "default<O3> loop-vectorize slp-vectorize loop-unroll; codegen Default, JIT code model, default relocation; "
            + KernelJIT.codegenArguments.joined(separator: " ")
        identity = Identity(llvmVersion: llvmVersion, triple: triple, cpuName: cpuName, cpuFeatures: cpuFeatures, pipeline: pipeline)
        features = CPUFeatures(llvm: cpuFeatures)
    }

    /// A JIT for this host CPU, narrowed by `$SWIFTJIT_CPU_FEATURES` when it is set: the one place
    /// the variable is read (the command line, the C API and `Model` all get their JIT here).
    /// Throws `CPUFeaturesError` for a malformed or impossible value.
    public convenience init() throws {
        try self.init(cpuFeatures: CPUFeatures.effective())
    }

    /// A JIT that generates code for `cpuFeatures` only (e.g. `CPUFeatures.host().applying("-avx512f")`).
    public convenience init(cpuFeatures: CPUFeatures) throws {
        try self.init(llvmVersion: LLVM_VERSION_STRING, cpuFeatures: cpuFeatures.llvmString)
    }


    /// The host CPU's LLVM feature string, as LLVM detects it.
    static func hostFeatureString() -> String {
        LLVMErrors.take(LLVMGetHostCPUFeatures())
    }

    deinit {
        // Disposing the JIT frees its code; an error here has nowhere to go, so it is consumed.
        if let error = LLVMOrcDisposeLLJIT(jit) { LLVMConsumeError(error) }
        for machine in idleMachines { LLVMDisposeTargetMachine(machine) }
    }

    /// Creates an empty module for this host in `context`.
    func makeModule(_ name: String, in context: LLVMContextRef) -> LLVMModuleRef {
        let module = LLVMModuleCreateWithNameInContext(name, context)!
        LLVMSetTarget(module, identity.triple)
        LLVMSetDataLayout(module, dataLayout)
        return module
    }

    /// Marks `function` for the host CPU so code generation uses the same features the optimizer did.
    func tuneForHost(_ function: LLVMValueRef, in context: LLVMContextRef) {
        for (key, value) in [("target-cpu", identity.cpuName), ("target-features", identity.cpuFeatures)] {
            let attribute = LLVMCreateStringAttribute(context, key, UInt32(key.utf8.count), value, UInt32(value.utf8.count))
            LLVMAddAttributeAtIndex(function, UInt32.max, attribute)
        }
    }

    /// Object code for one module and what producing it cost (CPU seconds of the compiling thread).
    struct CompiledObject {
        var bytes: [UInt8]
        var optimizeSeconds: Double
        var codegenSeconds: Double
    }

    /// Verifies `module`, optimizes it (`default<O3>` for the host) and compiles it to a relocatable
    /// object. The module stays the caller's (optimized in place). Safe to call from several
    /// threads at once for modules in different contexts.
    func compile(_ module: LLVMModuleRef, name: String) throws -> CompiledObject {
        var message: UnsafeMutablePointer<CChar>?
        if LLVMVerifyModule(module, LLVMReturnStatusAction, &message) != 0 {
            throw CodegenError("verifying kernel \(name)", LLVMErrors.take(message))
        }
        LLVMErrors.take(message)
        let machine = try borrowMachine()
        defer { returnMachine(machine) }
        let start = threadCPUSeconds()
        let options = LLVMCreatePassBuilderOptions()
        defer { LLVMDisposePassBuilderOptions(options) }
        LLVMPassBuilderOptionsSetLoopVectorization(options, 1)
        LLVMPassBuilderOptionsSetSLPVectorization(options, 1)
        LLVMPassBuilderOptionsSetLoopUnrolling(options, 1)
        try LLVMErrors.check(LLVMRunPasses(module, "default<O3>", machine, options), "optimizing kernel \(name)")
        let optimized = threadCPUSeconds()
        inspectOptimizedIR?(name, KernelJIT.text(of: module))
        if let inspectAssembly { inspectAssembly(name, try assembly(of: module, machine: machine, name: name)) }

        var buffer: LLVMMemoryBufferRef?
        let emitted = threadCPUSeconds()
        if LLVMTargetMachineEmitToMemoryBuffer(machine, module, LLVMObjectFile, &message, &buffer) != 0 {
            throw CodegenError("generating code for kernel \(name)", LLVMErrors.take(message))
        }
        guard let buffer else { throw CodegenError("generating code for kernel \(name)", "LLVM returned no object") }
        defer { LLVMDisposeMemoryBuffer(buffer) }
        let bytes = [UInt8](UnsafeRawBufferPointer(start: LLVMGetBufferStart(buffer), count: LLVMGetBufferSize(buffer)))
        return CompiledObject(bytes: bytes, optimizeSeconds: optimized - start, codegenSeconds: threadCPUSeconds() - emitted)
    }

    /// The assembly `machine` generates for a copy of `module` (code generation changes the IR it
    /// runs on, so the module itself is left for the object code).
    private func assembly(of module: LLVMModuleRef, machine: LLVMTargetMachineRef, name: String) throws -> String {
        let copy = LLVMCloneModule(module)
        defer { LLVMDisposeModule(copy) }
        var message: UnsafeMutablePointer<CChar>?
        var buffer: LLVMMemoryBufferRef?
        if LLVMTargetMachineEmitToMemoryBuffer(machine, copy, LLVMAssemblyFile, &message, &buffer) != 0 {
            throw CodegenError("generating assembly for kernel \(name)", LLVMErrors.take(message))
        }
        guard let buffer else { return "" }
        defer { LLVMDisposeMemoryBuffer(buffer) }
        return String(decoding: UnsafeRawBufferPointer(start: LLVMGetBufferStart(buffer), count: LLVMGetBufferSize(buffer)), as: UTF8.self)
    }

    /// CPU time of the calling thread: what a compilation costs, whoever else shares the cores.
    private func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// Objects linked together, which can be unlinked together if one of them turns out unusable.
    final class ObjectGroup {
        fileprivate let tracker: LLVMOrcResourceTrackerRef
        fileprivate init(_ tracker: LLVMOrcResourceTrackerRef) { self.tracker = tracker }
        // Releasing the tracker keeps its code: ORC hands it to the JITDylib's default tracker.
        deinit { LLVMOrcReleaseResourceTracker(tracker) }
    }

    func makeObjectGroup() -> ObjectGroup {
        ObjectGroup(LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(jit)))
    }

    /// Hands object code defining `name` to the JIT. It is linked on the first lookup of one of
    /// its symbols; a malformed object fails here or at that lookup.
    func link(_ object: [UInt8], name: String, into group: ObjectGroup) throws {
        PerfMap.shared?.noteSymbols(in: object)
        linkLock.lock()
        defer { linkLock.unlock() }
        let buffer = object.withUnsafeBufferPointer { bytes in
            bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                LLVMCreateMemoryBufferWithMemoryRangeCopy($0, bytes.count, name)
            }
        }
        // The JIT takes the buffer, also on failure.
        try LLVMErrors.check(LLVMOrcLLJITAddObjectFileWithRT(jit, group.tracker, buffer), "adding kernel \(name) to the JIT")
    }

    /// Unlinks every object of `group` and frees its code, so its symbols can be defined again.
    func remove(_ group: ObjectGroup) throws {
        linkLock.lock()
        defer { linkLock.unlock() }
        try LLVMErrors.check(LLVMOrcResourceTrackerRemove(group.tracker), "removing kernels from the JIT")
    }

    /// The address of a linked kernel, as a callable function. Links its object on first lookup.
    func lookupKernel(_ name: String) throws -> KernelFunction {
        linkLock.lock()
        defer { linkLock.unlock() }
        var address: LLVMOrcExecutorAddress = 0
        try LLVMErrors.check(LLVMOrcLLJITLookup(jit, &address, name), "looking up kernel \(name)")
        guard let pointer = UnsafeRawPointer(bitPattern: UInt(address)) else {
            throw CodegenError("looking up kernel \(name)", "the JIT returned a null address")
        }
        PerfMap.shared?.record(name, address: address)
        return unsafeBitCast(pointer, to: KernelFunction.self)
    }

    /// Prints a module's IR (for debugging lowerings, and as the disk cache's key material).
    static func text(of module: LLVMModuleRef) -> String {
        LLVMErrors.take(LLVMPrintModuleToString(module))
    }

    // MARK: Target machines

    private func borrowMachine() throws -> LLVMTargetMachineRef {
        machineLock.lock()
        if let machine = idleMachines.popLast() {
            machineLock.unlock()
            return machine
        }
        machineLock.unlock()
        guard let machine = LLVMCreateTargetMachine(target, identity.triple, identity.cpuName, identity.cpuFeatures, LLVMCodeGenLevelDefault,
                                                    LLVMRelocDefault, LLVMCodeModelJITDefault) else {
            throw CodegenError("creating a target machine for \(identity.cpuName)", "LLVMCreateTargetMachine returned nothing")
        }
        return machine
    }

    private func returnMachine(_ machine: LLVMTargetMachineRef) {
        machineLock.lock()
        idleMachines.append(machine)
        machineLock.unlock()
    }
}
