import CaffeFormat
@testable import DataPipeline
import Foundation
import Testing

/// libhdf5 reads in a child process (`HDF5ChildReader`); a child that never answers must cost a
/// diagnostic after the stall timeout, not a reader (or a training run) that waits for ever. A FIFO
/// given as the file is a child that blocks for ever in `open`, as one on a dead network mount
/// would.
@Suite("an HDF5 read whose child never answers is stopped after the stall timeout")
struct HDF5ChildTimeoutTests {
    @Test("a FIFO as the file: the child is killed after 1 s and the read names the file and the stage")
    func fifoIsStopped() throws {
        let folder = try ScratchFolder("h5-timeout")
        defer { folder.remove() }
        let fifo = folder.file("never-written.h5")
        #expect(mkfifo(fifo, 0o600) == 0)
        let start = Date()
        var message = ""
        do {
            _ = try HDF5ChildReader.read(.file(fifo), label: fifo, datasets: ["data", "label"],
                                         maxElements: HDF5File.maxElements, stallTimeout: 1)
            Issue.record("reading a FIFO nobody writes returned data")
        } catch let diagnostic as Diagnostic {
            message = diagnostic.description
        }
        #expect(Date().timeIntervalSince(start) >= 1)
        #expect(message.contains(fifo))
        #expect(message.contains("the process reading it with libhdf5 sent nothing for 1 s while opening it and was stopped"))
        #expect(message.contains("SWIFTJIT_HDF5_TIMEOUT"))
        // The FIFO is still there and nobody holds it open for reading: the child is gone.
        let writer = open(fifo, O_WRONLY | O_NONBLOCK)
        #expect(writer == -1 && errno == ENXIO)
        if writer >= 0 { close(writer) }
    }

    @Test("a child that answers is not cut short by a short stall timeout, and reading carries on after one was stopped")
    func answeringChildReads() throws {
        let folder = try ScratchFolder("h5-timeout-good")
        defer { folder.remove() }
        let path = folder.file("good.h5")
        try HDF5File.write(path: path, datasets: [("data", HDF5Array(shape: [2, 3], values: [1, 2, 3, 4, 5, 6.5])),
                                                  ("label", HDF5Array(shape: [2], values: [0, 1]))])
        let fifo = folder.file("fifo.h5")
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: Diagnostic.self) {
            try HDF5ChildReader.read(.file(fifo), label: fifo, datasets: ["data"], maxElements: HDF5File.maxElements, stallTimeout: 0.2)
        }
        // An in-memory image always goes through a child.
        let image = try Data(contentsOf: URL(fileURLWithPath: path))
        let arrays = try HDF5ChildReader.read(.image(image), label: path, datasets: ["data", "label"],
                                              maxElements: HDF5File.maxElements, stallTimeout: 1)
        #expect(arrays == [HDF5Array(shape: [2, 3], values: [1, 2, 3, 4, 5, 6.5]), HDF5Array(shape: [2], values: [0, 1])])
    }
}
