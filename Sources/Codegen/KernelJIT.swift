import CLLVM
import Foundation
import Runtime

/// An ORC LLJIT for the host CPU that turns kernel modules into callable machine code.
///
/// Owns the LLJIT, the thread-safe LLVM context every kernel module is built in, and a target
/// machine with the host's CPU name and features (AVX-512 here) used by the optimizer, so loops
/// vectorize for the real vector width. The main JITDylib searches the process's own symbols, so
/// kernels can call `expf`, `tanhf` or `cblas_sgemm` directly. Compiled code lives as long as the
/// JIT: keep the JIT alive while any function from it may run. All methods serialize on a lock.
///
///     let jit = try KernelJIT()
///     try jit.add(module, name: "relu_…")          // verify, optimize at O3, hand to ORC
///     let f: KernelFunction = try jit.lookup("relu_…")
public final class KernelJIT: @unchecked Sendable {
    /// The host CPU as LLVM names it (`znver3`) and its feature string.
    public let cpuName: String
    public let cpuFeatures: String
    /// The target triple and data layout modules are built for.
    public let triple: String
    let dataLayout: String

    /// Called with each kernel's name and optimized IR before it is compiled (for inspection and
    /// tests, e.g. to check that a loop vectorized); nil by default.
    public var inspectOptimizedIR: (@Sendable (_ kernel: String, _ ir: String) -> Void)?

    private let jit: LLVMOrcLLJITRef
    private let threadSafeContext: LLVMOrcThreadSafeContextRef
    private let targetMachine: LLVMTargetMachineRef
    private let lock = NSLock()

    /// The LLVM context kernel modules must be created in.
    var context: LLVMContextRef { LLVMOrcThreadSafeContextGetContext(threadSafeContext) }

    public init() throws {
        guard LLVMInitializeNativeTarget() == 0, LLVMInitializeNativeAsmPrinter() == 0 else {
            throw CodegenError("initializing LLVM", "the native target is not available in this LLVM build")
        }
        cpuName = LLVMErrors.take(LLVMGetHostCPUName())
        cpuFeatures = LLVMErrors.take(LLVMGetHostCPUFeatures())

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

        triple = String(cString: LLVMOrcLLJITGetTripleString(created))
        dataLayout = String(cString: LLVMOrcLLJITGetDataLayoutStr(created))
        var target: LLVMTargetRef?
        var message: UnsafeMutablePointer<CChar>?
        guard LLVMGetTargetFromTriple(triple, &target, &message) == 0, let target else {
            _ = LLVMOrcDisposeLLJIT(created)
            throw CodegenError("finding the LLVM target for \(triple)", LLVMErrors.take(message))
        }
        guard let machine = LLVMCreateTargetMachine(target, triple, cpuName, cpuFeatures, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocDefault, LLVMCodeModelJITDefault) else {
            _ = LLVMOrcDisposeLLJIT(created)
            throw CodegenError("creating a target machine for \(cpuName)", "LLVMCreateTargetMachine returned nothing")
        }
        targetMachine = machine
        threadSafeContext = LLVMOrcCreateNewThreadSafeContext()
    }

    deinit {
        // Disposing the JIT frees its code; an error here has nowhere to go, so it is consumed.
        if let error = LLVMOrcDisposeLLJIT(jit) { LLVMConsumeError(error) }
        LLVMOrcDisposeThreadSafeContext(threadSafeContext)
        LLVMDisposeTargetMachine(targetMachine)
    }

    /// Runs `body` with the lock held; kernel building uses the shared context, so it goes through here.
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Creates an empty module for this host, in the JIT's context. Call under `withLock`.
    func makeModule(_ name: String) -> LLVMModuleRef {
        let module = LLVMModuleCreateWithNameInContext(name, context)!
        LLVMSetTarget(module, triple)
        LLVMSetDataLayout(module, dataLayout)
        return module
    }

    /// Marks `function` for the host CPU so code generation uses the same features the optimizer did.
    func tuneForHost(_ function: LLVMValueRef) {
        for (key, value) in [("target-cpu", cpuName), ("target-features", cpuFeatures)] {
            let attribute = LLVMCreateStringAttribute(context, key, UInt32(key.utf8.count), value, UInt32(value.utf8.count))
            LLVMAddAttributeAtIndex(function, UInt32.max, attribute)
        }
    }

    /// Verifies and optimizes `module` (`default<O3>` for the host), then hands it to the JIT, which
    /// takes ownership (also on failure). Call under `withLock`.
    func add(_ module: LLVMModuleRef, name: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        if LLVMVerifyModule(module, LLVMReturnStatusAction, &message) != 0 {
            let text = LLVMErrors.take(message)
            LLVMDisposeModule(module)
            throw CodegenError("verifying kernel \(name)", text)
        }
        LLVMErrors.take(message)
        let options = LLVMCreatePassBuilderOptions()
        defer { LLVMDisposePassBuilderOptions(options) }
        LLVMPassBuilderOptionsSetLoopVectorization(options, 1)
        LLVMPassBuilderOptionsSetSLPVectorization(options, 1)
        LLVMPassBuilderOptionsSetLoopUnrolling(options, 1)
        do {
            try LLVMErrors.check(LLVMRunPasses(module, "default<O3>", targetMachine, options), "optimizing kernel \(name)")
        } catch {
            LLVMDisposeModule(module)
            throw error
        }
        inspectOptimizedIR?(name, KernelJIT.text(of: module))
        let threadSafeModule = LLVMOrcCreateNewThreadSafeModule(module, threadSafeContext)
        if let error = LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), threadSafeModule) {
            LLVMOrcDisposeThreadSafeModule(threadSafeModule)
            try LLVMErrors.check(error, "adding kernel \(name) to the JIT")
        }
    }

    /// The address of a compiled kernel, as a callable function. Compiles its module on first lookup.
    func lookupKernel(_ name: String) throws -> KernelFunction {
        var address: LLVMOrcExecutorAddress = 0
        try LLVMErrors.check(LLVMOrcLLJITLookup(jit, &address, name), "looking up kernel \(name)")
        guard let pointer = UnsafeRawPointer(bitPattern: UInt(address)) else {
            throw CodegenError("looking up kernel \(name)", "the JIT returned a null address")
        }
        return unsafeBitCast(pointer, to: KernelFunction.self)
    }

    /// Prints a module's IR (for debugging lowerings).
    static func text(of module: LLVMModuleRef) -> String {
        LLVMErrors.take(LLVMPrintModuleToString(module))
    }
}
