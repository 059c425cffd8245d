import Foundation
import Logging
import SwiftJIT

/// The models the server holds, by name: found in a Triton-style model repository folder (or given
/// one by one), loaded, replaced and unloaded while requests keep flowing.
///
/// Layout: `DIR/NAME/` holds a deploy `.prototxt` and a `.caffemodel`, either directly or in numeric
/// version folders (`DIR/NAME/1/`, the highest one is served), and optionally `DIR/NAME/config.pbtxt`.
///
/// Replacing a model builds the new version completely (weights read, contexts compiled when
/// warming up) before it takes the name; requests already given the old version finish on it, and
/// its batcher ends once they have. No request sees a gap.
public final class ModelRepository: @unchecked Sendable {
    /// A model's state as the repository index reports it.
    public struct Entry: Sendable {
        public var name: String
        public var version: String?
        public var state: String
        public var reason: String
    }

    public let directory: String?
    private let fixed: [String: ModelSource]
    private let compiler: Compiler
    private let metrics: ServeMetricsRegistry
    private let queueCapacity: Int
    private let warmUp: Bool
    private let logger: Logger
    private let lock = NSLock()
    private var models: [String: ServedModel] = [:]
    private var failures: [String: String] = [:]
    /// Loads under way per name (a reload may start while another is still compiling).
    private var loading: [String: Int] = [:]

