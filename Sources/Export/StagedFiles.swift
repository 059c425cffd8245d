import CaffeFormat
import Foundation

/// A set of output files that appear together or not at all.
///
/// Each file is first written in full to a hidden temporary beside its target; only when every one
/// has been written are they renamed into place (a rename within a folder is atomic). If anything
/// fails before that — serializing, a full disk — the temporaries are removed and no target is
/// touched, so an export that throws never leaves a half-written `params.npz`.
///
///     var files = StagedFiles()
///     files.add(npzBytes, at: "params.npz")
///     files.add(jsonBytes, at: "params.json")
///     try files.commit()
public struct StagedFiles: Sendable {
    private var pending: [(path: String, data: Data)] = []

    public init() {}

    /// Queues `data` to be written at `path` on `commit()`.
    public mutating func add(_ data: Data, at path: String) {
        pending.append((path, data))
    }

    /// The paths that `commit()` will write, in order.
    public var paths: [String] { pending.map(\.path) }

    /// Writes every queued file to a temporary, then renames them all into place.
    public func commit() throws {
        var temporaries: [(temporary: String, target: String)] = []
        defer { for (temporary, _) in temporaries { try? FileManager.default.removeItem(atPath: temporary) } }
        for (path, data) in pending {
            let url = URL(fileURLWithPath: path)
            let temporary = url.deletingLastPathComponent()
                .appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)").path
            do {
                try data.write(to: URL(fileURLWithPath: temporary))
            } catch {
                throw Diagnostic("cannot write the file: \(error.localizedDescription)", file: path,
                                 hint: "check that the folder exists and is writable; nothing was written")
            }
            temporaries.append((temporary, path))
        }
        for (index, (temporary, target)) in temporaries.enumerated() where rename(temporary, target) != 0 {
            let reason = String(cString: strerror(errno))
            let placed = temporaries[..<index].map(\.target)
            throw Diagnostic("cannot move the finished file into place: \(reason)", file: target,
                             hint: placed.isEmpty ? "nothing was written" : "already written: \(placed.joined(separator: ", "))")
        }
        temporaries.removeAll()
    }
}
