import Foundation

/// Compiled kernels' object code in a directory, so that a later process — the second `swiftjit
/// run` of a net, or a service restarting — links its kernels instead of optimizing and compiling
/// them again.
///
/// An entry holds the object code of one kernel and is named by its key (and its symbol's family): the SHA-256 of the
/// cache's format version, the JIT's `KernelJIT.Identity` (LLVM version, triple, CPU name and
/// features, optimization pipeline and code generation settings) and the kernel's unoptimized IR.
/// Invalidation is by construction: a change to a lowering changes the IR, a different machine or
/// LLVM changes the identity, a change to what an entry holds bumps `formatVersion`; each gives a
/// new key, and old entries are simply never read again (delete the directory to reclaim the
/// space; nothing else depends on it). An entry is not trusted for being there: it must carry the
/// magic, format version, key and symbol it is looked up with, and its object code must match the
/// SHA-256 recorded next to it, or it is reported `invalid`, compiled again and overwritten.
/// Entries are written to a temporary file in the same directory and renamed into place, so
/// readers — other processes included — see a whole entry or none.
///
/// By default the directory is `$SWIFTJIT_CACHE_DIR`, else `$XDG_CACHE_HOME/swiftjit`, else
/// `~/.cache/swiftjit` (`standardDirectory`). The library uses no disk cache unless given one
/// (`KernelCache(disk:)`); the `swiftjit` command line uses the standard one unless
/// `--no-kernel-cache` is given.
///
///     let disk = KernelDiskCache(directory: URL(fileURLWithPath: "/tmp/kernels"))
///     let compiler = try Compiler(cache: KernelCache(disk: disk))
public struct KernelDiskCache: Sendable {
    /// The layout of an entry and of its key. Bump it when either changes.
    /// Version 2 names an entry by its symbol's family as well as its key (see `path`).
    public static let formatVersion: UInt32 = 2
    /// The directory given (entries live in a subdirectory per format version).
    public let directory: URL

    public init(directory: URL) {
        self.directory = directory
    }

    /// `$SWIFTJIT_CACHE_DIR`, else `$XDG_CACHE_HOME/swiftjit`, else `$HOME/.cache/swiftjit`; nil
    /// when none of them is set.
    public static func standardDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL? {
        if let path = environment["SWIFTJIT_CACHE_DIR"], !path.isEmpty { return URL(fileURLWithPath: path) }
        // The XDG spec ignores relative paths.
        if let path = environment["XDG_CACHE_HOME"], path.hasPrefix("/") {
            return URL(fileURLWithPath: path).appendingPathComponent("swiftjit")
        }
        if let home = environment["HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home).appendingPathComponent(".cache/swiftjit")
        }
        return nil
    }

    /// The standard cache (`standardDirectory`), or nil when no directory can be determined.
    public static func standard() -> KernelDiskCache? {
        standardDirectory().map(KernelDiskCache.init(directory:))
    }

    /// Where entries of this format live.
    var entries: URL { directory.appendingPathComponent("kernels-v\(KernelDiskCache.formatVersion)") }

    /// The key of a kernel with IR `ir` compiled by a JIT with `identity`.
    static func key(ir: String, identity: KernelJIT.Identity) -> SHA256.Digest {
        var hash = SHA256()
        hash.update("swiftjit kernel cache \(formatVersion)\n")
        hash.update(identity.description)
        hash.update(ir)
        return hash.finalize()
    }

    /// The entry of the kernel `symbol` with `key`. Two families may generate the same IR (a copy
    /// and an accumulate-free sum, say): their objects define different symbols, so each has its
    /// own entry rather than overwriting the other's and being rejected on the next load.
    func path(for key: SHA256.Digest, symbol: String) -> URL {
        let family = symbol.split(separator: "_").dropLast().joined(separator: "_")
        return entries.appendingPathComponent(key.hex + (family.isEmpty ? "" : "-" + family) + ".kernel")
    }

    /// What `load` found.
    enum Lookup: Equatable {
        /// A whole, checked entry: the object code.
        case hit([UInt8])
        /// No entry for this key.
        case miss
        /// An entry that cannot be used, and why (truncated, damaged, written for something else).
        case invalid(String)
    }

