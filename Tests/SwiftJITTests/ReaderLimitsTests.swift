import Foundation
import Testing
import SwiftJIT

/// Files that declare sizes no memory holds — or that no Int holds — fail with the sizes in the
/// message before anything that large is allocated. Inputs the fuzz harnesses (Tests/Fuzz) found
/// crashing a reader are pinned here too.
@Suite("readers refuse impossible sizes")
struct ReaderLimitsTests {
    /// A caffemodel whose one blob declares `dims` but stores `values`.
    static func caffemodel(dims: [Int64], values: [Float]) -> Caffe_NetParameter {
        var blob = Caffe_BlobProto()
        blob.shape.dim = dims
        blob.data = values
        var layer = Caffe_LayerParameter()
        layer.name = "ip1"
        layer.type = "InnerProduct"
        layer.blobs = [blob]
        var net = Caffe_NetParameter()
        net.layer = [layer]
        return net
    }

    @Test("a caffemodel blob declaring 2^40 × 2^40 values (an Int overflow) is an error naming the extents")
    func overflowingBlob() throws {
        let net = Self.caffemodel(dims: [1 << 40, 1 << 40], values: [1])
        do {
            _ = try CaffeParameters.arrays(from: net)
            Issue.record("expected an error")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.message == "blob 0 declares 1099511627776×1099511627776 = an impossible number of values but stores 1")
            #expect(diagnostic.layer == "ip1")
        }
        let negative = Self.caffemodel(dims: [-2, -3], values: [1, 2, 3, 4, 5, 6])
        #expect(throws: Diagnostic.self) { try CaffeParameters.arrays(from: negative) }
        let huge = Self.caffemodel(dims: [1 << 20, 1 << 20, 1 << 10], values: [1])
        do { _ = try CaffeParameters.arrays(from: huge) } catch let diagnostic as Diagnostic {
            #expect(diagnostic.message == "blob 0 declares 1048576×1048576×1024 = 1125899906842624 values but stores 1")
        }
    }

    @Test("a mean .binaryproto whose extents overflow, or disagree with its data, is an error naming them")
    func overflowingMean() throws {
        var blob = Caffe_BlobProto()
        blob.shape.dim = [1, 1 << 31, 1 << 31, 1 << 31]
        blob.data = [1, 2]
        do {
            _ = try DataTransformer.mean(fromBinaryproto: try blob.serializedData(), file: "mean.binaryproto")
            Issue.record("expected an error")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.message == "the mean file's blob is 2147483648×2147483648×2147483648 but holds 2 values")
        }
        blob.shape.dim = [1, 3, 2, 2]
        blob.data = (0..<12).map(Float.init)
        let mean = try DataTransformer.mean(fromBinaryproto: try blob.serializedData(), file: "mean.binaryproto")
        #expect(mean == .perPixel(channels: 3, height: 2, width: 2, values: (0..<12).map(Float.init)))
    }
}

/// Every fuzzing seed and every input a fuzz run found crashing (Tests/Fuzz/corpus and
/// Tests/Fuzz/regressions) replayed through its harness in the plain build's swiftjit-fuzz:
/// each reader must return or throw, never trap.
@Suite("fuzzing seeds and regressions replay cleanly")
struct FuzzReplayTests {
    static let fuzz = CompileCommandTests.root.appendingPathComponent("Tests/Fuzz")
    static let harnesses = ["net", "solver", "caffemodel", "solverstate", "binaryproto", "npy", "npz", "datum", "config", "request"]

    @Test("each harness replays its seeds and regressions", arguments: harnesses)
    func replay(harness: String) throws {
        let binary = try CompileCommandTests.binary().deletingLastPathComponent().appendingPathComponent("swiftjit-fuzz")
        var files: [String] = []
        for folder in ["corpus", "regressions"] {
            let url = Self.fuzz.appendingPathComponent(folder).appendingPathComponent(harness)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
            files += names.sorted().map { url.appendingPathComponent($0).path }
        }
        #expect(files.count >= 2, "no seeds for \(harness)")
        let process = Process()
        process.executableURL = binary
        process.arguments = files
        process.environment = ProcessInfo.processInfo.environment.merging(["SWIFTJIT_FUZZ_HARNESS": harness]) { $1 }
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0)
        #expect(text.contains("replayed \(files.count) inputs through \(harness)"))
    }
}

/// Crashes and hangs the fuzz harnesses found, each pinned by name.
@Suite("fuzzing finds, fixed")
struct FuzzFindingsTests {
    static let regressions = FuzzReplayTests.fuzz.appendingPathComponent("regressions")

    @Test("a layer listing the same top twice is an error, not an index out of range in GraphBuilder (fuzz: net)")
    func duplicateTop() throws {
        let text = try String(contentsOf: Self.regressions.appendingPathComponent("net/duplicate-top-in-one-layer.prototxt"), encoding: .utf8)
        let definition = try CaffeFiles.parseNet(text: text)
        do {
            _ = try GraphBuilder(phase: .test, insertsSplits: true, enablesMissingStages: true).build(definition)
            Issue.record("expected an error")
        } catch let diagnostic as Diagnostic {
            #expect(diagnostic.message.contains("the layer lists top 'input_sentence' twice"), "\(diagnostic)")
        }
    }

}
