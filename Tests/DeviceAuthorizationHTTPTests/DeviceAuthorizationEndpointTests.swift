import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@Suite("POST /oauth/device_authorization")
struct DeviceAuthorizationEndpointTests {
    @Test("success: every RFC 8628 §3.2 field, no-store")
    func success() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.postForm("/oauth/device_authorization", [("client_id", "cli"), ("scope", "profile email")])
            #expect(response.status == .ok)
            #expect(response.headers[.cacheControl] == "no-store")
            let body = response.json
            let deviceCode = try #require(body["device_code"] as? String)
            let userCode = try #require(body["user_code"] as? String)
            #expect(deviceCode.count >= 40)
            #expect(userCode.wholeMatch(of: /[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}/) != nil)
            #expect(body["verification_uri"] as? String == "https://auth.test/device")
            #expect(body["verification_uri_complete"] as? String == "https://auth.test/device?user_code=\(userCode)")
            #expect(body["expires_in"] as? Int == 600)
            #expect(body["interval"] as? Int == 5)
        }
    }

    @Test("per-client lifetime and interval")
    func perClientSettings() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let body = try await client.issue(clientID: "short")
            #expect(body["expires_in"] as? Int == 1)
            #expect(body["interval"] as? Int == 0)
        }
    }

    @Test("unknown client → 401 invalid_client with WWW-Authenticate")
    func unknownClient() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.postForm("/oauth/device_authorization", [("client_id", "nobody")])
            expectOAuthError(response, "invalid_client", status: .unauthorized)
            #expect(response.headers[.wwwAuthenticate]?.hasPrefix("Basic") == true)
        }
    }

    @Test("confidential client must authenticate here too (RFC 8628 §3.1)")
    func confidentialClient() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            expectOAuthError(try await client.postForm("/oauth/device_authorization", [("client_id", "svc")]), "invalid_client", status: .unauthorized)
            let ok = try await client.postForm(
                "/oauth/device_authorization", [],
                headers: [.authorization: basicAuthorization("svc", confidentialSecret)])
            #expect(ok.status == .ok)
            let post = try await client.postForm("/oauth/device_authorization", [("client_id", "svc"), ("client_secret", confidentialSecret)])
            #expect(post.status == .ok)
            // Only HTTP Basic, no body at all.
            let bare = try await client.execute(
                uri: "/oauth/device_authorization", method: .post,
                headers: [.authorization: basicAuthorization("svc", confidentialSecret)])
            #expect(bare.status == .ok)
        }
    }

    @Test("scopes: outside the allowed set → invalid_scope; none → client default")
    func scopes() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            expectOAuthError(try await client.postForm("/oauth/device_authorization", [("client_id", "cli"), ("scope", "profile wheel")]), "invalid_scope")
            expectOAuthError(try await client.postForm("/oauth/device_authorization", [("client_id", "other-cli"), ("scope", "email")]), "invalid_scope")
            expectOAuthError(try await client.postForm("/oauth/device_authorization", [("client_id", "cli"), ("scope", "pro\"file")]), "invalid_scope")
            // Default scopes reach the verification page and the token.
            let issued = try await client.issue(clientID: "cli")
            let grant = try await fixture.store.lookup(userCode: issued.userCode, caller: "test")
            #expect(grant.scopes == ["profile"])
        }
    }

    @Test(
        "bad requests → 400 invalid_request, never 500",
        arguments: [
            ("application/json", #"{"client_id":"cli"}"#),
            ("application/x-www-form-urlencoded", "scope=profile"),
            ("application/x-www-form-urlencoded", "client_id=cli&client_id=cli"),
            ("application/x-www-form-urlencoded", "client_id=cli&scope=profile&scope=email"),
            ("application/x-www-form-urlencoded", "client_id=%E0%A4%A"),
            ("text/plain", "client_id=cli"),
            ("", "client_id=cli"),
        ])
    func invalidRequests(contentType: String, body: String) async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            var headers: HTTPFields = [:]
            if !contentType.isEmpty { headers[.contentType] = contentType }
            let response = try await client.execute(uri: "/oauth/device_authorization", method: .post, headers: headers, body: ByteBuffer(string: body))
            expectOAuthError(response, "invalid_request")
        }
    }

    @Test("oversized body → 413 with an RFC body")
    func oversized() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let body = "client_id=cli&scope=" + String(repeating: "a", count: 20_000)
            let response = try await client.execute(
                uri: "/oauth/device_authorization", method: .post,
                headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: body))
            expectOAuthError(response, "invalid_request", status: .contentTooLarge)
            let token = try await client.execute(
                uri: "/oauth/token", method: .post,
                headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: body))
            expectOAuthError(token, "invalid_request", status: .contentTooLarge)
        }
    }

    @Test("GET on an OAuth endpoint → 405 with an RFC body")
    func wrongMethod() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let response = try await client.execute(uri: "/oauth/token", method: .get)
            expectOAuthError(response, "invalid_request", status: .methodNotAllowed)
        }
    }
}
