import CaffeFormat
import CHDF5
import Foundation

/// Runs libhdf5's reading of a file in a child process and brings the datasets back over a pipe,
/// so a damaged file that crashes libhdf5 1.10 (NULL dereferences in its local-heap and B-tree
/// decoders, Tests/Fuzz/libhdf5-crashes) is a `Diagnostic` naming the file and the signal rather
/// than the end of `swiftjit train` or of a Python or C host.
///
/// The child is a `fork()` that runs only C (Sources/CHDF5/isolated.h says why that is safe with
/// our threads and LLVM) and reads exactly what the in-process reader would: lookup, rank and
/// extents, element class, the storage check, `H5Dread` as float32; the parent applies the size
/// limits to what the child reports (the child gets the same limit, so it never allocates past it)
/// and throws the same diagnostics.
///
/// A fork costs milliseconds in a process with gigabytes mapped (14 ms measured in a debug
/// `swiftjit train`), and `HDF5Data` reloads its files at every pass over several of them, so a
/// file the child read whole is remembered by (device, inode, size, modification time) with the
/// datasets it read, and read in this process from then on: libhdf5 decodes the same bytes the same way. In-memory images
/// (`read(image:)`, the fuzz harness) always go through a child.
///
///     let arrays = try HDF5ChildReader.read(.file("train.h5"), label: "train.h5",
///                                           datasets: ["data", "label"], maxElements: HDF5File.maxElements)
///
/// A child that sends nothing for `defaultStallTimeout` seconds (`SWIFTJIT_HDF5_TIMEOUT`, 300 s
/// by default) is killed, and the read is a diagnostic naming the file and what the child was
/// doing, rather than a training run that waits for ever: libhdf5 hanging on a damaged file, a
/// FIFO or device given as the file, storage that stopped answering.
///
/// Every libhdf5 call of the process holds `libraryLock`, so no thread is inside libhdf5 when a
/// child is forked; the lock also guards the record of files read cleanly, the one piece of
/// process-wide state here (it describes libhdf5's view of files, which is process-wide too).
enum HDF5ChildReader {
    /// Where the bytes are: a file, or an image in memory (the child inherits it).
    enum Source {
        case file(String)
        case image(Data)
    }

    /// Held around every libhdf5 call in this process and around each fork.
    static let libraryLock = NSLock()

    /// How long a child may send nothing before it is killed: `SWIFTJIT_HDF5_TIMEOUT` seconds, or
    /// 300. The child writes each dataset only once libhdf5 has read all of it, so the bound must
    /// cover reading the largest dataset (2^31 values, 8 GB, is ~3 min at 50 MB/s).
    static let defaultStallTimeout: Double = {
        let text = ProcessInfo.processInfo.environment["SWIFTJIT_HDF5_TIMEOUT"] ?? ""
        guard let seconds = Double(text), seconds > 0 else { return 300 }
        return seconds
    }()

    /// Files a child read whole: their identity (device, inode, size, modification time in ns)
    /// and the datasets it read, since a dataset a child never read may be the damaged one.
    nonisolated(unsafe) private static var cleanReads: Set<String> = []

