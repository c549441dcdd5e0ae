import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// A path that is not exactly a documented route is 404, on the wire (raw request lines, so no
/// client library normalizes them first): Hummingbird's router drops empty path components, so
/// `/metrics/` used to serve the metrics past a proxy that hid only `/metrics`.
@Suite("Strict routing and the metrics listener")
struct StrictRoutingTests {
    static let nearMisses = [
        "/metrics/", "/metrics//", "//metrics", "///metrics", "/metrics/x", "/Metrics", "/metrics%2F", "/./metrics", "/x/../metrics",
        "/device/", "/device//", "//device", "/device/login/", "/oauth/token/", "/oauth//token", "//oauth/token",
        "/oauth/device_authorization/", "/healthz/", "/readyz/", "/openapi.json/", "/.well-known/jwks.json/",
        "/.well-known//oauth-authorization-server",
    ]

    static func get(_ port: Int, _ target: String, method: String = "GET") async throws -> RawHTTP.Reply {
        try await RawHTTP.request(port: port, head: Array("\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close".utf8))
    }

    @Test("near-miss paths (trailing, doubled or leading slashes, case, dot segments) → 404 with no metrics in the body; exact routes still answer")
    func nearMissesAre404() async throws {
        let fixture = try await HTTPFixture(rateLimits: .off)
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let port = try #require(client.port)
            for path in Self.nearMisses {
                for method in ["GET", "POST"] {
                    let reply = try await Self.get(port, path, method: method)
                    #expect(reply.status == 404, "\(method) \(path): \(reply.head)")
                    #expect(!reply.body.contains("deviceauth_"), "\(method) \(path) leaked metrics")
                }
            }
            for path in ["/metrics", "/healthz", "/readyz", "/device", "/openapi.json", "/.well-known/jwks.json"] {
                #expect(try await Self.get(port, path).status == 200, "\(path)")
            }
            // Wrong methods on exact paths keep their 405.
            #expect(try await Self.get(port, "/oauth/token").status == 405)
            #expect(try await Self.get(port, "/metrics", method: "POST").status == 405)
        }
    }

    @Test("metrics on a listener of its own: the main router answers 404 on /metrics (and /metrics/), the metrics router serves only /metrics")
    func separateMetricsListener() async throws {
        let fixture = try await HTTPFixture(rateLimits: .off, configureHTTP: { $0.metricsOnMainListener = false })
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            for path in ["/metrics", "/metrics/", "/metrics//"] {
                let response = try await client.execute(uri: path, method: .get)
                #expect(response.status == .notFound, "\(path)")
                #expect(!response.text.contains("deviceauth_"))
            }
            #expect(try await client.execute(uri: "/metrics", method: .post).status == .notFound, "not 405: the path does not exist here")
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
        let metricsApp = Application(router: fixture.routes.makeMetricsRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await metricsApp.test(.live) { client in
            let port = try #require(client.port)
            let metrics = try await Self.get(port, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("deviceauth_grants_issued_total"))
            for path in ["/metrics/", "//metrics", "/healthz", "/oauth/token", "/device"] {
                #expect(try await Self.get(port, path).status == 404, "\(path) on the metrics listener")
            }
            #expect(try await Self.get(port, "/metrics", method: "POST").status == 405)
        }
    }
}
