import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Prometheus
import RedisClient
import Synchronization

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
        "deviceauth_refresh_families_total",
        "deviceauth_refresh_requests_total",
        "deviceauth_refresh_rotations_total",
        "deviceauth_refresh_failures_total",
        "deviceauth_refresh_reuse_detected_total",
        "deviceauth_revocations_total",
    ]

    /// Name of the request latency histogram (labels `endpoint`, `method`, `status`).
    public static let requestDurationName = "deviceauth_http_request_duration_seconds"

    static let buckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5),
    ]

    /// The registry rendered at `/metrics`.
    public let registry: PrometheusCollectorRegistry

    /// The request histograms already made, by endpoint, method and status: the registry's own
    /// lookup validates names and builds label arrays on every call, which the token endpoint
    /// would pay per request.
    private let requestHistograms = RequestHistogramCache()

    /// Creates the metrics on `registry` and registers the lifecycle counters.
    /// - Parameter registry: the registry (a new one by default).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        for name in Self.lifecycleCounters {
            _ = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: ""))
        }
    }

    func recordRequest(endpoint: String, method: String, status: Int, duration: Duration) {
        let key = RequestHistogramCache.Key(endpoint: endpoint, method: method, status: status)
        let histogram = requestHistograms.histogram(for: key) {
            registry.makeDurationHistogram(
                descriptor: MetricNameDescriptor(metricName: Self.requestDurationName, unitName: "", helpText: ""),
                labels: [("endpoint", endpoint), ("method", method), ("status", String(status))],
                buckets: Self.buckets)
        }
        histogram.record(duration)
    }

    /// The Prometheus text exposition.
    func render() -> String { registry.emitToString() }
}

/// The request-latency histograms by label values. Endpoints are route patterns (Hummingbird
/// labels unrouted requests `NotFound`), methods are ``RequestObservationMiddleware/methodLabel(_:)``
/// and statuses the ones the routes answer, so the set stays small; past `limit` entries the
/// registry is asked directly instead of growing the cache.
final class RequestHistogramCache: Sendable {
    struct Key: Hashable {
        let endpoint: String
        let method: String
        let status: Int
    }

    private let histograms = Mutex<[Key: DurationHistogram]>([:])
    private let limit = 512

    func histogram(for key: Key, make: () -> DurationHistogram) -> DurationHistogram {
        if let known = histograms.withLock({ $0[key] }) { return known }
        let made = make()
        histograms.withLock { cache in
            if cache.count < limit { cache[key] = made }
        }
        return made
    }
}

/// Times every request, stamps `X-Request-Id`, and logs one line per request (at `debug`: a
/// synchronous log line per request costs more than the token endpoint's Redis round trip)
/// without the query string (it may hold a user code).
struct RequestObservationMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: DeviceAuthorizationMetrics

    /// The `method` label: the standard methods by name, anything else as `other`. NIO's parser
    /// accepts some 35 methods (WebDAV, RTSP, `PURGE`…) and other servers or tests may pass any
    /// token, so a client cycling through them cannot multiply the histograms.
    static func methodLabel(_ method: HTTPRequest.Method) -> String {
        switch method {
        case .get, .head, .post, .put, .delete, .patch, .options, .connect, .trace: method.rawValue
        default: "other"
        }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = ContinuousClock()
        let start = clock.now
        var status = 500
        defer {
            let elapsed = clock.now - start
            let endpoint = context.endpointPath ?? "unmatched"
            metrics.recordRequest(endpoint: endpoint, method: Self.methodLabel(request.method), status: status, duration: elapsed)
            context.logger.debug(
                "request",
                metadata: [
                    "http.method": "\(request.method.rawValue)",
                    "http.path": "\(String(request.uri.path.prefix(128)))",
                    "http.status": "\(status)",
                    "duration_ms": "\(Double(elapsed.microseconds) / 1000)",
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
