import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@Suite("OpenAPI document")
struct OpenAPITests {
    @Test("GET /openapi.json serves an OpenAPI 3 document that documents every route and every error status")
    func served() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
            let document = response.json
            #expect((document["openapi"] as? String)?.hasPrefix("3.") == true)
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            let expected: [String: Set<String>] = [
                "/oauth/device_authorization": ["post"], "/oauth/token": ["post"], "/oauth/revoke": ["post"], "/oauth/introspect": ["post"],
                "/device": ["get", "post"], "/device/login": ["post"],
                "/.well-known/oauth-authorization-server": ["get"], "/.well-known/jwks.json": ["get"],
                "/healthz": ["get"], "/readyz": ["get"], "/metrics": ["get"], "/openapi.json": ["get"],
            ]
            #expect(Dictionary(uniqueKeysWithValues: paths.map { ($0.key, Set($0.value.keys)) }) == expected)
            for path in ["/oauth/device_authorization", "/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
                let responses = try #require((paths[path]?["post"] as? [String: Any])?["responses"] as? [String: Any])
                #expect(Set(responses.keys) == ["200", "400", "401", "413", "429", "500", "503"], "\(path)")
            }
            // Every documented path answers an undocumented method with 405 and Allow.
            for (path, methods) in expected {
                let wrong: HTTPRequest.Method = methods.contains("get") ? .delete : .get
                let answer = try await client.execute(uri: path, method: wrong)
                #expect(answer.status == .methodNotAllowed, "\(wrong) \(path)")
                #expect(answer.headers[.allow] == methods.sorted().map { $0.uppercased() }.joined(separator: ", "), "\(path)")
            }
        }
    }
}
