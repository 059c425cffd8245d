// libFuzzer harnesses for every reader, in one binary: SWIFTJIT_FUZZ_HARNESS picks the reader.
// Built only by tools/fuzz.sh (swift build -c release -Xswiftc -sanitize=fuzzer,address
// -Xswiftc -DSWIFTJIT_FUZZ, in .build/fuzz); a plain build gets a stub that says how to run it.
import CaffeFormat
import DataPipeline
import Foundation
import Graph
import NumPy
import ServeProtocol

/// The readers under fuzzing, each fed raw bytes as a user or a client could send them. Every
/// harness must only ever return or throw; a trap, an ASan report, a leak or a hang is a bug.
enum FuzzHarness: String, CaseIterable {
    case net, solver, caffemodel, solverstate, binaryproto, npy, npz, datum, config, request, hdf5
    /// The in-process half of HDF5 reading: the bytes as what the libhdf5 child sends back.
    case hdf5Pipe = "hdf5-pipe"

    /// The most values the hdf5 harness reads from one dataset (16 MB as float32): the reader's
    /// real limits (INT_MAX values, physical memory) would let an input that declares 2^31 fill
    /// values allocate 8 GB, past libFuzzer's 4 GB RSS limit, instead of exercising the code.
    static let hdf5MaxElements = 1 << 22

    /// LeNet's TEST graph, to bind fuzzed caffemodels against as `compile --weights` does.
    static let lenet: Graph? = {
        let text = """
        name: "LeNet"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 28 dim: 28 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 20 kernel_size: 5 } }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 10 } }
        layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
        """
        return try? GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text))
    }()

    func run(_ data: Data) {
        switch self {
        case .net:
            guard let definition = try? CaffeFiles.parseNet(text: String(decoding: data, as: UTF8.self)) else { return }
            _ = try? GraphBuilder(phase: .test, insertsSplits: true, enablesMissingStages: true).build(definition)
            _ = try? GraphBuilder(phase: .train, insertsSplits: true, enablesMissingStages: true).build(definition)
        case .solver:
            _ = try? CaffeFiles.parseSolver(text: String(decoding: data, as: UTF8.self))
        case .caffemodel:
            guard let net = try? CaffeFiles.parseWeights(data) else { return }
            _ = try? CaffeParameters.arrays(from: net)
            if let graph = Self.lenet { _ = try? WeightBinding.check(graph, weights: net, file: "<fuzz>") }
        case .solverstate:
            let _: Caffe_SolverState? = try? CaffeFiles.decodeBinary(data, file: "<fuzz>", what: "a .solverstate")
        case .binaryproto:
            _ = try? DataTransformer.mean(fromBinaryproto: data, file: "<fuzz>")
        case .npy:
            _ = try? NumPyFile.readArray(from: data)
        case .npz:
            _ = try? NumPyFile.readArchive(from: data)
        case .datum:
            guard let image = try? DatumImage(serialized: data, key: "fuzz") else { return }
            _ = image.floatCHW()
        case .config:
            _ = try? ModelConfiguration.parse(String(decoding: data, as: UTF8.self))
        case .hdf5:
            // The bytes as an HDF5 file, read as HDF5Data reads one of its files: each top's root
            // dataset ("data", "label"), then each alone (one missing must not hide the other).
            for datasets in [["data", "label"], ["label"]] {
                do {
                    _ = try HDF5File.read(image: data, label: "<fuzz>", datasets: datasets, maxElements: Self.hdf5MaxElements)
                } catch {
                    HDF5ChildCounts.record(error)
                }
            }
        case .hdf5Pipe:
            // libhdf5 runs in a child (HDF5ChildReader); whatever it sends, this process must cope.
            _ = try? HDF5File.decodeChildOutput(data, label: "<fuzz>", datasets: ["data", "label"], maxElements: Self.hdf5MaxElements)
        case .request:
            // First byte even: a binary request whose JSON header is the next two bytes' length;
            // odd: a JSON-only body.
            let bytes = [UInt8](data)
            guard let first = bytes.first else { return }
            if first & 1 == 0, bytes.count >= 3 {
                _ = try? InferenceRequest.decode(body: Array(bytes[3...]), headerLength: Int(bytes[1]) | Int(bytes[2]) << 8)
            } else {
                _ = try? InferenceRequest.decode(body: Array(bytes.dropFirst()), headerLength: nil)
            }
        }
    }

    static let selected: FuzzHarness = {
        if ProcessInfo.processInfo.environment["SWIFTJIT_FUZZ_HARNESS"] == FuzzHarness.hdf5.rawValue {
            atexit { HDF5ChildCounts.report() }
        }
        let name = ProcessInfo.processInfo.environment["SWIFTJIT_FUZZ_HARNESS"] ?? ""
        guard let harness = FuzzHarness(rawValue: name) else {
            FileHandle.standardError.write(Data("SWIFTJIT_FUZZ_HARNESS must be one of: \(allCases.map(\.rawValue).joined(separator: " "))\n".utf8))
            exit(2)
        }
        return harness
    }()
}

/// How the hdf5 harness's reads ended: libhdf5 crashing its child is a diagnostic (the file is
/// damaged), not a finding; the counts are printed at exit, as the C driver hdf5-child prints its own.
enum HDF5ChildCounts {
    nonisolated(unsafe) static var reads = 0, crashed = 0, stalled = 0

    static func record(_ error: Error) {
        reads += 1
        let text = "\(error)"
        if text.contains("libhdf5 crashed (") { crashed += 1 }
        if text.contains("sent nothing for") { stalled += 1 }
    }

    static func report() {
        FileHandle.standardError.write(Data("hdf5: \(reads) failed reads, \(crashed) children ended by a signal (libhdf5 crashing; this process carried on), \(stalled) stopped by the stall timeout\n".utf8))
    }
}

#if SWIFTJIT_FUZZ
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = start.map { Data(bytes: $0, count: count) } ?? Data()
    FuzzHarness.selected.run(data)
    return 0
}

/// libFuzzer's driver (`int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*)(const uint8_t *, size_t))`);
/// pointer and integer arguments pass in the same registers under Swift's and C's conventions.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>,
                     _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable with `main` aliased to `<module>_main`; here that is libFuzzer's
/// driver with the harness above (libFuzzer's own `main` is then not linked in).
@_cdecl("swiftjit_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments, fuzzOneInput)
}
#else
/// Without -DSWIFTJIT_FUZZ: replays inputs through a harness (no coverage, no sanitizer), so a
/// plain build still builds, and a crash file can be replayed under the debugger.
@main
struct FuzzReplay {
    static func main() throws {
        let files = CommandLine.arguments.dropFirst()
        if files.isEmpty {
            print("usage: SWIFTJIT_FUZZ_HARNESS=NAME swiftjit-fuzz FILE... (tools/fuzz.sh HARNESS SECONDS builds the libFuzzer binary)")
            return
        }
        let inputs = try files.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        // On another thread, as the test suite and the trainer's feeds read: libhdf5 keeps its
        // error-printing switch per thread, so what it prints at exit from the main thread
        // ("HDF5: infinite loop closing library" after a damaged file) is seen here as there.
        let done = DispatchSemaphore(value: 0)
        Thread {
            for input in inputs { FuzzHarness.selected.run(input) }
            done.signal()
        }.start()
        done.wait()
        print("replayed \(files.count) input\(files.count == 1 ? "" : "s") through \(FuzzHarness.selected.rawValue)")
    }
}
#endif
