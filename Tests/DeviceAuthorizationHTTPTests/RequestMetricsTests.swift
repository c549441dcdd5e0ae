import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing

@testable import DeviceAuthorizationHTTP

@Suite("Request latency histograms")
struct RequestMetricsTests {
    /// A router with only the observation middleware, on a registry of its own.
    static func observedApp(_ metrics: DeviceAuthorizationMetrics) -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: RequestObservationMiddleware(metrics: metrics))
        router.get("/things/{id}") { _, _ in "ok" }
        return Application(router: router)
    }

    static func count(_ text: String, endpoint: String, method: String, status: Int) -> Int? {
        let prefix = #"deviceauth_http_request_duration_seconds_count{endpoint="\#(endpoint)",method="\#(method)",status="\#(status)"} "#
        return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count)) }
    }

    @Test("every request is counted once under its route pattern, method and status")
    func counts() async throws {
        let metrics = DeviceAuthorizationMetrics(registry: PrometheusCollectorRegistry())
        try await Self.observedApp(metrics).test(.router) { client async throws -> Void in
            for id in 0..<5 { #expect(try await client.execute(uri: "/things/\(id)", method: .get).status == .ok) }
            #expect(try await client.execute(uri: "/things/9", method: .post).status == .notFound)
        }
        let text = metrics.render()
        #expect(Self.count(text, endpoint: "/things/{id}", method: "GET", status: 200) == 5)
        #expect(Self.count(text, endpoint: "NotFound", method: "POST", status: 404) == 1, "Hummingbird's label for an unrouted request")
    }

    @Test("invented methods share one 'other' label instead of growing the metrics")
    func inventedMethods() async throws {
        let metrics = DeviceAuthorizationMetrics(registry: PrometheusCollectorRegistry())
        try await Self.observedApp(metrics).test(.router) { client async throws -> Void in
            for index in 0..<20 {
                let method = try #require(HTTPRequest.Method("BREW\(index)"))
                _ = try await client.execute(uri: "/things/1", method: method)
            }
        }
        let text = metrics.render()
        #expect(!text.contains("BREW"))
        let other = text.split(separator: "\n").filter { $0.hasPrefix("deviceauth_http_request_duration_seconds_count{") && $0.contains(#"method="other""#) }
        #expect(other.compactMap { Int($0.split(separator: " ").last!) }.reduce(0, +) == 20)
    }
}
