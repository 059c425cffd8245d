import CLLVM
import Foundation

/// Names JIT'd kernels for Linux `perf`: with `SWIFTJIT_PERF_MAP=1` in the environment, every
/// kernel the process links is appended to `/tmp/perf-PID.map` as `START SIZE NAME`, the text
/// format `perf report` reads for code it finds no ELF file for. Without it, samples in kernels
/// show as anonymous `[JIT]` addresses; with it, as the kernel's linked name (its signature's
/// family and a digest), so a profile of a whole training iteration says which kernels take the
/// time. Sizes come from the object code's symbol table (read with LLVM's object-file API when the
/// object is linked), so a sample is attributed to exactly one kernel.
///
///     SWIFTJIT_PERF_MAP=1 perf record -e cpu-clock -g swiftjit time net.prototxt --backward
///     perf report --sort sym
final class PerfMap: @unchecked Sendable {
    /// The process's map, or nil when `SWIFTJIT_PERF_MAP` is unset or "0".
    static let shared: PerfMap? = {
        guard let value = ProcessInfo.processInfo.environment["SWIFTJIT_PERF_MAP"], value != "0", !value.isEmpty else { return nil }
        return PerfMap(path: "/tmp/perf-\(getpid()).map")
    }()

    private let handle: FileHandle?
    private var sizes: [String: UInt64] = [:]
    private var written: Set<UInt64> = []
    private let lock = NSLock()

    private init(path: String) {
        FileManager.default.createFile(atPath: path, contents: nil)
        handle = FileHandle(forWritingAtPath: path)
        handle?.seekToEndOfFile()
    }

    /// Remembers the size of every function symbol the object code defines.
    func noteSymbols(in object: [UInt8]) {
        var found: [(String, UInt64)] = []
        object.withUnsafeBufferPointer { bytes in
            bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) { start in
                let buffer = LLVMCreateMemoryBufferWithMemoryRange(start, bytes.count, "perf map", 0)
                defer { LLVMDisposeMemoryBuffer(buffer) }
                var message: UnsafeMutablePointer<CChar>?
                guard let binary = LLVMCreateBinary(buffer, nil, &message) else {
                    LLVMDisposeMessage(message)
                    return
                }
                defer { LLVMDisposeBinary(binary) }
                guard let symbols = LLVMObjectFileCopySymbolIterator(binary) else { return }
                defer { LLVMDisposeSymbolIterator(symbols) }
                while LLVMObjectFileIsSymbolIteratorAtEnd(binary, symbols) == 0 {
                    if let name = LLVMGetSymbolName(symbols) {
                        let size = LLVMGetSymbolSize(symbols)
                        if size > 0 { found.append((String(cString: name), size)) }
                    }
                    LLVMMoveToNextSymbol(symbols)
                }
            }
        }
        lock.lock()
        for (name, size) in found { sizes[name] = size }
        lock.unlock()
    }

    /// Appends a linked kernel's line (once per address).
    func record(_ name: String, address: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        guard !written.contains(address) else { return }
        written.insert(address)
        let line = String(format: "%llx %llx %@\n", address, sizes[name] ?? 16, name)
        handle?.write(Data(line.utf8))
    }
}