    /// The key `cleanReads` records, or nil when the file cannot be examined.
    private static func cleanReadKey(_ path: String, datasets names: [String]) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return "\(info.st_dev) \(info.st_ino) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec) "
            + names.joined(separator: "\u{0}")
    }

    static func read(_ source: Source, label: String, datasets names: [String], maxElements: Int,
                     stallTimeout: Double = defaultStallTimeout) throws -> [HDF5Array] {
        let memoryValues = ProcessInfo.processInfo.physicalMemory / UInt64(MemoryLayout<Float>.size)
        let maxValues = min(UInt64(max(maxElements, 0)), memoryValues)
        return try libraryLock.withLock {
            var key: String?
            if case .file(let path) = source {
                key = cleanReadKey(path, datasets: names)
                if let key, cleanReads.contains(key) {
                    return try readInProcess(path, datasets: names, maxValues: maxValues, maxElements: maxElements)
                }
            }
            let arrays = try readInChild(source, label: label, datasets: names, maxValues: maxValues, maxElements: maxElements,
                                         stallTimeout: stallTimeout)
            if let key { cleanReads.insert(key) }
            return arrays
        }
    }

    /// A file a child has read whole, read again here, with the same checks and diagnostics.
    private static func readInProcess(_ path: String, datasets names: [String], maxValues: UInt64,
                                      maxElements: Int) throws -> [HDF5Array] {
        let file = swiftjit_h5_open_read(path)
        guard file >= 0 else {
            throw Diagnostic("not an HDF5 file, or it is truncated or damaged", file: path,
                             hint: "write it again (h5py: h5py.File(path, 'w')[name] = array)")
        }
        defer { _ = swiftjit_h5_close(file) }
        return try names.map { name in
            var report = swiftjit_h5_dataset_report()
            swiftjit_h5_report(file, name, maxValues, &report)
            let shape = try HDF5File.check(report, dataset: name, label: path, maxElements: maxElements)
            var values = [Float](repeating: 0, count: shape.reduce(1, *))
            guard !values.isEmpty else { return HDF5Array(shape: shape, values: values) }
            let status = values.withUnsafeMutableBufferPointer { swiftjit_h5_read_float(file, name, $0.baseAddress) }
            guard status == 0 else {
                throw Diagnostic("dataset '\(name)' cannot be read (the file is truncated or damaged)", file: path,
                                 hint: "write it again")
            }
            return HDF5Array(shape: shape, values: values)
        }
    }

    private static func readInChild(_ source: Source, label: String, datasets names: [String], maxValues: UInt64,
                                    maxElements: Int, stallTimeout: Double) throws -> [HDF5Array] {
        let (child, pipe) = try spawn(source, datasets: names, maxValues: maxValues, label: label)
        var complete = false
        defer {
            close(pipe)
            if complete {
                var status: Int32 = 0
                _ = swiftjit_h5_reap(child, 1, &status)
            }
        }
        do {
            let arrays = try receive(from: pipe, label: label, datasets: names, maxElements: maxElements,
                                     stallMilliseconds: Int32(clamping: Int((stallTimeout * 1000).rounded(.up))))
            complete = true
            return arrays
        } catch let stalled as PipeStalled {
            complete = true   // the defer kills and reaps the child
            let seconds = stallTimeout.rounded() == stallTimeout ? String(Int(stallTimeout)) : String(stallTimeout)
            throw Diagnostic("the process reading it with libhdf5 sent nothing for \(seconds) s while \(stalled.stage) and was stopped",
                             file: label,
                             hint: "libhdf5 may hang on a damaged file, and a FIFO, device or unresponsive network mount never answers; "
                                 + "for a very large dataset on slow storage raise SWIFTJIT_HDF5_TIMEOUT (seconds, default 300)")
        } catch let ended as PipeEnded {
            throw crashDiagnostic(child: child, stage: ended.stage, label: label)
        } catch {
            complete = true
            throw error
        }
    }

    /// The pipe ended before the child said everything: it died (or could not allocate a report).
    private struct PipeEnded: Error {
        /// What the child was doing: "opening it", "reading dataset 'x'".
        var stage: String
    }

    /// The child sent nothing for the stall timeout while doing `stage`.
    private struct PipeStalled: Error {
        var stage: String
    }

    private static func spawn(_ source: Source, datasets names: [String], maxValues: UInt64,
                              label: String) throws -> (pid_t, Int32) {
        let cNames = names.map { strdup($0) }
        defer { cNames.forEach { free($0) } }
        var pipe: Int32 = -1
        let child: pid_t = cNames.map { UnsafePointer($0) }.withUnsafeBufferPointer { namePointers in
            switch source {
            case .file(let path):
                return swiftjit_h5_spawn_reader(path, nil, 0, namePointers.baseAddress, Int32(names.count), maxValues, &pipe)
            case .image(let bytes):
                return bytes.withUnsafeBytes { image in
                    // The child reads an empty image as "not HDF5"; it needs a non-NULL pointer to
                    // know it has one.
                    swiftjit_h5_spawn_reader(nil, image.baseAddress ?? UnsafeRawPointer(bitPattern: 1), image.count,
                                             namePointers.baseAddress, Int32(names.count), maxValues, &pipe)
                }
            }
        }
        guard child > 0 else {
            let reason = String(cString: strerror(errno))
            throw Diagnostic("cannot start the process that reads HDF5 files (\(reason))", file: label,
                             hint: "the system is out of processes or memory; try again with fewer jobs running")
        }
        return (child, pipe)
    }

    private static func receive(from pipe: Int32, label: String, datasets names: [String], maxElements: Int,
                                stallMilliseconds: Int32) throws -> [HDF5Array] {
        var stalled = false
        do {
            return try receive(label: label, datasets: names, maxElements: maxElements) {
                let status = swiftjit_h5_read_all_within(pipe, $0, $1, stallMilliseconds)
                stalled = status == -2
                return status == 0
            }
        } catch let ended as PipeEnded where stalled {
            throw PipeStalled(stage: ended.stage)
        }
    }

    /// What this process makes of the bytes a child sends (the protocol in Sources/CHDF5/isolated.h),
    /// `bytes` taking the pipe's place: the fuzz harness `hdf5-pipe` feeds it arbitrary streams, so
    /// the in-process half of reading is fuzzed at full speed (a fork per input is ~65 ms). A stream
    /// that ends early reads as a child that died of an unknown cause.
    static func decode(_ bytes: Data, label: String, datasets names: [String], maxElements: Int) throws -> [HDF5Array] {
        var offset = 0
        do {
            return try receive(label: label, datasets: names, maxElements: maxElements) { target, count in
                guard count <= bytes.count - offset else { return false }
                bytes.withUnsafeBytes { target.copyMemory(from: $0.baseAddress! + offset, byteCount: count) }
                offset += count
                return true
            }
        } catch let ended as PipeEnded {
            throw Diagnostic("the process reading it with libhdf5 ended while \(ended.stage)", file: label)
        }
    }

    /// Reads the child's open status, then one report (and its values) per dataset, through
    /// `read(buffer, count)`, which fills exactly `count` bytes or returns false at the end.
    private static func receive(label: String, datasets names: [String], maxElements: Int,
                                read: (UnsafeMutableRawPointer, Int) -> Bool) throws -> [HDF5Array] {
        var opened: Int32 = 0
        guard read(&opened, MemoryLayout<Int32>.size) else { throw PipeEnded(stage: "opening it") }
        guard opened == 0 else {
            throw Diagnostic("not an HDF5 file, or it is truncated or damaged", file: label,
                             hint: "write it again (h5py: h5py.File(path, 'w')[name] = array)")
        }
        return try names.map { name in
            let stage = "reading dataset '\(name)'"
            var report = swiftjit_h5_dataset_report()
            guard read(&report, MemoryLayout<swiftjit_h5_dataset_report>.size) else { throw PipeEnded(stage: stage) }
            let shape = try HDF5File.check(report, dataset: name, label: label, maxElements: maxElements)
            let count = shape.reduce(1, *)
            guard Int64(count) == report.values else {
                throw Diagnostic("dataset '\(name)' was reported with \(report.values) values for its \(count)", file: label,
                                 hint: "a bug in swiftjit's HDF5 reader: please report it with the file")
            }
            var values = [Float](repeating: 0, count: count)
            let received = count == 0 || values.withUnsafeMutableBytes { read($0.baseAddress!, $0.count) }
            guard received else { throw PipeEnded(stage: stage) }
            return HDF5Array(shape: shape, values: values)
        }
    }

    /// The diagnostic for a child that stopped writing: the signal that ended it, or its exit status.
    private static func crashDiagnostic(child: pid_t, stage: String, label: String) -> Diagnostic {
        var status: Int32 = 0
        let signal = swiftjit_h5_reap(child, 0, &status)
        let hint = "write the file again (h5py: h5py.File(path, 'w')[name] = array); h5dump shows where it is broken. "
            + "libhdf5 ran in a child process, so only that process died"
        if signal == SIGKILL {
            return Diagnostic("the process reading it with libhdf5 was killed (SIGKILL) while \(stage)", file: label,
                              hint: "the system may have run out of memory: check the file's dataset sizes (h5ls)")
        }
        if signal != 0 {
            return Diagnostic("libhdf5 crashed (\(signalName(signal))) \(stage): the file is damaged", file: label, hint: hint)
        }
        let how = status < 0 ? "ended" : "exited with status \(status)"
        return Diagnostic("the process reading it with libhdf5 \(how) while \(stage): the file is likely damaged",
                          file: label, hint: hint)
    }

    static func signalName(_ signal: Int32) -> String {
        let names: [Int32: String] = [SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS", SIGABRT: "SIGABRT", SIGILL: "SIGILL",
                                      SIGFPE: "SIGFPE", SIGTRAP: "SIGTRAP", SIGSYS: "SIGSYS", SIGKILL: "SIGKILL",
                                      SIGTERM: "SIGTERM", SIGINT: "SIGINT"]
        return names[signal] ?? "signal \(signal)"
    }
}
