import Foundation
import Hummingbird
import Logging
import Prometheus

/// The Prometheus registry the server exports at `/metrics`, with a request-latency histogram
/// per endpoint.
///
/// The store counts its lifecycle through swift-metrics; bootstrap `MetricsSystem` with a
/// `PrometheusMetricsFactory` on the same ``registry`` (once per process) so those counters
/// show up here:
///
/// ```swift
/// let metrics = DeviceAuthorizationMetrics()
/// MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
/// ```
public struct DeviceAuthorizationMetrics: Sendable {
    /// The counters the store increments; created up front so `/metrics` lists them from zero.
    public static let lifecycleCounters = [
        "deviceauth_grants_issued_total",
        "deviceauth_grants_approved_total",
        "deviceauth_grants_denied_total",
        "deviceauth_grants_redeemed_total",
        "deviceauth_grants_replayed_total",
        "deviceauth_polls_slow_down_total",
        "deviceauth_polls_expired_total",
        "deviceauth_user_code_lockouts_total",
    ]

    /// Name of the request latency histogram (labels `endpoint`, `method`, `status`).
    public static let requestDurationName = "deviceauth_http_request_duration_seconds"

    static let buckets: [Duration] = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                      .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                      .milliseconds(2500), .seconds(5)]

    /// The registry rendered at `/metrics`.
    public let registry: PrometheusCollectorRegistry

    /// Creates the metrics on `registry` and registers the lifecycle counters.
    /// - Parameter registry: the registry (a new one by default).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        for name in Self.lifecycleCounters {
            _ = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: ""))
        }
    }

    func recordRequest(endpoint: String, method: String, status: Int, duration: Duration) {
        registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(metricName: Self.requestDurationName, unitName: "", helpText: ""),
            labels: [("endpoint", endpoint), ("method", method), ("status", String(status))],
            buckets: Self.buckets
        ).record(duration)
    }

    /// The Prometheus text exposition.
    func render() -> String { registry.emitToString() }
}

/// Times every request, stamps `X-Request-Id`, and logs one line per request (at `debug`: a
/// synchronous log line per request costs more than the token endpoint's Redis round trip)
/// without the query string (it may hold a user code).
struct RequestObservationMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: DeviceAuthorizationMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = ContinuousClock()
        let start = clock.now
        var status = 500
        defer {
            let elapsed = clock.now - start
            let endpoint = context.endpointPath ?? "unmatched"
            metrics.recordRequest(endpoint: endpoint, method: request.method.rawValue, status: status, duration: elapsed)
            context.logger.debug("request", metadata: [
                "http.method": "\(request.method.rawValue)",
                "http.path": "\(String(request.uri.path.prefix(128)))",
                "http.status": "\(status)",
                "duration_ms": "\(Double(elapsed.components.attoseconds / 1_000_000_000_000) / 1000 + Double(elapsed.components.seconds) * 1000)",
            ])
        }
        do {
            var response = try await next(request, context)
            status = response.status.code
            response.headers[.xRequestID] = context.id
            return response
        } catch let error as any HTTPResponseError {
            status = error.status.code
            throw error
        }
    }
}
