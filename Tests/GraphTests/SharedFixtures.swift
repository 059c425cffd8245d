import Foundation

/// Where the team's shared reference material lives: `../shared` beside the checkout.
/// Tests that need it fail loudly when it is missing, rather than skipping.
enum SharedFixtures {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let shared = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static let golden = shared.appendingPathComponent("golden")
    static let zoo = shared.appendingPathComponent("zoo")

    /// Fails with a clear message when `url` does not exist.
    static func require(_ url: URL) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw MissingFixture(path: url.path)
        }
        return url
    }

    struct MissingFixture: Error, CustomStringConvertible {
        var path: String
        var description: String { "missing \(path): clone the repository next to the team's shared/ folder (../shared)" }
    }

    /// Sub-folders of `url`, sorted.
    static func folders(in url: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: try require(url), includingPropertiesForKeys: [.isDirectoryKey])
            .filter { (try? $0.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true }
            .sorted { $0.path < $1.path }
    }

    /// Every file under `url` whose name ends with one of `suffixes`, sorted.
    static func files(under url: URL, suffixes: [String]) throws -> [URL] {
        guard let enumerator = FileManager.default.enumerator(at: try require(url), includingPropertiesForKeys: nil) else { return [] }
        return enumerator.compactMap { $0 as? URL }.filter { url in suffixes.contains { url.lastPathComponent.hasSuffix($0) } }
            .sorted { $0.path < $1.path }
    }

    static func json(_ url: URL) throws -> [String: Any] {
        let data = try Data(contentsOf: try require(url))
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }
}
