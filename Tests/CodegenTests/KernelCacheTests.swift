import CaffeFormat
@testable import Codegen
import Foundation
import Graph
import NumPy
import Runtime
import Testing

/// A fresh, empty kernel cache directory under the system's temporary directory, removed by `remove`.
struct TemporaryCacheDirectory {
    let url: URL

    init(_ label: String = #function) throws {
        let name = "swiftjit-kernels-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        url = FileManager.default.temporaryDirectory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    var disk: KernelDiskCache { KernelDiskCache(directory: url) }

    /// The entry files written so far.
    func entries() throws -> [URL] {
        let folder = disk.entries
        guard FileManager.default.fileExists(atPath: folder.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "kernel" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// CIFAR-10 quick (convolutions, max and average pooling, ReLU, InnerProduct, softmax) from the
/// goldens: a net with a handful of distinct kernels, compiled and run.
func compileCifar(_ cache: KernelCache) throws -> (net: CompiledNet, outputs: [String: NDArray]) {
    let golden = try GoldenCase("nets", "cifar10_quick")
    let net = try Compiler(threads: 2, cache: cache).compile(graph: golden.graph(), parameters: golden.parameters())
    return (net, try net.run(inputs: golden.inputs()))
}

@Suite("kernel cache on disk")
struct KernelCacheTests {
    @Test("a second compilation in a fresh process-level cache links every kernel from disk and computes the same outputs")
    func warmCompile() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let (cold, coldOutputs) = try compileCifar(KernelCache(disk: folder.disk))
        #expect(cold.kernels.compiled > 3)
        #expect(cold.kernels.loaded == 0 && cold.kernels.rejected == 0)
        #expect(try folder.entries().count == cold.kernels.compiled)

        let (warm, warmOutputs) = try compileCifar(KernelCache(disk: folder.disk))
        #expect(warm.kernels.compiled == 0)
        #expect(warm.kernels.loaded == cold.kernels.compiled)
        #expect(warm.kernels.kernels == cold.kernels.kernels)
        #expect(warm.kernels.warnings.isEmpty)
        #expect(warmOutputs.keys.sorted() == coldOutputs.keys.sorted())
        for (name, array) in coldOutputs {
            #expect(warmOutputs[name]!.shape == array.shape)
            #expect(warmOutputs[name]!.data.elementsEqual(array.data) { $0.bitPattern == $1.bitPattern }, "\(name) differs")
        }
    }

    @Test("a truncated or damaged entry is rejected, compiled again and rewritten")
    func corruptEntries() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let (cold, coldOutputs) = try compileCifar(KernelCache(disk: folder.disk))
        let entries = try folder.entries()
        #expect(entries.count >= 3)

        // Truncate one entry, flip one byte of another's object code, empty a third.
        let truncated = try Data(contentsOf: entries[0])
        try truncated.prefix(truncated.count / 2).write(to: entries[0])
        var damaged = try Data(contentsOf: entries[1])
        damaged[damaged.count - 10] ^= 0x5a
        try damaged.write(to: entries[1])
        try Data().write(to: entries[2])

        let (again, outputs) = try compileCifar(KernelCache(disk: folder.disk))
        #expect(again.kernels.rejected == 3)
        #expect(again.kernels.compiled == 3)
        #expect(again.kernels.loaded == cold.kernels.compiled - 3)
        #expect(again.kernels.warnings.count == 3)
        #expect(again.kernels.warnings.contains { $0.contains("checksum") })
        #expect(again.kernels.warnings.contains { $0.contains("truncated") })
        for (name, array) in coldOutputs {
            #expect(outputs[name]!.data.elementsEqual(array.data) { $0.bitPattern == $1.bitPattern }, "\(name) differs")
        }

        // The rejected entries were rewritten whole: a third compilation loads everything.
        let (third, _) = try compileCifar(KernelCache(disk: folder.disk))
        #expect(third.kernels.compiled == 0 && third.kernels.rejected == 0)
        #expect(third.kernels.loaded == cold.kernels.compiled)
    }

    @Test("an entry whose checksum holds but whose object code does not link is discarded and compiled again")
    func unlinkableEntry() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let (cold, coldOutputs) = try compileCifar(KernelCache(disk: folder.disk))
        // Rewrite one entry around bytes that are not an object file, with a matching checksum.
        let entry = try folder.entries()[0]
        let bytes = [UInt8](try Data(contentsOf: entry))
        let key = SHA256.Digest(bytes: Array(bytes[12..<44]))
        let symbolLength = Int(bytes[44]) | Int(bytes[45]) << 8
        let symbol = String(decoding: bytes[48..<48 + symbolLength], as: UTF8.self)
        try Data(KernelDiskCache.encode(key: key, symbol: symbol, object: Array(repeating: 0x90, count: 512))).write(to: entry)
        guard case .hit = folder.disk.load(key: key, symbol: symbol) else {
            Issue.record("the forged entry should pass the checksum")
            return
        }

        let (again, outputs) = try compileCifar(KernelCache(disk: folder.disk))
        #expect(again.kernels.rejected >= 1)
        #expect(again.kernels.compiled >= 1)
        #expect(again.kernels.kernels == cold.kernels.kernels)
        #expect(again.kernels.warnings.contains { $0.contains("linking") })
        for (name, array) in coldOutputs {
            #expect(outputs[name]!.data.elementsEqual(array.data) { $0.bitPattern == $1.bitPattern }, "\(name) differs")
        }
    }

    @Test("entries made by another LLVM version or for other CPU features are not used")
    func identityMisses() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let (cold, coldOutputs) = try compileCifar(KernelCache(disk: folder.disk))

        let otherLLVM = try KernelJIT(llvmVersion: "99.0.0")
        let (upgraded, upgradedOutputs) = try compileCifar(KernelCache(jit: otherLLVM, disk: folder.disk))
        #expect(upgraded.kernels.loaded == 0)
        #expect(upgraded.kernels.compiled == cold.kernels.compiled)
        for (name, array) in coldOutputs {
            #expect(upgradedOutputs[name]!.data.elementsEqual(array.data) { $0.bitPattern == $1.bitPattern }, "\(name) differs")
        }

        // The host's features without AVX-512: code that still runs here, but is not the same code.
        let host = try KernelJIT()
        let narrower = host.cpuFeatures.split(separator: ",").map { $0.hasPrefix("+avx512") ? "-" + $0.dropFirst() : String($0) }.joined(separator: ",")
        // (Disabling a feature twice changes the key even on a host without AVX-512.)
        let otherCPU = try KernelJIT(llvmVersion: host.identity.llvmVersion, cpuFeatures: narrower + ",-avx512vp2intersect")
        #expect(otherCPU.identity != host.identity)
        let (narrow, narrowOutputs) = try compileCifar(KernelCache(jit: otherCPU, disk: folder.disk))
        // Every kernel compiled, none loaded: without AVX-512 the compiler chooses other kernels
        // (the AVX2 panel GEMM packs some products), so the count may differ from the host's.
        #expect(narrow.kernels.loaded == 0 && narrow.kernels.reused == 0)
        #expect(narrow.kernels.compiled == narrow.kernels.kernels && narrow.kernels.compiled > 0)
        for (name, array) in coldOutputs {
            let other = narrowOutputs[name]!.data
            let scale = array.data.map(abs).max() ?? 1
            #expect(zip(other, array.data).allSatisfy { abs($0 - $1) <= 1e-5 * max(scale, 1) }, "\(name) differs")
        }

        // Each identity's entries sit side by side; the original still loads everything.
        #expect(try folder.entries().count == 2 * cold.kernels.compiled + narrow.kernels.compiled)
        let (warm, _) = try compileCifar(KernelCache(disk: folder.disk))
        #expect(warm.kernels.loaded == cold.kernels.compiled && warm.kernels.compiled == 0)
    }

