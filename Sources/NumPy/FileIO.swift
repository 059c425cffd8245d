// Whole-file reads and atomic whole-file writes on top of POSIX, with `strerror` messages.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

enum FileIO {
    private static func errnoText() -> String { String(cString: strerror(errno)) }

    /// Reads the whole file at `path`.
    static func read(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NumPyError(.io, "cannot open for reading: \(errnoText())", file: path) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw NumPyError(.io, "cannot stat: \(errnoText())", file: path) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw NumPyError(.io, "is a directory — expected a .npy or .npz file", file: path)
        }
        let isRegular = (st.st_mode & S_IFMT) == S_IFREG
        var result: [UInt8] = []
        var capacity = isRegular ? Int(st.st_size) : 1 << 16
        result.reserveCapacity(capacity + (1 << 16))
        var filled = 0
        while true {
            if filled == capacity {
                // A regular file normally ends here (the next read returns 0); keep going in case
                // it grew, and for pipes.
                capacity += isRegular ? 1 << 16 : max(capacity, 1 << 16)
            }
            if result.count < capacity { result.append(contentsOf: repeatElement(0, count: capacity - result.count)) }
            let n = result.withUnsafeMutableBytes { buf in
                sysRead(fd, buf.baseAddress! + filled, capacity - filled)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw NumPyError(.io, "read failed: \(errnoText())", file: path)
            }
            if n == 0 { break }
            filled += n
        }
        result.removeSubrange(filled...)
        return result
    }

    /// Writes `bytes` to `path` atomically: a uniquely named temporary file in the same folder is
    /// written, flushed and renamed over `path`, so readers see the old file or the new one.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { path[...$0] } ?? ""
        let base = slash.map { path[path.index(after: $0)...] } ?? Substring(path)
        guard !base.isEmpty else {
            throw NumPyError(.io, "cannot write: the path names a folder — expected a file name", file: path)
        }
        let temp = "\(folder).\(base).tmp-\(getpid())-\(String(UInt64.random(in: 0 ... .max), radix: 36))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw NumPyError(.io, "cannot create temporary file '\(temp)': \(errnoText())", file: path)
        }
        var ok = false
        defer { if !ok { unlink(temp) } }
        do {
            defer { close(fd) }
            var written = 0
            try bytes.withUnsafeBytes { buf in
                while written < buf.count {
                    let n = sysWrite(fd, buf.baseAddress! + written, buf.count - written)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw NumPyError(.io, "write failed: \(errnoText())", file: path)
                    }
                    written += n
                }
            }
            guard fsync(fd) == 0 else { throw NumPyError(.io, "fsync failed: \(errnoText())", file: path) }
        }
        guard rename(temp, path) == 0 else {
            throw NumPyError(.io, "cannot rename the temporary file into place: \(errnoText())", file: path)
        }
        ok = true
    }
}

// `read`/`write` are shadowed inside types that define methods of the same name.
@inline(__always) private func sysRead(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) -> Int { read(fd, p, n) }
@inline(__always) private func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
