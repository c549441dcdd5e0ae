import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import NIOCore
import RedisClient
import Testing

/// Refresh tokens (RFC 6749 §6) black-box, on two live nodes sharing one Redis: rotation, reuse
/// detection (RFC 9700 §4.14), racing refreshes, scope narrowing, client binding, lifetimes, and
/// what Redis holds.
@Suite("Refresh tokens")
struct RefreshTokenTests {
    /// Two nodes on one Redis with one key prefix and one signing key.
    static func twoNodes() async throws -> (HTTPFixture, HTTPFixture) {
        let prefix = HTTPFixture.uniquePrefix()
        let pem = ES256PrivateKey().pemRepresentation
        return (try await HTTPFixture(keyPrefix: prefix, signingKeyPEM: pem), try await HTTPFixture(keyPrefix: prefix, signingKeyPEM: pem))
    }

    @Test("device flow through the page returns a refresh token; refresh rotates on the other node; the old token then revokes the family")
    func flowAndRotation() async throws {
        let (nodeA, nodeB) = try await Self.twoNodes()
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.live) { a in
            try await nodeB.app.test(.live) { b in
                let grant = try await a.issue(clientID: "rt", scope: "profile email")
                let browser = Browser()
                try await browser.logIn(b)
                let page = try await browser.lookup(b, grant.userCode)
                #expect(try await browser.decide(b, "approve", on: page).status == .ok)
                let first = try await a.poll(deviceCode: grant.deviceCode, clientID: "rt")
                #expect(first.status == .ok)
                let token1 = try #require(first.json["refresh_token"] as? String, "no refresh_token in \(first.text)")
                #expect(first.json["scope"] as? String == "profile email")

                // The access token names its family (sid), and B verifies it.
                let keys = try await JWTKeyCollection().add(jwksJSON: try await b.execute(uri: "/.well-known/jwks.json", method: .get).text)
                let claims = try await keys.verify(try #require(first.json["access_token"] as? String), as: JWTTokenIssuer.Claims.self)
                let familyID = try #require(claims.sid)
                #expect(token1.hasPrefix(familyID + "."))

                let reusesBefore = try await Self.counter("deviceauth_refresh_reuse_detected_total", b)
                let second = try await b.refresh(token1, clientID: "rt")
                #expect(second.status == .ok, "\(second.text)")
                let token2 = try #require(second.json["refresh_token"] as? String)
                #expect(token2 != token1)
                #expect(second.json["token_type"] as? String == "Bearer")
                #expect(second.headers[.cacheControl] == "no-store")
                let refreshed = try await keys.verify(try #require(second.json["access_token"] as? String), as: JWTTokenIssuer.Claims.self)
                #expect(refreshed.sub.value == "alice")
                #expect(refreshed.sid == familyID)
                #expect(refreshed.jti.value != claims.jti.value)

                // The newest token works (and rotates again)…
                let third = try await a.refresh(token2, clientID: "rt")
                #expect(third.status == .ok)
                let token3 = try #require(third.json["refresh_token"] as? String)
                // …the rotated one is refused and revokes the family: the newest now fails too.
                expectOAuthError(try await b.refresh(token1, clientID: "rt"), "invalid_grant")
                expectOAuthError(try await a.refresh(token3, clientID: "rt"), "invalid_grant")
                expectOAuthError(try await b.refresh(token2, clientID: "rt"), "invalid_grant")
                #expect(try await nodeA.keys("{r\(familyID)}:f").isEmpty)
                // At least one: the counter is process-wide, and other suites running beside this one
                // (revocation races, the store's tests) detect reuses of their own meanwhile.
                #expect(try await Self.counter("deviceauth_refresh_reuse_detected_total", b) >= reusesBefore + 1)
            }
        }
    }

    @Test("50 concurrent refreshes of one token across both nodes: one new pair, 49 invalid_grant, family then revoked (10 rounds)")
    func racingRefreshes() async throws {
        let (nodeA, nodeB) = try await Self.twoNodes()
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.live) { a in
            try await nodeB.app.test(.live) { b in
                for round in 0..<10 {
                    let token = try await Self.redeem(a, nodeA, clientID: "rt")
                    let answers = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String?, String?).self) { group in
                        for index in 0..<50 {
                            group.addTask {
                                let response = try await (index.isMultiple(of: 2) ? a : b).refresh(token, clientID: "rt")
                                return (response.status, response.oauthError, response.json["refresh_token"] as? String)
                            }
                        }
                        return try await group.reduce(into: []) { $0.append($1) }
                    }
                    let winners = answers.filter { $0.0 == .ok }
                    #expect(winners.count == 1, "round \(round): \(answers.map(\.0))")
                    #expect(answers.filter { $0.0 == .badRequest && $0.1 == "invalid_grant" }.count == 49, "round \(round)")
                    // The losers presented a rotated token: reuse, so the winner's token is dead too.
                    if let newToken = winners.first?.2 {
                        expectOAuthError(try await a.refresh(newToken, clientID: "rt"), "invalid_grant")
                    }
                }
            }
        }
    }

    @Test("offline_access asks for a refresh token; without it (and without the client setting) there is none")
    func offlineAccess() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let plain = try await Self.redeemResponse(client, node, clientID: "offline", scope: "profile")
            #expect(plain.status == .ok)
            #expect(plain.json["refresh_token"] == nil)
            let offline = try await Self.redeemResponse(client, node, clientID: "offline", scope: "profile offline_access")
            let token = try #require(offline.json["refresh_token"] as? String)
            let refreshed = try await client.refresh(token, clientID: "offline", scope: "profile")
            #expect(refreshed.status == .ok)
            #expect(refreshed.json["scope"] as? String == "profile")
            // Device-flow clients without either get none, as before.
            let cli = try await Self.redeemResponse(client, node, clientID: "fast", scope: "profile")
            #expect(cli.json["refresh_token"] == nil)
        }
    }

    @Test("scope: narrowing on refresh works, the family keeps its scopes; widening is invalid_scope and changes nothing")
    func scopes() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let token = try await Self.redeem(client, node, clientID: "rt", scope: "profile email")
            let narrowed = try await client.refresh(token, clientID: "rt", scope: "email")
            #expect(narrowed.status == .ok)
            #expect(narrowed.json["scope"] as? String == "email")
            // RFC 6749 §6: the new refresh token has the family's scope, so both may be asked for again.
            let again = try await client.refresh(try #require(narrowed.json["refresh_token"] as? String), clientID: "rt", scope: "profile email")
            #expect(again.status == .ok)
            #expect(again.json["scope"] as? String == "profile email")
            let current = try #require(again.json["refresh_token"] as? String)

            let small = try await Self.redeem(client, node, clientID: "rt", scope: "profile")
            // Allowed for the client but not granted: widening.
            expectOAuthError(try await client.refresh(small, clientID: "rt", scope: "profile email"), "invalid_scope")
            expectOAuthError(try await client.refresh(small, clientID: "rt", scope: "offline_access"), "invalid_scope")
            // Not even allowed for the client, and malformed.
            expectOAuthError(try await client.refresh(small, clientID: "rt", scope: "admin"), "invalid_scope")
            expectOAuthError(try await client.refresh(small, clientID: "rt", scope: "pro\"file"), "invalid_scope")
            // Nothing changed: the token still rotates, with its own scope.
            let still = try await client.refresh(small, clientID: "rt")
            #expect(still.status == .ok)
            #expect(still.json["scope"] as? String == "profile")
            #expect(try await client.refresh(current, clientID: "rt").status == .ok)
        }
    }

    @Test("a refresh token of one client is refused for another, and stays good for its own")
    func clientBinding() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let token = try await Self.redeem(client, node, clientID: "rt")
            expectOAuthError(try await client.refresh(token, clientID: "rt-other"), "invalid_grant")
            expectOAuthError(try await client.refresh(token, clientID: "offline"), "invalid_grant")
            #expect(try await client.refresh(token, clientID: "rt").status == .ok)

            // A confidential client authenticates on refresh as on redemption.
            let svcToken = try await Self.redeem(client, node, clientID: "rt-svc", headers: [.authorization: basicAuthorization("rt-svc", confidentialSecret)])
            expectOAuthError(try await client.refresh(svcToken, clientID: "rt-svc"), "invalid_client", status: .unauthorized)
            expectOAuthError(
                try await client.refresh(svcToken, clientID: "rt-svc", headers: [.authorization: basicAuthorization("rt-svc", "wrong")]),
                "invalid_client", status: .unauthorized)
            let good = try await client.refresh(svcToken, clientID: "rt-svc", headers: [.authorization: basicAuthorization("rt-svc", confidentialSecret)])
            #expect(good.status == .ok)
        }
    }

    @Test("hostile refresh tokens get invalid_grant (never 500), and a forged one with a real family id revokes nothing")
    func hostileTokens() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let token = try await Self.redeem(client, node, clientID: "rt")
            let familyID = String(token.prefix(16))
            let parts = token.split(separator: ".")
            let hostile = [
                "", "x", String(repeating: "A", count: 10_000), "\u{0}", "../../etc/passwd", "ǅ" + token.dropFirst(),
                familyID + "." + String(repeating: "A", count: 43) + "." + String(repeating: "A", count: 22),  // right shape, no MAC
                "\(parts[0]).\(parts[1]).\(String(repeating: "B", count: 22))",  // real family, wrong MAC
                token + ".", token.uppercased(), familyID,
            ]
            for bad in hostile {
                let response = try await client.refresh(bad, clientID: "rt")
                if bad.isEmpty {
                    expectOAuthError(response, "invalid_request")
                } else {
                    expectOAuthError(response, "invalid_grant")
                }
            }
            expectOAuthError(try await client.postForm("/oauth/token", [("grant_type", "refresh_token"), ("client_id", "rt")]), "invalid_request")
            expectOAuthError(try await client.postForm("/oauth/token", [("grant_type", "password"), ("client_id", "rt")]), "unsupported_grant_type")
            // None of them was taken for a reuse: the real token still rotates.
            #expect(try await client.refresh(token, clientID: "rt").status == .ok)
        }
    }

    @Test("idle and absolute lifetimes are the family record's TTL (Redis PTTL), and an idle token dies by TTL")
    func lifetimes() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            // Default: 14 days idle, 90 days absolute.
            let long = try await Self.redeem(client, node, clientID: "rt")
            let longTTL = try await node.redis.send("PTTL", try #require(node.routes.refreshTokens.familyKey(forToken: long))).int ?? -9
            #expect(longTTL > 13 * 86_400_000 && longTTL <= 14 * 86_400_000, "PTTL \(longTTL)")

            // Absolute 3 s caps the 14-day idle lifetime.
            let capped = try await Self.redeem(client, node, clientID: "rt-abs")
            let cappedTTL = try await node.redis.send("PTTL", try #require(node.routes.refreshTokens.familyKey(forToken: capped))).int ?? -9
            #expect(cappedTTL > 0 && cappedTTL <= 3000, "PTTL \(cappedTTL)")

            // Idle 5 s: each rotation sets the TTL again; unused, the token is gone.
            let idle = try await Self.redeem(client, node, clientID: "rt-idle")
            let key = try #require(node.routes.refreshTokens.familyKey(forToken: idle))
            let idleTTL = try await node.redis.send("PTTL", key).int ?? -9
            #expect(idleTTL > 0 && idleTTL <= 5000, "PTTL \(idleTTL)")
            let rotated = try await client.refresh(idle, clientID: "rt-idle")
            let next = try #require(rotated.json["refresh_token"] as? String)
            #expect((try await node.redis.send("PTTL", key).int ?? -9) > 0)
            // Wait for Redis to expire it (a hang guard of 20 s, not a timing assertion).
            var gone = false
            for _ in 0..<200 where !gone {
                try await Task.sleep(for: .milliseconds(100))
                gone = (try await node.redis.send("PTTL", key).int ?? 0) == -2
            }
            #expect(gone)
            expectOAuthError(try await client.refresh(next, clientID: "rt-idle"), "invalid_grant")
        }
    }

    @Test("Redis holds no refresh token: every key and value of the prefix is searched for the tokens and their random parts")
    func nothingPlaintextInRedis() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            var tokens: [String] = []
            let first = try await Self.redeem(client, node, clientID: "rt", scope: "profile email")
            tokens.append(first)
            let second = try #require(try await client.refresh(first, clientID: "rt").json["refresh_token"] as? String)
            tokens.append(second)
            tokens.append(try await Self.redeem(client, node, clientID: "offline", scope: "profile offline_access"))
            var dump = ""
            for key in try await node.keys("*") {
                dump += key + "\n"
                switch try await node.redis.send("TYPE", key).string {
                case "hash":
                    dump += (try await node.redis.send("HGETALL", key).array ?? []).compactMap(\.string).joined(separator: "\n")
                case "string":
                    dump += try await node.redis.send("GET", key).string ?? ""
                default:
                    break
                }
                dump += "\n"
            }
            #expect(dump.contains(":{r"), "no family records found: \(dump.prefix(200))")
            for token in tokens {
                let parts = token.split(separator: ".")
                #expect(!dump.contains(token))
                #expect(!dump.contains(String(parts[1])), "the token's random part is in Redis")
                #expect(!dump.contains(String(parts[2])), "the token's MAC is in Redis")
            }
        }
    }

    // MARK: - Helpers

    /// Issues, approves (as alice, on the store) and redeems a grant; the token answer.
    static func redeemResponse(
        _ client: some TestClientProtocol, _ node: HTTPFixture, clientID: String, scope: String? = nil,
        headers: HTTPFields = [:]
    ) async throws -> TestResponse {
        let grant = try await client.issue(clientID: clientID, scope: scope, headers: headers)
        try await node.store.approve(userCode: grant.userCode, userID: "alice")
        let response = try await client.poll(deviceCode: grant.deviceCode, clientID: clientID, headers: headers)
        try #require(response.status == .ok, "redemption answered \(response.status): \(response.text)")
        return response
    }

    /// The refresh token of a freshly redeemed grant.
    static func redeem(
        _ client: some TestClientProtocol, _ node: HTTPFixture, clientID: String, scope: String? = nil,
        headers: HTTPFields = [:]
    ) async throws -> String {
        let response = try await redeemResponse(client, node, clientID: clientID, scope: scope, headers: headers)
        return try #require(response.json["refresh_token"] as? String, "no refresh_token in \(response.text)")
    }

    /// A counter's value on `/metrics`.
    static func counter(_ name: String, _ client: some TestClientProtocol) async throws -> Int {
        let text = try await client.execute(uri: "/metrics", method: .get).text
        let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return Int(Double(line?.split(separator: " ").last ?? "0") ?? 0)
    }
}

extension TestClientProtocol {
    /// `grant_type=refresh_token`.
    func refresh(_ token: String, clientID: String, scope: String? = nil, headers: HTTPFields = [:]) async throws -> TestResponse {
        var form = [("grant_type", "refresh_token"), ("refresh_token", token)]
        if headers[.authorization] == nil { form.append(("client_id", clientID)) }
        if let scope { form.append(("scope", scope)) }
        return try await postForm("/oauth/token", form, headers: headers)
    }
}
