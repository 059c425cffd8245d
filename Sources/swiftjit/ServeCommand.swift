import ArgumentParser
import Foundation
import Logging
import Serve
import SwiftJIT

/// `swiftjit serve`: a KServe v2 / Triton-compatible inference server with dynamic batching.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve nets over HTTP with the KServe v2 protocol (Triton's clients work), with dynamic batching and Prometheus metrics.",
        discussion: """
        A model repository holds one folder per model: DIR/NAME/ with a deploy .prototxt and a .caffemodel (directly, or in a numeric version folder such as DIR/NAME/1/, the highest served) and optionally DIR/NAME/config.pbtxt in Triton's format, of which max_batch_size, dynamic_batching { max_queue_delay_microseconds preferred_batch_size }, instance_group { count } and input/output dims are honoured (other fields are ignored with a warning). Without config.pbtxt a model takes batches of up to 8, formed from whatever is queued.

        Examples:
          swiftjit serve --model-repository models/ --warmup
          swiftjit serve deploy.prototxt --weights net.caffemodel --name squeezenet
          curl -s localhost:8000/v2/health/ready && curl -s localhost:8002/metrics

        SIGTERM or SIGINT stops accepting connections, answers the requests in flight and exits 0.
        """
    )

    @Argument(help: "One net to serve (.prototxt), instead of --model-repository.")
    var net: String?

    @Option(name: .long, help: "With NET: its .caffemodel.")
    var weights: String?

    @Option(name: .long, help: "With NET: the model's name (default: the prototxt's file name without extension).")
    var name: String?

    @Option(name: .long, help: "With NET: a config.pbtxt for it.")
    var config: String?

    @Option(name: .long, help: "A Triton-style model repository folder.")
    var modelRepository: String?

    @Option(name: .long, help: "The address to listen on.")
    var host: String = "127.0.0.1"

    @Option(name: .long, help: "The KServe v2 HTTP port.")
    var httpPort: Int = 8000

    @Option(name: .long, help: "The Prometheus metrics port (/metrics).")
    var metricsPort: Int = 8002

    @Flag(name: .long, help: "Compile every batch size the batcher forms before the server reports ready.")
    var warmup = false

    @Option(name: .long, help: "Requests a model may have waiting; past it new ones get 503 at once.")
    var maxQueue: Int = 1024

    @Option(name: .long, help: "Seconds a request body may take to arrive, and a connection may stay idle.")
    var requestTimeout: Double = 60

    @Option(name: .long, help: "The largest request body accepted, in bytes.")
    var maxRequestBytes: Int = 256 << 20

    @OptionGroup var kernelCache: KernelCacheOptions

    func validate() throws {
        if net == nil && modelRepository == nil { throw ValidationError("give a model repository (--model-repository DIR) or a net (NET.prototxt --weights W)") }
        if net != nil && modelRepository != nil { throw ValidationError("give either --model-repository or one NET.prototxt, not both") }
        if net != nil && weights == nil { throw ValidationError("serving NET.prototxt needs its --weights W.caffemodel") }
        if maxQueue < 1 { throw ValidationError("--max-queue must be at least 1") }
        if !(requestTimeout > 0) { throw ValidationError("--request-timeout must be positive seconds") }
    }

    func run() async throws {
        let logger = Logger(label: "swiftjit.serve", factory: { StreamLogHandler.standardError(label: $0) })
        do {
            var fixed: [ModelSource] = []
            if let net {
                let modelName = name ?? URL(fileURLWithPath: net).deletingPathExtension().lastPathComponent
                fixed.append(ModelSource(name: modelName, prototxt: net, weights: weights, configuration: config))
            }
            if let modelRepository {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: modelRepository, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw ValidationError("--model-repository \(modelRepository) is not a folder")
                }
            }
            let metrics = ServeMetricsRegistry()
            let compiler = try Compiler(cache: kernelCache.makeCache())
            let repository = ModelRepository(directory: modelRepository, models: fixed, compiler: compiler, metrics: metrics,
                                             queueCapacity: maxQueue, warmUp: warmup, logger: logger)
            let names = repository.availableNames()
            if names.isEmpty { throw ValidationError("the model repository \(modelRepository ?? "") has no model folders") }
            let limits = ServerLimits(maxRequestBytes: maxRequestBytes, bodyTimeout: .milliseconds(Int64(requestTimeout * 1000)))
            let server = InferenceServer(options: .init(host: host, httpPort: httpPort, metricsPort: metricsPort, limits: limits, models: names),
                                         repository: repository, metrics: metrics, logger: logger)
            try await server.run()
        } catch let error as ValidationError {
            throw error
        } catch {
            throw fail(error)
        }
    }
}
