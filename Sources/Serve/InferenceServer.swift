import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SwiftJIT

/// The inference server: the KServe v2 API on one port, Prometheus metrics on another, the models
/// loading in the background, and graceful shutdown on SIGTERM/SIGINT.
///
/// `run()` returns after a signal once in-flight requests have been answered (the HTTP server stops
/// accepting connections and finishes the requests it has, then each model's batcher drains).
///
///     let server = InferenceServer(options: options, repository: repository, metrics: metrics, logger: logger)
///     try await server.run()
public struct InferenceServer: Sendable {
    /// Where to listen and what to load.
    public struct Options: Sendable {
        public var host: String
        public var httpPort: Int
        public var metricsPort: Int
        public var limits: ServerLimits
        /// The models to load at start (every model the repository offers).
        public var models: [String]
        public var version: String

        public init(host: String = "127.0.0.1", httpPort: Int = 8000, metricsPort: Int = 8002, limits: ServerLimits = ServerLimits(),
                    models: [String], version: String = "0.1.0") {
            self.host = host
            self.httpPort = httpPort
            self.metricsPort = metricsPort
            self.limits = limits
            self.models = models
            self.version = version
        }
    }

    public let options: Options
    public let repository: ModelRepository
    public let metrics: ServeMetricsRegistry
    public let logger: Logger

    public init(options: Options, repository: ModelRepository, metrics: ServeMetricsRegistry, logger: Logger) {
        self.options = options
        self.repository = repository
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        let router = Router(context: BasicRequestContext.self)
        InferenceRoutes(repository: repository, limits: options.limits, version: options.version).register(on: router)
        // Idle connections close a little after a stalled body's 408 would be sent, as a backstop.
        let timeout = options.limits.bodyTimeout + .seconds(2)
        let idle = TimeAmount.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        let logger = self.logger
        /// One listener: HTTP/1 on `port` with the idle timeout above, announcing where it listens.
        func listener(_ router: Router<BasicRequestContext>, port: Int, what: String, path: String = "") -> some Service {
            Application(
                router: router,
                server: .http1(configuration: .init(idleTimeout: idle)),
                configuration: .init(address: .hostname(options.host, port: port), serverName: "swiftjit"),
                onServerRunning: { channel in
                    logger.info("\(what) on http://\(channel.localAddress?.ipAddress ?? "?"):\(channel.localAddress?.port ?? 0)\(path)")
                },
                logger: logger
            )
        }
        let api = listener(router, port: options.httpPort, what: "KServe v2 API")
        let metricsRouter = Router(context: BasicRequestContext.self)
        let registry = metrics
        metricsRouter.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: registry.exposition())))
        }
        let metricsApp = listener(metricsRouter, port: options.metricsPort, what: "Prometheus metrics", path: "/metrics")
        let repository = self.repository
        let names = options.models
        let loading = Task {
            for name in names {
                if Task.isCancelled { return }
                try? await repository.load(name)
            }
            if repository.allReady { logger.info("server ready: \(names.count) model\(names.count == 1 ? "" : "s") loaded") }
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: api), .init(service: metricsApp)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
        loading.cancel()
        for model in repository.loaded { model.batcher.finish() }
        logger.info("server stopped")
    }
}
