import CLLVM

/// A failure inside code generation itself: LLVM rejected a module, the JIT could not be created or
/// could not find a symbol. These are bugs or broken installations rather than user mistakes, so the
/// message carries LLVM's own text and says which kernel was being built. Problems with the net
/// (unsupported layers, missing weights) are `Diagnostic`s instead, naming the layer.
public struct CodegenError: Error, CustomStringConvertible, Sendable {
    /// What was being done: `optimizing kernel pool_max_…`.
    public var context: String
    /// LLVM's message, verbatim.
    public var message: String

    public init(_ context: String, _ message: String) {
        self.context = context
        self.message = message
    }

    public var description: String { "codegen: \(context): \(message)" }
}

/// The one place LLVM's C error values become Swift errors.
enum LLVMErrors {
    /// Throws `CodegenError` when `error` is set (consuming it, as the C API requires).
    static func check(_ error: LLVMErrorRef?, _ context: @autoclosure () -> String) throws {
        guard let error else { return }
        let raw = LLVMGetErrorMessage(error)
        let message = raw.map { String(cString: $0) } ?? "unknown LLVM error"
        if let raw { LLVMDisposeErrorMessage(raw) }
        throw CodegenError(context(), message)
    }

    @discardableResult
    /// Takes ownership of an LLVM-allocated message (`char *` from the C API), returning its text.
    static func take(_ message: UnsafeMutablePointer<CChar>?) -> String {
        guard let message else { return "" }
        defer { LLVMDisposeMessage(message) }
        return String(cString: message)
    }
}