    @Test("a cache directory that cannot be written costs a warning, not the compilation")
    func unwritableDirectory() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        // A regular file where the cache wants a directory.
        let blocker = folder.url.appendingPathComponent("not-a-directory")
        try Data("x".utf8).write(to: blocker)
        let (net, _) = try compileCifar(KernelCache(disk: KernelDiskCache(directory: blocker)))
        #expect(net.kernels.compiled > 0)
        #expect(net.kernels.warnings.count == 1)
        #expect(net.kernels.warnings.first?.contains("cannot write") == true)
    }

    @Test("the standard directory is $SWIFTJIT_CACHE_DIR, else $XDG_CACHE_HOME/swiftjit, else ~/.cache/swiftjit")
    func standardDirectory() {
        #expect(KernelDiskCache.standardDirectory(environment: ["SWIFTJIT_CACHE_DIR": "/a", "XDG_CACHE_HOME": "/b", "HOME": "/c"])?.path == "/a")
        #expect(KernelDiskCache.standardDirectory(environment: ["XDG_CACHE_HOME": "/b", "HOME": "/c"])?.path == "/b/swiftjit")
        #expect(KernelDiskCache.standardDirectory(environment: ["XDG_CACHE_HOME": "relative", "HOME": "/c"])?.path == "/c/.cache/swiftjit")
        #expect(KernelDiskCache.standardDirectory(environment: ["SWIFTJIT_CACHE_DIR": "", "HOME": "/c"])?.path == "/c/.cache/swiftjit")
        #expect(KernelDiskCache.standardDirectory(environment: [:]) == nil)
    }

    @Test("threads compiling nets on one cache at once define each kernel once")
    func concurrentCompilations() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let cache = try KernelCache(disk: folder.disk)
        let golden = try GoldenCase("nets", "cifar10_quick")
        let (graph, parameters, inputs) = (try golden.graph(), try golden.parameters(), try golden.inputs())
        let results = Locked<[Int: Result<[Float], Error>]>([:])
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            let result = Result {
                let net = try Compiler(threads: 1, cache: cache).compile(graph: graph, parameters: parameters)
                return try net.run(inputs: inputs)["prob"]!.data
            }
            results.update { $0[index] = result }
        }
        let outputs = try results.value.values.map { try $0.get() }
        #expect(outputs.count == 4)
        #expect(outputs.allSatisfy { $0 == outputs[0] })
        // Every kernel was compiled by one of the threads, once, and written once.
        #expect(cache.loadCount == 0)
        #expect(cache.compileCount == (try folder.entries()).count)
    }

    @Test("SHA-256 matches the FIPS 180-4 examples, whatever the update sizes")
    func sha256() {
        #expect(SHA256.hash([UInt8]()).hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hash(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let twoBlocks = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hash(twoBlocks).hex == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var pieces = SHA256()
        for chunk in stride(from: 0, to: twoBlocks.count, by: 7) { pieces.update(twoBlocks[chunk..<min(chunk + 7, twoBlocks.count)]) }
        #expect(pieces.finalize() == SHA256.hash(twoBlocks))
        let thousand = [UInt8](repeating: 0x61, count: 1000)
        var hash = SHA256()
        for _ in 0..<1000 { hash.update(thousand) }
        #expect(hash.finalize().hex == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}

/// The kernel cache's key: a signature must spell out everything its code depends on, and code is
/// cached on disk per symbol.
@Suite("kernel cache keys")
struct KernelCacheKeyTests {
    /// A kernel writing `value` into its operand, under `signature`.
    static func store(_ value: Float, in batch: KernelBatch, as signature: String) throws -> Kernel {
        try batch.kernel(signature, operands: 1) { b in
            let y = b.operand(0)
            b.forEachTask { i in y[i] = b.constant(value) }
        }
    }

    @Test("a signature that names two different kernels is caught when signatures are verified")
    func collisionCaught() throws {
        let cache = try KernelCache()
        cache.verifiesSignatures = true
        let batch = KernelBatch(cache: cache)
        _ = try KernelCacheKeyTests.store(1, in: batch, as: "store.constant n4")
        // The same signature and the same code: a hit.
        _ = try KernelCacheKeyTests.store(1, in: batch, as: "store.constant n4")
        // The same signature with another captured constant: refused, before and after compiling.
        #expect(throws: CodegenError.self) { try KernelCacheKeyTests.store(2, in: batch, as: "store.constant n4") }
        try batch.compile()
        let later = KernelBatch(cache: cache)
        #expect(throws: CodegenError.self) { try KernelCacheKeyTests.store(3, in: later, as: "store.constant n4") }
        _ = try KernelCacheKeyTests.store(1, in: later, as: "store.constant n4")
        // Without verification the cache trusts the signature (the reason the tests verify).
        cache.verifiesSignatures = false
        _ = try KernelCacheKeyTests.store(3, in: KernelBatch(cache: cache), as: "store.constant n4")
    }

    @Test("every golden layer and net compiles twice through one cache that verifies every signature it has seen")
    func goldenSignaturesAreKeys() throws {
        let cache = try KernelCache()
        cache.verifiesSignatures = true
        let compiler = try Compiler(threads: 2, cache: cache)
        let cases = try GoldenLayerTests.cases.map { try GoldenCase("layers", $0) }
            + ["lenet_deploy", "cifar10_quick", "conv3d_5d_pool", "cms_rcnn_head"].map { try GoldenCase("nets", $0) }
        for round in 0..<2 {
            for golden in cases {
                let net = try compiler.compile(graph: golden.graph(), parameters: golden.parameters())
                if round == 1 { #expect(net.kernels.compiled == 0, "\(golden.name) compiled a kernel the first round did not") }
            }
        }
        #expect(cache.compileCount > 50)
    }

    @Test("two kernel families that generate the same code keep one disk entry each and both load")
    func familiesShareCode() throws {
        let folder = try TemporaryCacheDirectory()
        defer { folder.remove() }
        let cold = KernelBatch(cache: try KernelCache(disk: folder.disk))
        _ = try KernelCacheKeyTests.store(5, in: cold, as: "first.family n8")
        _ = try KernelCacheKeyTests.store(5, in: cold, as: "second.family n8")
        let coldStatistics = try cold.compile()
        #expect(coldStatistics.compiled == 2)
        #expect(try folder.entries().count == 2)

        let warm = KernelBatch(cache: try KernelCache(disk: folder.disk))
        _ = try KernelCacheKeyTests.store(5, in: warm, as: "first.family n8")
        _ = try KernelCacheKeyTests.store(5, in: warm, as: "second.family n8")
        let statistics = try warm.compile()
        #expect(statistics.loaded == 2)
        #expect(statistics.compiled == 0 && statistics.rejected == 0)
        #expect(statistics.warnings.isEmpty)
    }
}
