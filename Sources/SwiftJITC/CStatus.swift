import Foundation
import Runtime
import SwiftJIT

/// The error a C API call returns: a broad code and the one-line diagnostic the CLI would print.
///
/// C callers see it as `sj_status *` (NULL means success), read it with `sj_status_code` and
/// `sj_status_message`, and free it with `sj_status_free`. Every exported function turns whatever
/// its Swift work throws into one of these at a single boundary, `CStatus.catching`, so no Swift
/// error ever unwinds into C.
final class CStatus {
    /// `sj_code`'s values.
    enum Code: Int32 {
        case ok = 0, invalidArgument = 1, notFound = 2, invalidModel = 3, runtime = 4, callback = 5
    }

    let code: Code
    /// NUL-terminated UTF-8, owned by the status.
    let message: UnsafeMutablePointer<CChar>

    init(_ code: Code, _ text: String) {
        self.code = code
        message = strdup(text)
    }

    deinit { free(message) }

    /// The status for a thrown error: its text is what `swiftjit` prints after "error: ". A
    /// `Diagnostic` gets `diagnosticCode` (a bad model while loading, a bad argument while running),
    /// or SJ_NOT_FOUND when it is about a missing file.
    convenience init(_ error: Error, diagnosticCode: Code) {
        if let known = error as? CAPIError {
            self.init(known.code, known.message)
            return
        }
        let text = (error as? Diagnostic)?.description ?? "\(error)"
        let code: Code
        switch error {
        case is HostLayerError: code = .callback
        case is Diagnostic:
            code = text.contains("no such file") || text.contains("does not exist") ? .notFound : diagnosticCode
        default: code = .runtime
        }
        self.init(code, text)
    }

    /// Runs `body`; returns NULL when it succeeds, or a retained status for C when it throws
    /// (see `init(_:diagnosticCode:)` for the codes).
    static func catching(diagnosticCode: Code = .invalidModel, _ body: () throws -> Void) -> OpaquePointer? {
        do {
            try body()
            return nil
        } catch {
            return OpaquePointer(Unmanaged.passRetained(CStatus(error, diagnosticCode: diagnosticCode)).toOpaque())
        }
    }
}

/// A failure the C layer itself detects (a NULL handle, an index out of range, an unknown name),
/// with the code C callers branch on.
struct CAPIError: Error {
    var code: CStatus.Code
    var message: String

    init(_ code: CStatus.Code, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// Converts between Swift objects and the opaque pointers C holds. A handle is a retained
/// reference: `retain` on creation, `release` in the object's `*_free`, `borrow` in between.
enum Handle {
    static func retain<T: AnyObject>(_ object: T) -> OpaquePointer {
        OpaquePointer(Unmanaged.passRetained(object).toOpaque())
    }

    static func release<T: AnyObject>(_ pointer: OpaquePointer?, as _: T.Type) {
        guard let pointer else { return }
        Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).release()
    }

    static func borrow<T: AnyObject>(_ pointer: OpaquePointer?, as _: T.Type, _ what: String) throws -> T {
        guard let pointer else { throw CAPIError(.invalidArgument, "\(what) is NULL") }
        return Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    }

    /// For accessors that cannot report an error (counts, names): nil for a NULL handle.
    static func peek<T: AnyObject>(_ pointer: OpaquePointer?, as _: T.Type) -> T? {
        guard let pointer else { return nil }
        return Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    }
}

/// Reads a C string argument, refusing NULL with a message that names the argument.
func cString(_ pointer: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let pointer else { throw CAPIError(.invalidArgument, "\(what) is NULL") }
    return String(cString: pointer)
}

/// Reads `ndim` dims, checking the count (0...SJ_MAX_DIMS) and that each extent is positive.
func cShape(_ dims: UnsafePointer<Int64>?, _ ndim: Int32, of name: String) throws -> [Int] {
    guard ndim >= 0, ndim <= 32 else {
        throw CAPIError(.invalidArgument, "'\(name)': \(ndim) axes; a blob has 0 to 32")
    }
    guard ndim == 0 || dims != nil else { throw CAPIError(.invalidArgument, "'\(name)': dims is NULL but ndim is \(ndim)") }
    let shape = (0..<Int(ndim)).map { Int(dims![$0]) }
    if let bad = shape.first(where: { $0 < 0 }) {
        throw CAPIError(.invalidArgument, "'\(name)': extent \(bad) in shape \(shape); extents must be 0 or more")
    }
    return shape
}

/// C strings that live as long as their owner (names, types, paths handed to C callers).
final class CStrings {
    private var storage: [String: UnsafeMutablePointer<CChar>] = [:]
    private let lock = NSLock()

    /// The interned C copy of `text`, valid for this object's lifetime.
    func pointer(_ text: String) -> UnsafePointer<CChar> {
        lock.lock()
        defer { lock.unlock() }
        if let existing = storage[text] { return UnsafePointer(existing) }
        let copy = strdup(text)!
        storage[text] = copy
        return UnsafePointer(copy)
    }

    deinit { for pointer in storage.values { free(pointer) } }
}

@_cdecl("sj_status_code")
public func sj_status_code(_ status: OpaquePointer?) -> Int32 {
    Handle.peek(status, as: CStatus.self)?.code.rawValue ?? 0
}

@_cdecl("sj_status_message")
public func sj_status_message(_ status: OpaquePointer?) -> UnsafePointer<CChar>? {
    Handle.peek(status, as: CStatus.self).map { UnsafePointer($0.message) } ?? UnsafePointer(CStatus.okMessage)
}

@_cdecl("sj_status_free")
public func sj_status_free(_ status: OpaquePointer?) {
    Handle.release(status, as: CStatus.self)
}

extension CStatus {
    /// What `sj_status_message(NULL)` returns.
    nonisolated(unsafe) static let okMessage: UnsafeMutablePointer<CChar> = strdup("ok")
}

@_cdecl("sj_version")
public func sj_version() -> UnsafePointer<CChar> {
    UnsafePointer(CVersion.text)
}

@_cdecl("sj_api_version")
public func sj_api_version() -> Int32 { 1 }

/// The library's version string, kept in one place for C and Python.
enum CVersion {
    nonisolated(unsafe) static let text: UnsafeMutablePointer<CChar> = strdup("0.5.0")
}
