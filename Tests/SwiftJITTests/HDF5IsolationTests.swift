import CaffeFormat
import DataPipeline
import Foundation
import Testing

/// libhdf5 1.10.8 crashes on some damaged files (Tests/Fuzz/libhdf5-crashes, found by the hdf5
/// fuzz harness: NULL dereferences in its local-heap decoder and in a contiguous read). HDF5File
/// reads in a child process, so each of them is a diagnostic here and this process carries on.
@Suite("HDF5 files libhdf5 crashes on are diagnostics, not crashes")
struct HDF5IsolationTests {
    static let crashes = FuzzReplayTests.fuzz.appendingPathComponent("libhdf5-crashes")

    static var crashInputs: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: crashes.path)) ?? []
        return names.filter { $0.hasSuffix(".h5") }.sorted().map { crashes.appendingPathComponent($0).path }
    }

    static func diagnostic(_ read: () throws -> [HDF5Array]) -> Diagnostic? {
        do {
            _ = try read()
            Issue.record("expected an error")
        } catch let diagnostic as Diagnostic {
            return diagnostic
        } catch {
            Issue.record("not a Diagnostic: \(error)")
        }
        return nil
    }

    /// A small well-formed file, to show reading still works after a crash.
    static func writeGoodFile() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftjit-h5isolation-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).h5").path
        try HDF5File.write(path: path, datasets: [("data", HDF5Array(shape: [2, 2], values: [1, 2, 3, 4.5])),
                                                  ("label", HDF5Array(shape: [2], values: [0, 1]))])
        return path
    }

    @Test("each file that crashes libhdf5 reads as 'libhdf5 crashed (SIGSEGV) …: the file is damaged', from disk and from memory")
    func crashesAreDiagnostics() throws {
        let inputs = Self.crashInputs
        #expect(!inputs.isEmpty)
        let good = try Self.writeGoodFile()
        defer { try? FileManager.default.removeItem(atPath: good) }
        for path in inputs {
            // HDF5Data reads each top's dataset, as the fuzz harness did when these crashed.
            let fromFile = Self.diagnostic { try HDF5File.read(path: path, datasets: ["data", "label"]) }
            #expect(fromFile?.file == path)
            #expect(fromFile?.message.hasPrefix("libhdf5 crashed (SIGSEGV) reading dataset '") == true, "\(String(describing: fromFile))")
            #expect(fromFile?.message.hasSuffix(": the file is damaged") == true)
            #expect(fromFile?.hint?.contains("h5dump") == true)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let fromMemory = Self.diagnostic { try HDF5File.read(image: bytes, label: "upload.h5", datasets: ["data", "label"]) }
            #expect(fromMemory?.file == "upload.h5")
            #expect(fromMemory?.message == fromFile?.message)
            // And this process reads the next file as if nothing happened.
            #expect(try HDF5File.read(path: good, datasets: ["data", "label"])
                == [HDF5Array(shape: [2, 2], values: [1, 2, 3, 4.5]), HDF5Array(shape: [2], values: [0, 1])])
        }
    }

    @Test("the crash in the local-heap decoder happens looking up 'data', the first dataset HDF5Data asks for")
    func crashNamesTheDataset() throws {
        let path = Self.crashes.appendingPathComponent("segv-in-H5HL_protect-local-heap.h5").path
        #expect(Self.diagnostic { try HDF5File.read(path: path, datasets: ["data", "label"]) }?.message
            == "libhdf5 crashed (SIGSEGV) reading dataset 'data': the file is damaged")
    }

    @Test("an HDF5Data layer whose file crashes libhdf5 fails with the layer, the file and the signal")
    func dataLayerNamesTheFile() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-h5layer-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let damaged = Self.crashes.appendingPathComponent("segv-in-H5HL_protect-local-heap.h5").path
        try damaged.write(to: folder.appendingPathComponent("list.txt"), atomically: true, encoding: .utf8)
        let net = try CaffeFiles.parseNet(text: """
            layer { name: "feed" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" batch_size: 2 } }
            """)
        do {
            _ = try HDF5DataReader(layer: net.net.layer[0], seed: 1, baseDirectory: folder.path)
            Issue.record("expected an error")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.description.hasPrefix("\(damaged): layer 'feed': libhdf5 crashed (SIGSEGV) reading dataset 'data'"),
                    "\(diagnostic)")
        }
    }

    @Test("a file read cleanly once is read in-process after, identically; rewritten, it goes through a child again")
    func cleanFilesAreRemembered() throws {
        let path = try Self.writeGoodFile()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = try HDF5File.read(path: path, datasets: ["data", "label"])
        #expect(try HDF5File.read(path: path, datasets: ["data", "label"]) == first)
        #expect(try HDF5File.read(path: path, datasets: ["label"]) == [first[1]])
        // Only 'label' read cleanly from the crashing file does not make its 'data' safe to read here.
        let crashing = Self.crashes.appendingPathComponent("segv-in-H5HL_protect-local-heap.h5").path
        _ = try? HDF5File.read(path: crashing, datasets: ["label"])
        #expect(Self.diagnostic { try HDF5File.read(path: crashing, datasets: ["data"]) }?.message
            == "libhdf5 crashed (SIGSEGV) reading dataset 'data': the file is damaged")
        // The same path now holds a file that crashes libhdf5: it must not be taken for the clean one.
        let damaged = try Data(contentsOf: Self.crashes.appendingPathComponent("segv-in-H5HL_protect-local-heap.h5"))
        try damaged.write(to: URL(fileURLWithPath: path))
        #expect(Self.diagnostic { try HDF5File.read(path: path, datasets: ["data", "label"]) }?.message
            == "libhdf5 crashed (SIGSEGV) reading dataset 'data': the file is damaged")
    }

    @Test("what a child sends is decoded as read does; a stream cut short or a report out of range is a diagnostic (fuzz: hdf5-pipe)")
    func childOutputDecoding() throws {
        let seeds = FuzzReplayTests.fuzz.appendingPathComponent("corpus/hdf5-pipe")
        func stream(_ name: String) throws -> Data { try Data(contentsOf: seeds.appendingPathComponent(name)) }
        #expect(try HDF5File.decodeChildOutput(stream("two-datasets.bin"), label: "a.h5", datasets: ["data", "label"])
            == [HDF5Array(shape: [2, 3], values: [1, 2, 3, 4, 5, 6.5]), HDF5Array(shape: [2], values: [0, 1])])
        #expect(Self.diagnostic { try HDF5File.decodeChildOutput(stream("died-mid-values.bin"), label: "a.h5", datasets: ["data"]) }?.message
            == "the process reading it with libhdf5 ended while reading dataset 'data'")
        #expect(Self.diagnostic { try HDF5File.decodeChildOutput(stream("no-label.bin"), label: "a.h5", datasets: ["data", "label"]) }?.message
            == "the file has no dataset 'label'")
        // A report claiming 33 axes (or -1) must not index past the 32 extents it carries.
        var bad = try stream("two-datasets.bin")
        for rank: Int32 in [33, -1] {
            withUnsafeBytes(of: rank.littleEndian) { bad.replaceSubrange(8..<12, with: $0) }
            #expect(Self.diagnostic { try HDF5File.decodeChildOutput(bad, label: "a.h5", datasets: ["data"]) }?.message
                == "the file is damaged: dataset 'data' has \(rank) axes")
        }
    }

    @Test("reading leaves no libhdf5 object open, no child process behind and no pipe open, damaged files included")
    func nothingLeaks() throws {
        let good = try Self.writeGoodFile()
        defer { try? FileManager.default.removeItem(atPath: good) }
        let damaged = Self.crashInputs + ["244-byte-float-over-4-byte-fill-value", "compact-dataset-storing-0-of-8-bytes",
                                          "libhdf5-leaks-object-header"].map(HDF5LimitsTests.regression)
        let pipesBefore = Self.ownPipes()
        for _ in 0..<5 {
            for path in damaged + [good] { _ = try? HDF5File.read(path: path, datasets: ["data", "label"]) }
        }
        #expect(HDF5File.openObjectCount == 0)
        #expect(Self.zombieChildren() == 0)
        // Other tests may open pipes meanwhile; a leak here would be one per read, 5 × 7 more.
        #expect(Self.ownPipes() < pipesBefore + 5 * (damaged.count + 1))
    }

    /// This process's forked children (they carry its command name) that exited and were never
    /// waited for; children other tests start through `Process` have other names.
    static func zombieChildren() -> Int {
        func parse(_ stat: String) -> (name: Substring, fields: [Substring])? {
            guard let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return nil }
            return (stat[stat.index(after: open)..<close], stat[stat.index(after: close)...].split(separator: " "))
        }
        guard let me = (try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8)).flatMap(parse) else { return -1 }
        let pid = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { entry in
            guard Int32(entry) != nil, let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let (name, fields) = parse(stat) else { return false }
            return fields.count > 2 && fields[0] == "Z" && Int32(fields[1]) == pid && name == me.name
        }.count
    }

    /// How many pipes this process has open.
    static func ownPipes() -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)"))?.hasPrefix("pipe:") == true }.count
    }
}
