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
            // The contract as the document states it; the router must serve exactly these routes.
            let expected = Dictionary(uniqueKeysWithValues: paths.map { ($0.key, Set($0.value.keys)) })
            #expect(expected.count == 12, "the twelve documented paths")
            #expect(expected["/oauth/token"] == ["post"] && expected["/device"] == ["get", "post"])
            let served = fixture.routes.makeRouter().routes.map { "\($0.method.rawValue) \($0.path)" }
            let documented = expected.flatMap { path, methods in methods.map { "\($0.uppercased()) \(path)" } }
            #expect(Set(served) == Set(documented), "every documented route is served, every served route is documented")
            #expect(served.count == Set(served).count)
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