    public init(directory: String?, models fixed: [ModelSource] = [], compiler: Compiler, metrics: ServeMetricsRegistry,
                queueCapacity: Int, warmUp: Bool, logger: Logger) {
        self.directory = directory
        self.fixed = Dictionary(fixed.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        self.compiler = compiler
        self.metrics = metrics
        self.queueCapacity = queueCapacity
        self.warmUp = warmUp
        self.logger = logger
    }

    /// The model names the repository folder (and the command line) offer, sorted.
    public func availableNames() -> [String] {
        var names = Set(fixed.keys)
        if let directory, let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) {
            for entry in entries where !entry.hasPrefix(".") {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: directory + "/" + entry, isDirectory: &isDirectory), isDirectory.boolValue { names.insert(entry) }
            }
        }
        return names.sorted()
    }

    /// Finds a model's files: the command line's, else `DIR/NAME` (its highest numeric version folder if any).
    public func source(named name: String) throws(ServeError) -> ModelSource {
        if let source = fixed[name] { return source }
        guard let directory, !name.contains("/"), !name.hasPrefix(".") else { throw ServeError(.notFound, "no model '\(name)' in the model repository") }
        let folder = directory + "/" + name
        let manager = FileManager.default
        guard let entries = try? manager.contentsOfDirectory(atPath: folder) else {
            throw ServeError(.notFound, "no model '\(name)' in the model repository \(directory)")
        }
        var version = "1"
        var files = folder
        let versions = entries.compactMap { Int($0) }.filter { v in
            var isDirectory: ObjCBool = false
            return manager.fileExists(atPath: folder + "/\(v)", isDirectory: &isDirectory) && isDirectory.boolValue
        }
        if let latest = versions.max() {
            version = String(latest)
            files = folder + "/\(latest)"
        }
        let contents = ((try? manager.contentsOfDirectory(atPath: files)) ?? []).sorted()
        let prototxts = contents.filter { $0.hasSuffix(".prototxt") && !$0.contains("solver") && !$0.contains("train") }
        let prototxt: String
        switch prototxts.count {
        case 0: throw ServeError(.badRequest, "model '\(name)': no .prototxt in \(files)")
        case 1: prototxt = prototxts[0]
        default:
            guard let deploy = prototxts.first(where: { $0.contains("deploy") }) else {
                throw ServeError(.badRequest, "model '\(name)': several .prototxt files in \(files) (\(prototxts.joined(separator: ", "))); keep one, or name the deploy one *deploy*.prototxt")
            }
            prototxt = deploy
        }
        let weights = contents.filter { $0.hasSuffix(".caffemodel") }
        guard weights.count <= 1 else {
            throw ServeError(.badRequest, "model '\(name)': several .caffemodel files in \(files) (\(weights.joined(separator: ", "))); keep one")
        }
        guard let weight = weights.first else { throw ServeError(.badRequest, "model '\(name)': no .caffemodel in \(files)") }
        let configuration = folder + "/config.pbtxt"
        return ModelSource(name: name, version: version, prototxt: files + "/" + prototxt, weights: files + "/" + weight,
                           configuration: manager.fileExists(atPath: configuration) ? configuration : nil)
    }

    /// Loads (or reloads) a model off the cooperative pool and puts it in service; the version it
    /// replaces finishes the requests it already has.
    public func load(_ name: String) async throws(ServeError) {
        let result: Result<ServedModel, ServeError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [self] in continuation.resume(returning: loadNow(name)) }
        }
        switch result {
        case .success: return
        case .failure(let error): throw error
        }
    }

    private func loadNow(_ name: String) -> Result<ServedModel, ServeError> {
        let started = Date()
        let source: ModelSource
        do { source = try self.source(named: name) } catch { return .failure(error) }
        lock.withLock { loading[name, default: 0] += 1 }
        defer {
            lock.withLock {
                let left = (loading[name] ?? 1) - 1
                loading[name] = left > 0 ? left : nil
            }
        }
        do {
            let model: ServedModel
            do {
                model = try ServedModel(source: source, compiler: compiler, metrics: metrics, queueCapacity: queueCapacity,
                                        keepsParameters: !warmUp) { [logger] in
                    logger.warning("\($0)")
                }
                if warmUp {
                    try model.warmUp()
                }
            } catch let error as ServeError {
                throw error
            } catch {
                throw ServeError(.badRequest, "model '\(name)': cannot load \(source.prototxt): \((error as? Diagnostic)?.description ?? "\(error)")")
            }
            let previous = lock.withLock {
                failures[name] = nil
                let previous = models[name]
                models[name] = model
                return previous
            }
            previous?.retire()
            logger.info("model '\(name)' version \(source.version) ready (\(String(format: "%.2f", Date().timeIntervalSince(started))) s\(warmUp ? ", batch sizes \(model.batcher.policy.batchSizes) compiled" : ""))")
            return .success(model)
        } catch {
            let failure = error as? ServeError ?? ServeError(.internalServerError, "model '\(name)': \(error)")
            lock.withLock { failures[name] = failure.message }
            logger.error("\(failure.message)")
            return .failure(failure)
        }
    }

    /// Takes a model out of service; requests it already has still finish.
    public func unload(_ name: String) throws(ServeError) {
        let (model, failed) = lock.withLock { (models.removeValue(forKey: name), failures.removeValue(forKey: name)) }
        guard let model else {
            if failed != nil { return }   // a failed load no longer holds the server back from ready
            throw ServeError(.badRequest, "model '\(name)' is not loaded")
        }
        model.retire()
        logger.info("model '\(name)' unloaded")
    }

    /// The model in service under `name` (and `version`, when given). With `lease`, the caller
    /// holds it until `release()`, and a reload or unload meanwhile lets it finish on this version.
    public func model(_ name: String, version: String? = nil, lease: Bool = false) throws(ServeError) -> ServedModel {
        let (model, failure, isLoading) = lock.withLock {
            let model = models[name]
            if lease, let model, (version ?? "").isEmpty || version == model.version { model.acquire() }
            return (model, failures[name], loading[name] != nil)
        }
        guard let model else {
            if isLoading { throw ServeError(.serviceUnavailable, "model '\(name)' is loading") }
            if let failure { throw ServeError(.badRequest, "model '\(name)' is not available: \(failure)") }
            throw ServeError(.notFound, "unknown model '\(name)'" + (availableNames().isEmpty ? "" : "; the repository has " + availableNames().map { "'\($0)'" }.joined(separator: ", ")))
        }
        if let version, !version.isEmpty, version != model.version {
            throw ServeError(.notFound, "model '\(name)' has no version '\(version)' loaded (version \(model.version) is)")
        }
        return model
    }

    /// Every model in service.
    public var loaded: [ServedModel] { lock.withLock { Array(models.values) } }

    /// Whether every model that should be up is: none loading, none whose load failed and left it
    /// out of service (a failed reload keeps the previous version serving), at least one loaded.
    public var allReady: Bool {
        lock.withLock { loading.isEmpty && !models.isEmpty && failures.keys.allSatisfy { models[$0] != nil } }
    }

    /// The repository index: every model the folder offers or the server holds, with its state.
    public func index() -> [Entry] {
        let names = Set(availableNames()).union(lock.withLock { Set(models.keys) })
        return names.sorted().map { name in
            lock.withLock {
                if let model = models[name] { return Entry(name: name, version: model.version, state: "READY", reason: "") }
                if loading[name] != nil { return Entry(name: name, version: nil, state: "LOADING", reason: "") }
                return Entry(name: name, version: nil, state: "UNAVAILABLE", reason: failures[name] ?? "unloaded")
            }
        }
    }
}
