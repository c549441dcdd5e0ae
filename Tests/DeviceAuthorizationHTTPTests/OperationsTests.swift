import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@Suite("Metadata, health, readiness, metrics, Redis outages")
struct OperationsTests {
    @Test("RFC 8414 metadata")
    func metadata() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.execute(uri: "/.well-known/oauth-authorization-server", method: .get)
            #expect(response.status == .ok)
            let body = response.json
            #expect(body["issuer"] as? String == "https://auth.test")
            #expect(body["device_authorization_endpoint"] as? String == "https://auth.test/oauth/device_authorization")
            #expect(body["token_endpoint"] as? String == "https://auth.test/oauth/token")
            #expect(body["jwks_uri"] as? String == "https://auth.test/.well-known/jwks.json")
            #expect(body["grant_types_supported"] as? [String] == [DeviceAuthorizationRoutes.deviceCodeGrantType, DeviceAuthorizationRoutes.refreshTokenGrantType])
            #expect(body["revocation_endpoint"] as? String == "https://auth.test/oauth/revoke")
            #expect(body["introspection_endpoint"] as? String == "https://auth.test/oauth/introspect")
            #expect(body["introspection_endpoint_auth_methods_supported"] as? [String] == ["client_secret_basic", "client_secret_post"])
        }
    }

    @Test("JWKS: one EC P-256 signing key")
    func jwks() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.execute(uri: "/.well-known/jwks.json", method: .get)
            let keys = try #require(response.json["keys"] as? [[String: Any]])
            #expect(keys.count == 1)
            #expect(keys[0]["kty"] as? String == "EC")
            #expect(keys[0]["crv"] as? String == "P-256")
            #expect(keys[0]["alg"] as? String == "ES256")
            #expect(keys[0]["d"] == nil, "the private key must never be published")
        }
    }

    @Test("healthz and readyz")
    func health() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            #expect(ready.headers[HTTPField.Name("X-Request-Id")!] != nil)
        }
    }

    @Test("metrics: lifecycle counters and latency histograms in Prometheus text")
    func metrics() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
            #expect(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast").status == .ok)
            let response = try await client.execute(uri: "/metrics", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
            let text = response.text
            for name in DeviceAuthorizationMetrics.lifecycleCounters {
                #expect(text.contains("# TYPE \(name) counter"), "missing \(name)")
            }
            let issuedLine = text.split(separator: "\n").first { $0.hasPrefix("deviceauth_grants_issued_total ") }
            #expect(issuedLine.flatMap { Double($0.split(separator: " ").last!) }.map { $0 >= 1 } == true)
            #expect(text.contains("deviceauth_http_request_duration_seconds_bucket"))
            #expect(text.contains(#"endpoint="/oauth/token""#))
        }
    }

    @Test("Redis down → 503 temporarily_unavailable with Retry-After; readyz 503; page 503")
    func redisDown() async throws {
        // A port nobody listens on.
        let fixture = try await HTTPFixture(redisURL: "redis://127.0.0.1:1/0")
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.postForm("/oauth/device_authorization", [("client_id", "cli")])
            expectOAuthError(response, "temporarily_unavailable", status: .serviceUnavailable)
            #expect(response.headers[.retryAfter] != nil)
            let token = try await client.poll(deviceCode: "abcd." + String(repeating: "A", count: 43))
            expectOAuthError(token, "temporarily_unavailable", status: .serviceUnavailable)
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .serviceUnavailable)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            // The sign-in attempt limit needs Redis too: it fails closed, as a 503 page.
            let browser = Browser()
            let form = try await browser.get(client, "/device")
            let signIn = try await browser.post(
                client, "/device/login",
                [
                    ("username", "alice"), ("password", "wonderland"),
                    ("csrf_token", try #require(hiddenField("csrf_token", in: form.text))),
                ])
            #expect(signIn.status == .serviceUnavailable)
            #expect(signIn.headers[.retryAfter] != nil)
        }
        // Signed in (no sign-in limit here), the lookup is a 503 page.
        let unlimited = try await HTTPFixture(redisURL: "redis://127.0.0.1:1/0", rateLimits: .off)
        defer { unlimited.shutdown() }
        try await unlimited.app.test(.router) { client in
            let browser = Browser()
            try await browser.logIn(client)
            #expect(try await browser.lookup(client, "BBBB-BBBB").status == .serviceUnavailable)
        }
    }
}
