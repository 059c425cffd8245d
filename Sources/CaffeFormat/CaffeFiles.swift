import Foundation
import SwiftProtobuf

/// A net definition read from a `.prototxt`, upgraded to today's format, with where each layer was written.
///
/// `layerLocations[i]` is the position of `net.layer[i]` in the source (its `layer {` or, for old
/// files, its `layers {`), so errors found later — a bottom nobody produces, a shape conflict — can
/// still point into the file. `upgradeNotes` says what the V0/V1/input upgrade changed.
public struct NetDefinition: Sendable {
    public var net: Caffe_NetParameter
    public var file: String
    public var layerLocations: [SourcePosition?]
    public var upgradeNotes: [String]

    public init(net: Caffe_NetParameter, file: String, layerLocations: [SourcePosition?] = [], upgradeNotes: [String] = []) {
        self.net = net
        self.file = file
        self.layerLocations = layerLocations
        self.upgradeNotes = upgradeNotes
    }

    /// The source position of the layer named `name`, if it came from a text file.
    public func location(ofLayer name: String) -> SourcePosition? {
        guard let index = net.layer.firstIndex(where: { $0.name == name }), index < layerLocations.count else { return nil }
        return layerLocations[index]
    }
}

/// Reading and writing Caffe's files: prototxt nets and solvers, `.caffemodel` weights,
/// `.binaryproto` mean blobs and `.solverstate` snapshots.
///
/// Every reader upgrades legacy content the way Caffe does on load (V0/V1 layers, `input_dim`,
/// `solver_type`) and reports problems as `Diagnostic`s naming the file (and line:column for text).
/// Writers are atomic: they write a temporary file beside the target and rename it into place, so a
/// crash never leaves a half-written snapshot.
public enum CaffeFiles {
    // MARK: Text

    /// Parses prototxt text as the schema message `typeName` and decodes it into `M`.
    public static func decodeText<M: SwiftProtobuf.Message>(_ type: M.Type, schemaName typeName: String,
                                                             text: String, file: String) throws -> (M, PrototxtMessage) {
        var parser = PrototxtParser(text: text, file: file)
        let tree = try parser.parseDocument()
        let bytes = try PrototxtEncoder().encode(tree, as: typeName)
        do {
            return (try M(serializedBytes: bytes), tree)
        } catch {
            throw Diagnostic("internal: the checked prototxt did not decode as \(typeName) (\(error))", file: file)
        }
    }

    /// Reads a net from prototxt text and upgrades it to the current `layer {}` format.
    public static func parseNet(text: String, file: String = "<text>") throws -> NetDefinition {
        let (net, tree) = try decodeText(Caffe_NetParameter.self, schemaName: "caffe.NetParameter", text: text, file: file)
        let layerFields = tree.fields.filter { $0.name == "layer" }.map(\.location)
        let legacyFields = tree.fields.filter { $0.name == "layers" }.map(\.location)
        var definition = NetDefinition(net: net, file: file, layerLocations: layerFields)
        var upgraded = net
        let notes = try NetUpgrader.upgrade(&upgraded, file: file)
        if !notes.isEmpty {
            // Upgraded layers come from `layers {}` (V0/V1) and input fields, in file order.
            let synthesized = upgraded.layer.count - layerFields.count - legacyFields.count
            let inputs = [SourcePosition?](repeating: nil, count: max(0, synthesized))
            definition.layerLocations = inputs + (legacyFields.isEmpty ? layerFields : legacyFields).map { Optional($0) }
        }
        if definition.layerLocations.count != upgraded.layer.count {
            definition.layerLocations = upgraded.layer.indices.map { $0 < layerFields.count ? layerFields[$0] : nil }
        }
        definition.net = upgraded
        definition.upgradeNotes = notes
        return definition
    }

    /// Reads and upgrades a net from a `.prototxt` file.
    public static func loadNet(path: String) throws -> NetDefinition {
        try parseNet(text: readText(path), file: path)
    }

    /// Reads a solver from prototxt text, upgrading `solver_type` enums to the `type` string.
    public static func parseSolver(text: String, file: String = "<text>") throws -> Caffe_SolverParameter {
        var (solver, _) = try decodeText(Caffe_SolverParameter.self, schemaName: "caffe.SolverParameter", text: text, file: file)
        try SolverUpgrader.upgrade(&solver, file: file)
        return solver
    }

    public static func loadSolver(path: String) throws -> Caffe_SolverParameter {
        try parseSolver(text: readText(path), file: path)
    }

    /// Renders a message as prototxt, the format Caffe's own writer uses.
    public static func prototxt(_ message: some SwiftProtobuf.Message) -> String {
        message.textFormatString()
    }

    // MARK: Binary

    /// Reads a `.caffemodel` (V2 `layer` or V1 `layers`) and upgrades it to V2.
    public static func loadWeights(path: String) throws -> Caffe_NetParameter {
        try parseWeights(try readData(path), file: path)
    }

    /// Decodes `.caffemodel` bytes already in memory (`file` names them in errors) and upgrades them to V2.
    public static func parseWeights(_ data: Data, file: String = "<weights>") throws -> Caffe_NetParameter {
        var net: Caffe_NetParameter = try decodeBinary(data, file: file, what: "a .caffemodel (binary NetParameter)")
        _ = try NetUpgrader.upgrade(&net, file: file)
        return net
    }

