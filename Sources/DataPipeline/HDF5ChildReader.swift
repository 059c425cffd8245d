import CaffeFormat
import CHDF5
import Foundation

/// Runs libhdf5's reading of a file in a child process and brings the datasets back over a pipe,
/// so a damaged file that crashes libhdf5 1.10 (NULL dereferences in its local-heap and B-tree
/// decoders, Tests/Fuzz/libhdf5-crashes) is a `Diagnostic` naming the file and the signal rather
/// than the end of `swiftjit train` or of a Python or C host.
///
/// The child is a `fork()` that runs only C (Sources/CHDF5/isolated.h says why that is safe with
/// our threads and LLVM) and reads exactly what the in-process reader used to: lookup, rank and
/// extents, element class, the storage check, `H5Dread` as float32; the parent applies the size
/// limits to what the child reports (the child gets the same limit, so it never allocates past it)
/// and throws the same diagnostics. Nothing is cached: every call forks once (about a millisecond,
/// more for a process with gigabytes mapped; `HDF5Data` loads a file only when reading reaches it),
/// and for the moment of the copy a dataset exists in both processes.
///
///     let arrays = try HDF5ChildReader.read(.file("train.h5"), label: "train.h5",
///                                           datasets: ["data", "label"], maxElements: HDF5File.maxElements)
///
/// Every libhdf5 call of the process holds `libraryLock`, so no thread is inside libhdf5 when a
/// child is forked, and a libhdf5 built without thread safety is used by one thread at a time.
enum HDF5ChildReader {
    /// Where the bytes are: a file, or an image in memory (the child inherits it).
    enum Source {
        case file(String)
        case image(Data)
    }

    /// Held around every libhdf5 call in this process and around each fork.
    static let libraryLock = NSLock()

    static func read(_ source: Source, label: String, datasets names: [String], maxElements: Int) throws -> [HDF5Array] {
        let memoryValues = ProcessInfo.processInfo.physicalMemory / UInt64(MemoryLayout<Float>.size)
        let maxValues = min(UInt64(max(maxElements, 0)), memoryValues)
        return try libraryLock.withLock {
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
                let arrays = try receive(from: pipe, label: label, datasets: names, maxElements: maxElements)
                complete = true
                return arrays
            } catch let ended as PipeEnded {
                throw crashDiagnostic(child: child, stage: ended.stage, label: label)
            } catch {
                complete = true
                throw error
            }
        }
    }

    /// The pipe ended before the child said everything: it died (or could not allocate a report).
    private struct PipeEnded: Error {
        /// What the child was doing: "opening it", "reading dataset 'x'".
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

    private static func receive(from pipe: Int32, label: String, datasets names: [String], maxElements: Int) throws -> [HDF5Array] {
        var opened: Int32 = 0
        guard swiftjit_h5_read_all(pipe, &opened, MemoryLayout<Int32>.size) == 0 else { throw PipeEnded(stage: "opening it") }
        guard opened == 0 else {
            throw Diagnostic("not an HDF5 file, or it is truncated or damaged", file: label,
                             hint: "write it again (h5py: h5py.File(path, 'w')[name] = array)")
        }
        return try names.map { name in
            let stage = "reading dataset '\(name)'"
            var report = swiftjit_h5_dataset_report()
            guard swiftjit_h5_read_all(pipe, &report, MemoryLayout<swiftjit_h5_dataset_report>.size) == 0 else {
                throw PipeEnded(stage: stage)
            }
            let shape = try HDF5File.check(report, dataset: name, label: label, maxElements: maxElements)
            let count = shape.reduce(1, *)
            guard Int64(count) == report.values else {
                throw Diagnostic("dataset '\(name)' was reported with \(report.values) values for its \(count)", file: label,
                                 hint: "a bug in swiftjit's HDF5 reader: please report it with the file")
            }
            var values = [Float](repeating: 0, count: count)
            let received = values.withUnsafeMutableBytes { swiftjit_h5_read_all(pipe, $0.baseAddress, $0.count) }
            guard count == 0 || received == 0 else { throw PipeEnded(stage: stage) }
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