    // Entry layout, little-endian:
    //   0  magic "SJKERNEL"            8 bytes
    //   8  format version               UInt32
    //  12  key                          32 bytes
    //  44  symbol length n              UInt32
    //  48  symbol                       n bytes, UTF-8
    //  48+n object length m             UInt64
    //  56+n SHA-256 of the object       32 bytes
    //  88+n object code                 m bytes (and nothing after it)
    private static let magic = Array("SJKERNEL".utf8)

    /// The entry for `key`, checked against `key` and `symbol`.
    func load(key: SHA256.Digest, symbol: String) -> Lookup {
        let file = path(for: key, symbol: symbol)
        let data: Data
        do {
            data = try Data(contentsOf: file)
        } catch {
            if !FileManager.default.fileExists(atPath: file.path) { return .miss }
            return .invalid("\(file.path) cannot be read: \(error.localizedDescription)")
        }
        return data.withUnsafeBytes { raw in KernelDiskCache.decode(raw, key: key, symbol: symbol, file: file.path) }
    }

    static func decode(_ raw: UnsafeRawBufferPointer, key: SHA256.Digest, symbol: String, file: String) -> Lookup {
        func invalid(_ why: String) -> Lookup { .invalid("\(file): \(why)") }
        guard raw.count >= 48 else { return invalid("truncated (\(raw.count) bytes)") }
        guard Array(raw[0..<8]) == magic else { return invalid("not a swiftjit kernel entry") }
        guard raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian == formatVersion else {
            return invalid("written in another entry format")
        }
        guard Array(raw[12..<44]) == key.bytes else { return invalid("holds another kernel (its key differs from its name)") }
        let symbolLength = Int(raw.loadUnaligned(fromByteOffset: 44, as: UInt32.self).littleEndian)
        guard raw.count >= 88 + symbolLength else { return invalid("truncated (\(raw.count) bytes)") }
        guard String(decoding: raw[48..<48 + symbolLength], as: UTF8.self) == symbol else { return invalid("defines another symbol") }
        let objectLength = raw.loadUnaligned(fromByteOffset: 48 + symbolLength, as: UInt64.self).littleEndian
        let objectStart = 88 + symbolLength
        guard objectLength == UInt64(raw.count - objectStart) else {
            return invalid("holds \(raw.count - objectStart) bytes of object code where its header says \(objectLength)")
        }
        let object = UnsafeRawBufferPointer(rebasing: raw[objectStart...])
        guard SHA256.hash(object).bytes == Array(raw[56 + symbolLength..<objectStart]) else {
            return invalid("its object code does not match its checksum")
        }
        return .hit(Array(object))
    }

    static func encode(key: SHA256.Digest, symbol: String, object: [UInt8]) -> [UInt8] {
        func bytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
            withUnsafeBytes(of: value.littleEndian) { Array($0) }
        }
        let name = Array(symbol.utf8)
        var entry = magic + bytes(formatVersion) + key.bytes + bytes(UInt32(name.count)) + name
        entry += bytes(UInt64(object.count)) + SHA256.hash(object).bytes
        entry += object
        return entry
    }

    /// Writes the entry for `key` atomically (a temporary file renamed over the entry). Throws
    /// when the directory cannot be created or written; the caller decides whether that matters.
    func store(key: SHA256.Digest, symbol: String, object: [UInt8]) throws {
        let manager = FileManager.default
        try manager.createDirectory(at: entries, withIntermediateDirectories: true)
        let final = path(for: key, symbol: symbol)
        let temporary = entries.appendingPathComponent(".\(key.hex).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        do {
            try Data(KernelDiskCache.encode(key: key, symbol: symbol, object: object)).write(to: temporary)
            guard rename(temporary.path, final.path) == 0 else {
                throw CodegenError("writing the kernel cache entry \(final.path)", String(cString: strerror(errno)))
            }
        } catch {
            try? manager.removeItem(at: temporary)
            throw error
        }
    }
}
