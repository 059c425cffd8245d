import Foundation
import Hummingbird
import NIOCore
import SwiftJIT

/// The KServe v2 REST endpoints (and Triton's repository and configuration extensions) over a
/// `ModelRepository`. Every error answer is `{"error": "..."}` with a 4xx/5xx status.
struct InferenceRoutes: Sendable {
    let repository: ModelRepository
    let limits: ServerLimits
    let version: String

    /// Triton's binary tensor data extension: the JSON header's length in a request or response body.
    static let headerLengthField = HTTPFields.Element.Name("Inference-Header-Content-Length")!

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v2/health/live") { _, _ in Self.json(.ok, "{}") }
        router.get("/v2/health/ready") { _, _ in
            repository.allReady ? Self.json(.ok, "{}") : Self.error(ServeError(.serviceUnavailable, "not every model is loaded yet"))
        }
        router.get("/v2") { _, _ in
            Self.json(.ok, "{\"name\":\"swiftjit\",\"version\":" + jsonString(version)
                + ",\"extensions\":[\"binary_tensor_data\",\"model_repository\",\"model_configuration\",\"parameters\"]}")
        }
        for prefix in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"] {
            router.get(RouterPath(prefix)) { _, context in
                Self.answer { () throws(ServeError) in Self.json(.ok, Self.metadata(try model(context))) }
            }
            router.get(RouterPath(prefix + "/ready")) { _, context in
                Self.answer { () throws(ServeError) in _ = try model(context); return Self.json(.ok, "{}") }
            }
            router.get(RouterPath(prefix + "/config")) { _, context in
                Self.answer { () throws(ServeError) in Self.json(.ok, Self.configurationJSON(try model(context))) }
            }
            router.post(RouterPath(prefix + "/infer")) { request, context in
                await infer(request, context)
            }
        }
        router.post("/v2/repository/index") { _, _ in
            let entries = repository.index().map { entry in
                "{\"name\":" + jsonString(entry.name) + (entry.version.map { ",\"version\":" + jsonString($0) } ?? "")
                    + ",\"state\":\"\(entry.state)\",\"reason\":" + jsonString(entry.reason) + "}"
            }
            return Self.json(.ok, "[" + entries.joined(separator: ",") + "]")
        }
        router.post("/v2/repository/models/{name}/load") { request, context in
            let name = context.parameters.get("name") ?? ""
            do {
                // Triton lets a load carry a configuration or files; this server loads from the repository only.
                let body = try await request.body.collect(upTo: 1 << 20)
                if body.readableBytes > 0,
                   let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
                   let parameters = object["parameters"] as? [String: Any], let key = parameters.keys.sorted().first {
                    throw ServeError(.badRequest, "model '\(name)': load parameter '\(key)' is not supported; edit \(name)/config.pbtxt in the model repository and load again")
                }
                try await repository.load(name)
                return Self.json(.ok, "{}")
            } catch let error as ServeError {
                return Self.error(error)
            } catch {
                return Self.error(ServeError(.internalServerError, "model '\(name)': \(error)"))
            }
        }
        router.post("/v2/repository/models/{name}/unload") { _, context in
            Self.answer { () throws(ServeError) in
                try repository.unload(context.parameters.get("name") ?? "")
                return Self.json(.ok, "{}")
            }
        }
    }

    private func model(_ context: BasicRequestContext, lease: Bool = false) throws(ServeError) -> ServedModel {
        try repository.model(context.parameters.get("name") ?? "", version: context.parameters.get("version"), lease: lease)
    }

    private func infer(_ request: Request, _ context: BasicRequestContext) async -> Response {
        let start = DispatchTime.now().uptimeNanoseconds
        let model: ServedModel
        do { model = try self.model(context, lease: true) } catch { return Self.error(error) }
        model.metrics.pending.increment()
        defer {
            model.metrics.pending.decrement()
            model.release()
        }
        func microseconds() -> Int { Int((DispatchTime.now().uptimeNanoseconds - start) / 1000) }
        do {
            var headerLength: Int?
            if let text = request.headers[Self.headerLengthField] {
                guard let value = Int(text.trimmingCharacters(in: .whitespaces)), value >= 0 else {
                    throw ServeError(.badRequest, "model '\(model.name)': Inference-Header-Content-Length must be a non-negative integer, got '\(text)'")
                }
                headerLength = value
            }
            let body = try await readBody(request, model: model.name)
            let decoded: InferenceRequest
            do { decoded = try InferenceRequest.decode(body: body, headerLength: headerLength) } catch {
                throw ServeError(error.status, "model '\(model.name)': " + error.message)
            }
            let (inputs, rows) = try model.validate(decoded)
            let outputs: [String: NDArray]
            let timing: BatchTiming
            do {
                (outputs, timing) = try await model.batcher.submit(inputs, rows: rows)
            } catch let error as ServeError {
                throw error
            } catch {
                throw ServeError(.internalServerError, "model '\(model.name)': the forward pass failed: \((error as? Diagnostic)?.description ?? "\(error)")")
            }
            let wanted = decoded.outputs ?? model.outputs.map { .init(name: $0.name, binary: decoded.binaryDataOutput) }
            let response = InferenceResponse.encode(model: model.name, version: model.version, id: decoded.id, outputs: wanted.map { output in
                let array = outputs[output.name] ?? NDArray(shape: [0])
                return (output.name, array.shape, array.data, output.binary)
            })
            model.metrics.recordSuccess(rows: rows, requestMicroseconds: microseconds(), timing: timing)
            var headers: HTTPFields = [.contentType: response.headerLength == nil ? "application/json" : "application/octet-stream"]
            if let length = response.headerLength { headers[Self.headerLengthField] = String(length) }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: response.body)))
        } catch let error as ServeError {
            model.metrics.recordFailure(error, requestMicroseconds: microseconds())
            return Self.error(error)
        } catch {
            let failure = ServeError(.badRequest, "model '\(model.name)': \(error)")
            model.metrics.recordFailure(failure, requestMicroseconds: microseconds())
            return Self.error(failure)
        }
    }

    /// Reads the whole body, refusing more than `limits.maxRequestBytes` (413) and a body that has not
    /// fully arrived after `limits.bodyTimeout` (408, and the connection is closed: the rest of that
    /// body will never be read). The connections' idle timeout, a little longer, is the backstop.
    private func readBody(_ request: Request, model: String) async throws -> [UInt8] {
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        let limit = limits.maxRequestBytes, timeout = limits.bodyTimeout
        if let declared, declared > limit {
            throw ServeError(.contentTooLarge, "model '\(model)': the request declares \(declared) bytes (Content-Length); the limit is \(limit) (--max-request-bytes)")
        }
        let body = request.body
        return try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
            group.addTask {
                var bytes: [UInt8] = []
                // Reserve what the client declares, up to a first chunk's worth: a lying Content-Length costs nothing.
                bytes.reserveCapacity(min(declared ?? 0, 16 << 20))
                for try await chunk in body {
                    guard bytes.count + chunk.readableBytes <= limit else {
                        throw ServeError(.contentTooLarge, "model '\(model)': the request body exceeds \(limit) bytes (--max-request-bytes)")
                    }
                    bytes.append(contentsOf: chunk.readableBytesView)
                }
                return bytes
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let bytes = first else {
                throw ServeError(.requestTimeout, "model '\(model)': the request body had not fully arrived after \(timeout)" + (declared.map { " (Content-Length \($0))" } ?? "") + "; send it faster or raise --request-timeout")
            }
            return bytes
        }
    }

    static func metadata(_ model: ServedModel) -> String {
        func tensors(_ list: [ServedModel.TensorInfo]) -> String {
            "[" + list.map { "{\"name\":" + jsonString($0.name) + ",\"datatype\":\"FP32\",\"shape\":" + shapeText(model.batches ? [-1] + $0.dims : $0.dims) + "}" }
                .joined(separator: ",") + "]"
        }
        return "{\"name\":" + jsonString(model.name) + ",\"versions\":[" + jsonString(model.version) + "],\"platform\":\"caffe\""
            + ",\"inputs\":" + tensors(model.inputs) + ",\"outputs\":" + tensors(model.outputs) + "}"
    }

    /// The model configuration as Triton's `GET /v2/models/NAME/config` returns it (what perf_analyzer reads).
    static func configurationJSON(_ model: ServedModel) -> String {
        func tensors(_ list: [ServedModel.TensorInfo]) -> String {
            "[" + list.map { "{\"name\":" + jsonString($0.name) + ",\"data_type\":\"TYPE_FP32\",\"format\":\"FORMAT_NONE\",\"dims\":" + shapeText($0.dims) + "}" }
                .joined(separator: ",") + "]"
        }
        let configuration = model.configuration
        var json = "{\"name\":" + jsonString(model.name) + ",\"platform\":\"caffe\",\"backend\":\"swiftjit\""
            + ",\"version_policy\":{\"latest\":{\"num_versions\":1}}"
            + ",\"max_batch_size\":\(configuration.maxBatchSize)"
            + ",\"input\":" + tensors(model.inputs) + ",\"output\":" + tensors(model.outputs)
            + ",\"instance_group\":[{\"name\":" + jsonString(model.name + "_0") + ",\"kind\":\"KIND_CPU\",\"count\":\(configuration.instanceCount)}]"
        if let batching = configuration.dynamicBatching {
            json += ",\"dynamic_batching\":{\"preferred_batch_size\":" + shapeText(batching.preferredBatchSizes)
                + ",\"max_queue_delay_microseconds\":\(batching.maxQueueDelayMicroseconds)}"
        }
        return json + "}"
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func error(_ error: ServeError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        // The rest of a body that timed out or is too large is never read: the connection cannot be reused.
        if error.status == .requestTimeout || error.status == .contentTooLarge { headers[.connection] = "close" }
        return Response(status: HTTPResponse.Status(code: error.status.rawValue), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(bytes: errorBody(error.message))))
    }

    static func answer(_ body: () throws(ServeError) -> Response) -> Response {
        do { return try body() } catch { return Self.error(error) }
    }
}

/// The server's limits on what one request may cost it.
public struct ServerLimits: Sendable {
    /// The largest request body accepted (413 past it).
    public var maxRequestBytes: Int
    /// How long a request body may take to arrive (408 past it); also the connections' idle timeout.
    public var bodyTimeout: Duration

    public init(maxRequestBytes: Int = 256 << 20, bodyTimeout: Duration = .seconds(60)) {
        self.maxRequestBytes = maxRequestBytes
        self.bodyTimeout = bodyTimeout
    }
}
