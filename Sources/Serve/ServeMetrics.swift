import CoreMetrics
import Metrics
import Prometheus

/// The Prometheus registry behind `/metrics` and the factory that makes metrics in it.
///
/// The server passes this object down instead of bootstrapping the global `MetricsSystem`, so
/// tests can run several servers in one process, each with its own numbers.
public final class ServeMetricsRegistry: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        factory = PrometheusMetricsFactory(registry: registry)
    }

    /// The text exposition format for `GET /metrics`.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// The metrics of one model version.
    public func model(_ name: String, version: String) -> ModelMetrics { ModelMetrics(name: name, version: version, factory: factory) }
}

/// One model version's metrics under Triton's names and labels (`model`, `version`), so dashboards
/// and perf_analyzer built for Triton read them unchanged. Durations are cumulative microseconds
/// (counters), as Triton exports them.
public struct ModelMetrics: Sendable {
    let labels: [(String, String)]
    let factory: PrometheusMetricsFactory
    let success: CoreMetrics.Counter
    let count: CoreMetrics.Counter
    let execCount: CoreMetrics.Counter
    let requestDuration: CoreMetrics.Counter
    let queueDuration: CoreMetrics.Counter
    let computeDuration: CoreMetrics.Counter
    let pending: CoreMetrics.Meter

    init(name: String, version: String, factory: PrometheusMetricsFactory) {
        labels = [("model", name), ("version", version)]
        self.factory = factory
        success = CoreMetrics.Counter(label: "nv_inference_request_success", dimensions: labels, factory: factory)
        count = CoreMetrics.Counter(label: "nv_inference_count", dimensions: labels, factory: factory)
        execCount = CoreMetrics.Counter(label: "nv_inference_exec_count", dimensions: labels, factory: factory)
        requestDuration = CoreMetrics.Counter(label: "nv_inference_request_duration_us", dimensions: labels, factory: factory)
        queueDuration = CoreMetrics.Counter(label: "nv_inference_queue_duration_us", dimensions: labels, factory: factory)
        computeDuration = CoreMetrics.Counter(label: "nv_inference_compute_infer_duration_us", dimensions: labels, factory: factory)
        pending = CoreMetrics.Meter(label: "nv_inference_pending_request_count", dimensions: labels, factory: factory)
        // Every family shows from the start, at 0, as Triton's do.
        success.increment(by: 0)
        failureCounter("REJECTED").increment(by: 0)
        count.increment(by: 0)
        execCount.increment(by: 0)
    }

    func failureCounter(_ reason: String) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: "nv_inference_request_failure", dimensions: labels + [("reason", reason)], factory: factory)
    }

    /// A request answered with outputs.
    func recordSuccess(rows: Int, requestMicroseconds: Int, timing: BatchTiming) {
        success.increment()
        count.increment(by: Int64(rows))
        requestDuration.increment(by: Int64(requestMicroseconds))
        queueDuration.increment(by: Int64(timing.queueMicroseconds))
        computeDuration.increment(by: Int64(timing.computeMicroseconds))
    }

    /// A request for this model answered with an error.
    func recordFailure(_ error: ServeError, requestMicroseconds: Int) {
        failureCounter(error.failureReason).increment()
        requestDuration.increment(by: Int64(requestMicroseconds))
    }

    /// One batch executed.
    func recordExecution() { execCount.increment() }
}
