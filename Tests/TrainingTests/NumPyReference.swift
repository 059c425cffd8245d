import CaffeFormat
import Foundation
import NumPy

/// Runs one of `Tests/references/*.py` (a float64 NumPy port of a layer's C++) on arrays written
/// to an .npz and a JSON config, and decodes the JSON it prints: what the loss tests compare with.
enum NumPyReference {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func run<Result: Decodable>(_ script: String, arrays: [(String, NDArray)], config json: String) throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-reference-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let archive = directory.appendingPathComponent("inputs.npz"), config = directory.appendingPathComponent("config.json")
        try NumPyFile.write(archive: arrays, to: archive.path)
        try json.write(to: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", packageRoot.appendingPathComponent("Tests/references/\(script)").path, archive.path, config.path]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let problem = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Diagnostic("the NumPy reference failed: " + String(decoding: problem, as: UTF8.self), hint: "python3 with numpy is needed (tools/install-deps.sh)")
        }
        return try JSONDecoder().decode(Result.self, from: data)
    }
}