    /// Reads a `.binaryproto` blob, such as an ImageNet mean file.
    public static func loadBlob(path: String) throws -> Caffe_BlobProto {
        try decodeBinary(path: path, what: "a .binaryproto (binary BlobProto)")
    }

    /// Reads a `.solverstate` snapshot.
    public static func loadSolverState(path: String) throws -> Caffe_SolverState {
        try decodeBinary(path: path, what: "a .solverstate (binary SolverState)")
    }

    /// Decodes a binary protobuf file, turning truncation and corruption into a `Diagnostic`.
    public static func decodeBinary<M: SwiftProtobuf.Message>(path: String, what: String) throws -> M {
        let data = try readData(path)
        return try decodeBinary(data, file: path, what: what)
    }

    public static func decodeBinary<M: SwiftProtobuf.Message>(_ data: Data, file: String, what: String) throws -> M {
        if data.isEmpty {
            throw Diagnostic("the file is empty; expected \(what)", file: file, hint: "was the download or the snapshot interrupted?")
        }
        do {
            return try M(serializedBytes: data)
        } catch {
            let reason: String
            switch error as? BinaryDecodingError {
            case .truncated?: reason = "it ends in the middle of a field (truncated)"
            case .malformedProtobuf?: reason = "its bytes are not valid protobuf (corrupt)"
            case .messageDepthLimit?: reason = "it nests messages deeper than any Caffe file (corrupt)"
            case .invalidUTF8?: reason = "a string field holds invalid UTF-8 (corrupt)"
            default: reason = "\(error)"
            }
            let looksLikeText = data.prefix(256).allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || ($0 >= 32 && $0 < 127) }
            throw Diagnostic("cannot read \(what): \(reason) after reading \(data.count) bytes", file: file,
                             hint: looksLikeText ? "this looks like a text file; pass the prototxt as the net and the binary file as weights"
                                                 : "re-download or re-export the file; compare its size with the original")
        }
    }

    /// Writes a message in binary protobuf format, atomically.
    public static func write(_ message: some SwiftProtobuf.Message, to path: String) throws {
        let bytes: Data
        do { bytes = try message.serializedData() } catch {
            throw Diagnostic("cannot serialize: \(error)", file: path)
        }
        try writeAtomically(bytes, to: path)
    }

    /// Writes text atomically.
    public static func write(text: String, to path: String) throws {
        try writeAtomically(Data(text.utf8), to: path)
    }

    /// Writes `data` to a temporary file in the target's folder (`.NAME.tmp-PID-RANDOM`, a name no
    /// reader takes for a snapshot), flushes it to disk (`fsync`), renames it over `path` and
    /// flushes the folder, so `path` is always the old file or the whole new one — after a crash,
    /// a kill -9 or a power cut too. A failed write (a full disk) removes the temporary file and
    /// leaves `path` as it was.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(String(UInt32.random(in: 0 ... .max), radix: 36))").path
        func failure(_ what: String) -> Diagnostic {
            let code = errno
            let reason = String(cString: strerror(code))
            let hint: String
            switch code {
            case ENOSPC, EDQUOT: hint = "the disk is full: free space (the file already there, if any, is unchanged)"
            case EACCES, EPERM, EROFS: hint = "check that the folder is writable"
            case ENOENT, ENOTDIR: hint = "check that the folder \(folder) exists"
            default: hint = "the file already there, if any, is unchanged"
            }
            return Diagnostic("cannot write the file: \(what): \(reason)", file: path, hint: hint)
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("cannot create a temporary file beside it") }
        var written = 0
        let wrote: Bool = data.withUnsafeBytes { buffer in
            while written < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + written, buffer.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += n
            }
            return true
        }
        if !wrote || fsync(fd) != 0 {
            let error = failure(wrote ? "flushing it to disk failed after \(written) bytes" : "writing it failed after \(written) of \(data.count) bytes")
            close(fd)
            unlink(temporary)
            throw error
        }
        if close(fd) != 0 {
            let error = failure("closing it failed")
            unlink(temporary)
            throw error
        }
        if rename(temporary, path) != 0 {
            let error = failure("cannot move the finished file into place")
            unlink(temporary)
            throw error
        }
        let directory = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            _ = fsync(directory)
            close(directory)
        }
    }

    // MARK: Files

    static func readData(_ path: String) throws -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw Diagnostic("no such file", file: path, hint: "check the path (relative paths start from \(FileManager.default.currentDirectoryPath))")
        }
        if isDirectory.boolValue { throw Diagnostic("is a folder, expected a file", file: path) }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            throw Diagnostic("cannot read the file: \(error.localizedDescription)", file: path)
        }
    }

    static func readText(_ path: String) throws -> String {
        let data = try readData(path)
        guard let text = String(data: data, encoding: .utf8) else {
            if data.contains(0) {
                throw Diagnostic("this is a binary file, expected prototxt text", file: path,
                                 hint: "a .caffemodel goes to --weights; the net definition is the .prototxt")
            }
            return String(decoding: data, as: UTF8.self)
        }
        return text
    }
}
