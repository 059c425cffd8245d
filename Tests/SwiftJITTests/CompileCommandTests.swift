import Foundation
import Testing
import SwiftJIT

/// `swiftjit compile` and `swiftjit upgrade` as a user runs them: the real binary, its exit code,
/// its table, its JSON, and its one-line errors.
@Suite("the swiftjit command line", .serialized)
struct CompileCommandTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared = root.deletingLastPathComponent().appendingPathComponent("shared")

    /// The swiftjit binary built next to this test bundle.
    static func binary() throws -> URL {
        // The test executable's own folder first: a build with another --scratch-path (the
        // sanitizer builds, tools/sanitize.sh) has its swiftjit there, not in .build/debug.
        let bundle = Bundle.allBundles.map(\.bundleURL).first { $0.pathExtension == "xctest" }
        let executable = Bundle.main.executableURL?.resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = [executable, bundle?.deletingLastPathComponent(), root.appendingPathComponent(".build/debug")].compactMap { $0 }
        for folder in candidates {
            let url = folder.appendingPathComponent("swiftjit")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        throw Missing(what: "the swiftjit binary (build it with `swift build --build-tests`)")
    }

    struct Missing: Error, CustomStringConvertible {
        var what: String
        var description: String { "missing \(what)" }
    }

    /// Runs LLVM 14's `llvm-as` (the LLVM the JIT links) on `text`, writing to /dev/null.
    static func llvmAssemble(_ text: String) throws -> (status: Int32, err: String) {
        let tool = ["/usr/bin/llvm-as-14", "/usr/lib/llvm-14/bin/llvm-as"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let tool else { throw Missing(what: "llvm-as-14 (apt-get install llvm-14; tools/install-deps.sh installs it)") }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-emit-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).ll")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = [file.path, "-o", "/dev/null"]
        let err = Pipe()
        process.standardError = err
        try process.run()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: errData, as: UTF8.self))
    }

    /// Runs the binary with `kernelCache` as its kernel cache directory: by default a fresh one,
    /// removed afterwards, so no test reads or fills the user's cache.
    static func run(_ arguments: [String], kernelCache: URL? = nil) throws -> (status: Int32, out: String, err: String) {
        let cache = kernelCache ?? FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-cli-kernels-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { if kernelCache == nil { try? FileManager.default.removeItem(at: cache) } }
        let process = Process()
        process.executableURL = try binary()
        process.arguments = arguments
        process.currentDirectoryURL = root
        process.environment = ProcessInfo.processInfo.environment.merging(["SWIFTJIT_CACHE_DIR": cache.path]) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    @Test("compile prints one row per layer with tops, parameter shapes and FLOPs, then totals")
    func table() throws {
        let result = try Self.run(["compile", "Examples/lenet/lenet.prototxt"])
        #expect(result.status == 0, "\(result.err)")
        let lines = result.out.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("layer  type") == true)
        #expect(lines.contains { $0.hasPrefix("conv1  Convolution   conv1 64×20×24×24  20×1×5×5, 20") })
        #expect(lines.contains { $0.hasPrefix("ip1    InnerProduct  ip1 64×500         500×800, 500") })
        #expect(lines.contains("9 layers, 431,080 parameters (1.6 MiB), 294.5 MFLOPs per forward pass"))
    }

    @Test("compile --emit llvm prints the schedule, then each kernel's IR once, under the name it is linked by, in one module llvm-as accepts")
    func emitLLVM() throws {
        for run in 0..<2 {  // the second run takes every kernel from the disk cache and must still print its IR
            let cache = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-emit-\(getpid())")
            defer { if run == 1 { try? FileManager.default.removeItem(at: cache) } }
            let result = try Self.run(["compile", "Examples/lenet/lenet.prototxt", "--emit", "llvm"], kernelCache: cache)
            #expect(result.status == 0, "\(result.err)")
            let lines = result.out.split(separator: "\n").map(String.init)
            #expect(result.out.contains("\n; ip1: OpenBLAS sgemm M=64 N=500 K=800\n"))
            let kernels = lines.filter { $0.hasPrefix("; conv1: kernel im2col_") }
            #expect(kernels.count == 1)
            let name = kernels.first?.split(separator: " ")[3].dropLast() ?? ""  // "im2col_…,"
            #expect(!name.isEmpty && result.out.contains("\ndefine void @\(name)(float** %0, i64 %1, i64 %2) #"))
            #expect(!result.out.contains("its IR was not built"))
            // Every kernel once, all in one module: one ModuleID, one definition per kernel header not marked "(above)".
            let defined = lines.filter { $0.contains(": kernel ") && !$0.contains("(above)") }.count
            #expect(defined > 0 && lines.filter { $0.hasPrefix("define ") }.count == defined)
            #expect(lines.filter { $0.hasPrefix("; ModuleID = ") }.count == 1)
            // LLVM's own assembler (the LLVM the JIT links, 14) accepts the whole output.
            let assembled = try Self.llvmAssemble(result.out)
            #expect(assembled.status == 0, "llvm-as rejected the output: \(assembled.err)")
        }
        let refused = try Self.run(["compile", "Examples/lenet/lenet.prototxt", "--emit", "llvm", "--no-jit"])
        #expect(refused.status != 0 && refused.err.contains("--emit llvm"))
    }

    @Test("compile JIT-compiles a TEST net and reports the time and where its kernels came from; a second run takes them from the cache")
    func compileTimeAndKernelCache() throws {
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-cli-kernels-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: cache) }
        func compileLine(_ arguments: [String]) throws -> String {
            let result = try Self.run(["compile", "Examples/lenet/lenet.prototxt"] + arguments, kernelCache: cache)
            #expect(result.status == 0, "\(result.err)")
            return result.out.split(separator: "\n").map(String.init).first { $0.hasPrefix("compile: ") } ?? "(no compile line)\n" + result.out
        }
        let cold = try compileLine([])
        let counts = try #require(cold.firstMatch(of: /\((?:graph → executable; )?(\d+) kernels: (\d+) compiled, (\d+) from the kernel cache/))
        let kernels = Int(counts.1)!
        #expect(kernels > 2)
        #expect(Int(counts.2)! == kernels && Int(counts.3)! == 0, "\(cold)")
        let warm = try compileLine([])
        #expect(warm.contains("\(kernels) kernels: 0 compiled, \(kernels) from the kernel cache"), "\(warm)")
        let off = try compileLine(["--no-kernel-cache"])
        #expect(off.contains("\(kernels) kernels: \(kernels) compiled, 0 from the kernel cache"), "\(off)")

        let json = try Self.run(["compile", "Examples/lenet/lenet.prototxt", "--json"], kernelCache: cache)
        let document = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        let compilation = document?["compilation"] as? [String: Any]
        #expect(compilation?["cached_kernels"] as? Int == kernels)
        #expect(compilation?["compiled_kernels"] as? Int == 0)
        #expect((compilation?["seconds"] as? Double ?? -1) >= 0)

        let skipped = try Self.run(["compile", "Examples/lenet/lenet.prototxt", "--no-jit"], kernelCache: cache)
        #expect(!skipped.out.contains("compile: "))
    }

    @Test("compile --json prints what scripts need, and --input changes shapes")
    func json() throws {
        let result = try Self.run(["compile", "Examples/lenet/lenet.prototxt", "--json", "--input", "data=2,1,28,28"])
        #expect(result.status == 0, "\(result.err)")
        let document = try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any]
        let layers = document?["layers"] as? [[String: Any]] ?? []
        #expect(layers.count == 9)
        let conv1 = layers.first { $0["name"] as? String == "conv1" }
        #expect(conv1?["type"] as? String == "Convolution")
        #expect((conv1?["tops"] as? [[String: Any]])?.first?["shape"] as? [Int] == [2, 20, 24, 24])
        #expect(conv1?["params"] as? [[Int]] == [[20, 1, 5, 5], [20]])
        #expect(conv1?["flops"] as? Int == 2 * 20 * 24 * 24 * 25 * 2)
        let totals = document?["totals"] as? [String: Any]
        #expect(totals?["params"] as? Int == 431_080)
    }

    @Test("compile --weights lists initialized layers; errors go to stderr with exit 1")
    func weightsAndErrors() throws {
        let net = Self.shared.appendingPathComponent("golden/nets/cifar10_quick")
        let ok = try Self.run(["compile", net.appendingPathComponent("net.prototxt").path,
                               "--weights", net.appendingPathComponent("weights.caffemodel").path])
        #expect(ok.status == 0, "\(ok.err)")
        #expect(ok.out.contains("initialized 5 layers (conv1, conv2, conv3, ip1, ip2)"))
        #expect(ok.out.contains("not initialized (filled by their fillers): none"))

        let missing = try Self.run(["compile", "nope.prototxt"])
        #expect(missing.status == 1)
        #expect(missing.err.hasPrefix("error: nope.prototxt: no such file"))

        // py-faster-rcnn's proposal layer is a Python layer SwiftJIT runs natively…
        let rcnn = try Self.run(["compile", Self.shared.appendingPathComponent("zoo/faster_rcnn/VGG16/faster_rcnn_end2end/test.prototxt").path])
        #expect(rcnn.status == 0, "\(rcnn.err)")
        #expect(rcnn.out.contains("Proposal") && rcnn.out.contains("rois 300×5"), "\(rcnn.out)")
        // …any other Python layer is an error naming it.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-python-\(getpid()).prototxt")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
            layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
            layer { name: "mine" type: "Python" bottom: "data" top: "out" python_param { module: "my.layers" layer: "Mine" } }
            """.write(to: file, atomically: true, encoding: .utf8)
        let python = try Self.run(["compile", file.path])
        #expect(python.status == 1)
        #expect(python.err.contains("layer 'mine': layer type 'Python' is not supported"), "\(python.err)")
    }

    @Test("what compile prints for each golden net equals Caffe's blob shapes")
    func goldenNets() throws {
        let nets = Self.shared.appendingPathComponent("golden/nets")
        for name in ["cifar10_quick", "cms_rcnn_head", "conv3d_5d_pool", "label_smoothing", "label_smoothing_no_reshape", "lenet_deploy"] {
            let folder = nets.appendingPathComponent(name)
            let info = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("case.json"))) as? [String: Any]
            let phase = (info?["phase"] as? String) == "TRAIN" ? "train" : "test"
            let result = try Self.run(["compile", folder.appendingPathComponent("net.prototxt").path, "--phase", phase, "--json"])
            #expect(result.status == 0, "\(name): \(result.err)")
            let document = try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any]
            var printed: [String: [Int]] = [:]
            for layer in document?["layers"] as? [[String: Any]] ?? [] {
                for top in layer["tops"] as? [[String: Any]] ?? [] {
                    printed[top["name"] as! String] = top["shape"] as? [Int]
                }
            }
            let outputs = try NumPyFile.readArchive(path: folder.appendingPathComponent("outputs.npz").path)
            #expect(!outputs.keys.isEmpty)
            for key in outputs.keys {
                #expect(printed[key] == outputs[key]!.shape, "\(name): '\(key)' printed \(printed[key] ?? []), Caffe \(outputs[key]!.shape)")
            }
        }
    }

    @Test("upgrade rewrites a V1 net and a legacy solver in today's format")
    func upgrade() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-upgrade-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = folder.appendingPathComponent("caffenet.prototxt").path
        let result = try Self.run(["upgrade", Self.shared.appendingPathComponent("zoo/bvlc_legacy_v1/bvlc_reference_caffenet/deploy.prototxt").path, output])
        #expect(result.status == 0, "\(result.err)")
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(text.contains("layer {") && !text.contains("layers {"))
        #expect(text.contains("type: \"Convolution\""))
        let compiled = try Self.run(["compile", output])
        #expect(compiled.status == 0)
        #expect(compiled.out.contains("prob   Softmax       prob 10×1000"))

        let solver = folder.appendingPathComponent("solver.prototxt").path
        let upgraded = try Self.run(["upgrade", Self.shared.appendingPathComponent("zoo/bvlc_legacy_solver_enum/lenet_solver_adam.prototxt").path, solver])
        #expect(upgraded.status == 0, "\(upgraded.err)")
        let solverText = try String(contentsOfFile: solver, encoding: .utf8)
        #expect(solverText.contains("type: \"Adam\"") && !solverText.contains("solver_type"))
    }
}
