import CLLVM
import Foundation

/// Links the textual IR of several kernels (each its own module, as `KernelCache.ir(of:)` keeps
/// them) into one module with LLVM's own linker, and prints it: one document that `llvm-as`,
/// `opt` and `llc` accept, where concatenated modules are rejected (a second `ModuleID`, the
/// same attribute group numbered twice, a runtime function declared in every module).
///
///     let text = try LinkedIR.link(["conv": irA, "pool": irB])
public enum LinkedIR {
    /// One module named `name` holding every function of `modules` (in the order given). Throws
    /// a `CodegenError` naming the module LLVM could not parse or link.
    public static func link(_ modules: [(name: String, ir: String)], name: String = "swiftjit") throws -> String {
        let context = LLVMContextCreate()
        defer { LLVMContextDispose(context) }
        guard let linked = LLVMModuleCreateWithNameInContext(name, context) else {
            throw CodegenError("linking the kernels' IR", "cannot create a module")
        }
        defer { LLVMDisposeModule(linked) }
        for module in modules {
            var bytes = Array(module.ir.utf8)
            bytes.append(0)
            let buffer: LLVMMemoryBufferRef? = bytes.withUnsafeBufferPointer { pointer in
                pointer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: pointer.count) { text in
                    LLVMCreateMemoryBufferWithMemoryRangeCopy(text, pointer.count - 1, module.name)
                }
            }
            var parsed: LLVMModuleRef?
            var message: UnsafeMutablePointer<CChar>?
            // LLVMParseIRInContext takes ownership of the buffer, also when it fails.
            if LLVMParseIRInContext(context, buffer, &parsed, &message) != 0 || parsed == nil {
                throw CodegenError("linking the kernels' IR", "the IR of \(module.name) does not parse: \(LLVMErrors.take(message))")
            }
            // LLVMLinkModules2 takes ownership of (and destroys) the source module.
            if LLVMLinkModules2(linked, parsed) != 0 {
                throw CodegenError("linking the kernels' IR", "the IR of \(module.name) does not link with the kernels before it")
            }
        }
        return LLVMErrors.take(LLVMPrintModuleToString(linked))
    }
}
