import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import NIOCore
import Testing

@Suite("POST /oauth/token")
struct TokenEndpointTests {
    @Test("pending, then slow_down with the new interval")
    func pendingThenSlowDown() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let deviceCode = try await client.issue().deviceCode
            expectOAuthError(try await client.poll(deviceCode: deviceCode), "authorization_pending")
            let fast = try await client.poll(deviceCode: deviceCode)
            expectOAuthError(fast, "slow_down")
            #expect(fast.json["interval"] as? Int == 10)
        }
    }

    @Test("denied → access_denied")
    func denied() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            try await fixture.store.deny(userCode: issued.userCode)
            expectOAuthError(try await client.poll(deviceCode: issued.deviceCode, clientID: "fast"), "access_denied")
        }
    }

    @Test("short per-client lifetime → expired_token")
    func expired() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let deviceCode = try await client.issue(clientID: "short").deviceCode
            try await Task.sleep(for: .milliseconds(1_200))
            expectOAuthError(try await client.poll(deviceCode: deviceCode, clientID: "short"), "expired_token")
        }
    }

    @Test("invalid_grant: unknown code, another client's code, a redeemed code from another address; the device's own address gets the same token again")
    func invalidGrant() async throws {
        let fixture = try await HTTPFixture(trustedProxies: ["127.0.0.1", "::1"])
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            expectOAuthError(try await client.poll(deviceCode: "not-a-device-code"), "invalid_grant")
            expectOAuthError(try await client.poll(deviceCode: "abcd." + String(repeating: "A", count: 43)), "invalid_grant")

            let issued = try await client.issue(clientID: "fast")
            let deviceCode = issued.deviceCode
            expectOAuthError(try await client.poll(deviceCode: deviceCode, clientID: "other-cli"), "invalid_grant")

            try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
            let device: HTTPFields = [.xForwardedForTest: "198.51.100.20"]
            let success = try await client.poll(deviceCode: deviceCode, clientID: "fast", headers: device)
            #expect(success.status == .ok)
            let token = try #require(success.json["access_token"] as? String)
            // The device polls again (its answer was lost): the same token, not a second one.
            let again = try await client.poll(deviceCode: deviceCode, clientID: "fast", headers: device)
            #expect(again.status == .ok && again.json["access_token"] as? String == token)
            #expect(again.headers[.cacheControl] == "no-store")
            // Anyone else with the code: a replay.
            let replay = try await client.poll(deviceCode: deviceCode, clientID: "fast", headers: [.xForwardedForTest: "203.0.113.50"])
            expectOAuthError(replay, "invalid_grant")
            #expect(replay.json["error_description"] as? String == "the device code was already used")
            expectOAuthError(try await client.poll(deviceCode: deviceCode, clientID: "other-cli", headers: device), "invalid_grant")
        }
    }

    @Test("grant_type: missing → invalid_request; other → unsupported_grant_type; device_code missing → invalid_request")
    func grantType() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            expectOAuthError(try await client.postForm("/oauth/token", [("client_id", "cli"), ("device_code", "x")]), "invalid_request")
            expectOAuthError(
                try await client.postForm("/oauth/token", [("grant_type", "authorization_code"), ("client_id", "cli"), ("code", "x")]),
                "unsupported_grant_type")
            expectOAuthError(
                try await client.postForm("/oauth/token", [("grant_type", DeviceAuthorizationRoutes.deviceCodeGrantType), ("client_id", "cli")]),
                "invalid_request")
            expectOAuthError(
                try await client.postForm(
                    "/oauth/token",
                    [
                        ("grant_type", DeviceAuthorizationRoutes.deviceCodeGrantType), ("device_code", "x"),
                        ("device_code", "y"), ("client_id", "cli"),
                    ]), "invalid_request")
        }
    }

    @Test("client authentication: bad secret by Basic and by form → 401 invalid_client; right secret works both ways")
    func clientAuthentication() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.postForm("/oauth/device_authorization", [("client_id", "svc"), ("client_secret", confidentialSecret)])
            let deviceCode = try #require(issued.json["device_code"] as? String)
            let grant = DeviceAuthorizationRoutes.deviceCodeGrantType

            let badBasic = try await client.postForm(
                "/oauth/token", [("grant_type", grant), ("device_code", deviceCode)],
                headers: [.authorization: basicAuthorization("svc", "wrong")])
            expectOAuthError(badBasic, "invalid_client", status: .unauthorized)
            #expect(badBasic.headers[.wwwAuthenticate] != nil)
            expectOAuthError(
                try await client.postForm("/oauth/token", [("grant_type", grant), ("device_code", deviceCode), ("client_id", "svc"), ("client_secret", "wrong")]),
                "invalid_client", status: .unauthorized)
            expectOAuthError(
                try await client.postForm("/oauth/token", [("grant_type", grant), ("device_code", deviceCode), ("client_id", "svc")]),
                "invalid_client", status: .unauthorized)
            expectOAuthError(
                try await client.postForm("/oauth/token", [("grant_type", grant), ("device_code", deviceCode), ("client_id", "nobody")]),
                "invalid_client", status: .unauthorized)
            // Two methods at once is a malformed request.
            expectOAuthError(
                try await client.postForm(
                    "/oauth/token", [("grant_type", grant), ("device_code", deviceCode), ("client_secret", confidentialSecret)],
                    headers: [.authorization: basicAuthorization("svc", confidentialSecret)]), "invalid_request")

            let basic = try await client.postForm(
                "/oauth/token", [("grant_type", grant), ("device_code", deviceCode)],
                headers: [.authorization: basicAuthorization("svc", confidentialSecret)])
            expectOAuthError(basic, "authorization_pending")
        }
    }

    @Test("success: a Bearer JWT whose claims verify with the JWKS key; exactly one token per grant")
    func successWithVerifiableJWT() async throws {
        let fixture = try await HTTPFixture()
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast", scope: "email profile")
            try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
            let deviceCode = issued.deviceCode

            let results = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                for _ in 0..<8 { group.addTask { try await client.poll(deviceCode: deviceCode, clientID: "fast") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let successes = results.filter { $0.status == .ok }
            // All from one address: each gets the one token of the grant (a device retrying).
            #expect(successes.count == 8)
            #expect(Set(successes.compactMap { $0.json["access_token"] as? String }).count == 1, "concurrent polls of an approved code must give one token")
            let response = try #require(successes.first)
            #expect(response.headers[.cacheControl] == "no-store")
            let body = response.json
            #expect(body["token_type"] as? String == "Bearer")
            #expect(body["expires_in"] as? Int == 3600)
            #expect(body["scope"] as? String == "email profile")
            let token = try #require(body["access_token"] as? String)

            let jwks = try await client.execute(uri: "/.well-known/jwks.json", method: .get)
            #expect(jwks.status == .ok)
            let keys = try await JWTKeyCollection().add(jwksJSON: jwks.text)
            let claims = try await keys.verify(token, as: JWTTokenIssuer.Claims.self)
            #expect(claims.sub.value == "alice")
            #expect(claims.clientID == "fast")
            #expect(claims.scope == "email profile")
            #expect(claims.iss.value == "https://auth.test")
            #expect(!claims.jti.value.isEmpty)
            #expect(claims.exp.value > claims.iat.value)
            // NumericDate values are whole seconds; header names the key and the token type.
            let parts = token.split(separator: ".")
            let payload = try #require(try JSONSerialization.jsonObject(with: base64URLDecode(parts[1])) as? [String: Any])
            #expect(payload["exp"].map { "\($0)" }?.contains(".") == false)
            #expect(payload["iat"].map { "\($0)" }?.contains(".") == false)
            let header = try #require(try JSONSerialization.jsonObject(with: base64URLDecode(parts[0])) as? [String: Any])
            #expect(header["alg"] as? String == "ES256")
            #expect(header["kid"] is String)

            // A token from another key does not verify.
            let stranger = try await JWTTokenIssuer(issuer: "https://auth.test", privateKeyPEM: nil)
            let forged = try await stranger.issueToken(for: TokenRequest(userID: "mallory", clientID: "fast", scopes: [], grantID: "x"))
            await #expect(throws: (any Error).self) { _ = try await keys.verify(forged.accessToken, as: JWTTokenIssuer.Claims.self) }
        }
    }
}

func base64URLDecode(_ text: Substring) -> Data {
    var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while base64.count % 4 != 0 { base64.append("=") }
    return Data(base64Encoded: base64) ?? Data()
}
