import Foundation
import SwiftJIT

/// What `sj_options` holds: the settings shared by models, nets and solvers. Unset fields keep the
/// library's defaults (TEST phase, one thread per core, seed 1, the disk kernel cache only where
/// `$SWIFTJIT_CACHE_DIR` names one).
final class COptions {
    var phase: Caffe_Phase = .test
    var inputShapes: [String: [Int]] = [:]
    var threads: Int?
    var seed: UInt64 = 1
    /// nil: `$SWIFTJIT_CACHE_DIR` if set, else no disk cache; "" after `set_kernel_cache_dir(NULL)`: none.
    var kernelCacheDirectory: String?
    var level: Int32 = 0
    var stages: [String] = []
    /// The caller's implementation of "Python" layers (`sj_layer_function` and its user pointer).
    var layerFunction: UnsafeRawPointer?
    var layerUser: UnsafeMutableRawPointer?

    init() {}

    /// The kernel cache these options ask for: on disk when a folder is named (or in
    /// `$SWIFTJIT_CACHE_DIR`), in memory only otherwise.
    func makeKernelCache() throws -> KernelCache {
        let folder = kernelCacheDirectory ?? ProcessInfo.processInfo.environment["SWIFTJIT_CACHE_DIR"]
        guard let folder, !folder.isEmpty else { return try KernelCache() }
        return try KernelCache(disk: KernelDiskCache(directory: URL(fileURLWithPath: folder)))
    }
}

@_cdecl("sj_options_create")
public func sj_options_create() -> OpaquePointer {
    Handle.retain(COptions())
}

@_cdecl("sj_options_free")
public func sj_options_free(_ options: OpaquePointer?) {
    Handle.release(options, as: COptions.self)
}

@_cdecl("sj_options_set_phase")
public func sj_options_set_phase(_ options: OpaquePointer?, _ phase: Int32) {
    Handle.peek(options, as: COptions.self)?.phase = phase == 0 ? .train : .test
}

@_cdecl("sj_options_set_input_shape")
public func sj_options_set_input_shape(_ options: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dims: UnsafePointer<Int64>?,
                                       _ ndim: Int32) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(options, as: COptions.self, "options")
        let blob = try cString(name, "name")
        box.inputShapes[blob] = try cShape(dims, ndim, of: blob)
    }
}

@_cdecl("sj_options_set_threads")
public func sj_options_set_threads(_ options: OpaquePointer?, _ threads: Int32) {
    Handle.peek(options, as: COptions.self)?.threads = threads > 0 ? Int(threads) : nil
}

@_cdecl("sj_options_set_seed")
public func sj_options_set_seed(_ options: OpaquePointer?, _ seed: UInt64) {
    Handle.peek(options, as: COptions.self)?.seed = seed
}

@_cdecl("sj_options_set_kernel_cache_dir")
public func sj_options_set_kernel_cache_dir(_ options: OpaquePointer?, _ directory: UnsafePointer<CChar>?) {
    Handle.peek(options, as: COptions.self)?.kernelCacheDirectory = directory.map { String(cString: $0) } ?? ""
}

@_cdecl("sj_options_set_level")
public func sj_options_set_level(_ options: OpaquePointer?, _ level: Int32) {
    Handle.peek(options, as: COptions.self)?.level = level
}

@_cdecl("sj_options_add_stage")
public func sj_options_add_stage(_ options: OpaquePointer?, _ stage: UnsafePointer<CChar>?) {
    guard let stage else { return }
    Handle.peek(options, as: COptions.self)?.stages.append(String(cString: stage))
}

@_cdecl("sj_options_set_layer_function")
public func sj_options_set_layer_function(_ options: OpaquePointer?, _ function: UnsafeRawPointer?, _ user: UnsafeMutableRawPointer?) {
    guard let box = Handle.peek(options, as: COptions.self) else { return }
    box.layerFunction = function
    box.layerUser = user
}
