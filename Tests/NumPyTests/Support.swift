import Foundation
import Testing
@testable import NumPy

/// A test precondition that was not met (missing tool, missing fixture); thrown so the test fails
/// with a readable message instead of being skipped.
struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Fixtures {
    /// The package root (…/main), derived from this file's path: Tests/NumPyTests/Support.swift.
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `../shared/golden` relative to the package root.
    static let golden: URL = packageRoot.appendingPathComponent("../shared/golden").standardizedFileURL

    /// `../shared/golden/layers/<case>`, or a failure naming the missing folder.
    static func goldenLayerCase(_ name: String) throws -> URL {
        let dir = golden.appendingPathComponent("layers").appendingPathComponent(name)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw FixtureError("Caffe golden case folder \(dir.path) is missing — expected the shared golden vectors at ../shared/golden relative to the package root (\(packageRoot.path))")
        }
        return dir
    }

    /// Runs `body` with a fresh temporary folder that is deleted afterwards.
    static func withTempDir<T>(_ body: (URL) throws -> T) throws -> T {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("NumPyTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }

    /// Runs a Python script with NumPy through `/usr/bin/env python3 -c`, returning its combined
    /// stdout/stderr. Missing python3 or numpy, or a failing script, throw a `FixtureError`
    /// explaining what is needed — these tests must fail, not skip, without a reference NumPy.
    static func python(_ script: String, _ args: [String]) throws -> String {
        let prelude = """
            import sys
            try:
                import numpy as np
            except Exception as e:
                print("NUMPY_MISSING: %r" % (e,))
                sys.exit(3)

            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", prelude + script] + args
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do {
            try process.run()
        } catch {
            throw FixtureError("cannot launch '/usr/bin/env python3' (\(error)) — these tests generate reference files with real NumPy; install python3 and numpy")
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let status = process.terminationStatus
        if status == 127 {
            throw FixtureError("python3 was not found on PATH — these tests generate reference files with real NumPy; install python3 and numpy. Output: \(output)")
        }
        if output.contains("NUMPY_MISSING") {
            throw FixtureError("python3 runs but `import numpy` fails — install numpy for python3. Output: \(output)")
        }
        guard status == 0 else {
            throw FixtureError("the NumPy reference script exited with status \(status):\n\(output)")
        }
        return output
    }
}

/// A small deterministic generator (SplitMix64) so fuzz runs are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Builds a `.npy` image by hand: magic, version, header-length field, `header` verbatim, then
/// `payload`. No padding is added, so tests control the exact header text.
func makeNPY(header: String, payload: [UInt8], version: (UInt8, UInt8) = (1, 0)) -> [UInt8] {
    var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version.0, version.1]
    let h = Array(header.utf8)
    if version.0 == 1 {
        out.appendLE(UInt16(h.count))
    } else {
        out.appendLE(UInt32(h.count))
    }
    return out + h + payload
}

/// Little-endian bytes of float32 values.
func le32(_ values: [Float]) -> [UInt8] {
    var out: [UInt8] = []
    for v in values { out.appendLE(v.bitPattern) }
    return out
}

/// Big-endian bytes of float32 values.
func be32(_ values: [Float]) -> [UInt8] {
    values.flatMap { v -> [UInt8] in
        let b = v.bitPattern
        return [UInt8(b >> 24), UInt8(truncatingIfNeeded: b >> 16), UInt8(truncatingIfNeeded: b >> 8), UInt8(truncatingIfNeeded: b)]
    }
}

/// An archive image with the given raw members, built with the module's own zip writer.
func makeZip(_ members: [(String, [UInt8])], deflate: Bool = false) throws -> [UInt8] {
    var w = ZipCodec.Writer()
    for (name, bytes) in members {
        if deflate {
            try w.addDeflated(name: name, contents: bytes)
        } else {
            try w.addStored(name: name) { $0 += bytes }
        }
    }
    return try w.finish()
}

/// Whether two float arrays are bit-for-bit identical (so NaNs compare equal to themselves).
func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}

/// The array `arange(n) * scale + offset` with the given shape.
func ramp(_ shape: [Int], scale: Float = 0.5, offset: Float = -3) -> NDArray {
    let n = shape.reduce(1, *)
    return NDArray(shape: shape, data: (0 ..< n).map { Float($0) * scale + offset })
}
