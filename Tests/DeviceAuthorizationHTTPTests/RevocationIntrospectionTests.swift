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

/// RFC 7009 revocation and RFC 7662 introspection, black-box on two live nodes sharing one Redis.
@Suite("Revocation and introspection")
struct RevocationIntrospectionTests {
    static let resourceServer: HTTPFields = [.authorization: basicAuthorization("svc", confidentialSecret)]

    @Test("revoking a refresh token on B revokes its family: refreshes on A fail, its access tokens introspect inactive")
    func revokeRefreshToken() async throws {
        let (nodeA, nodeB) = try await RefreshTokenTests.twoNodes()
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.live) { a in
            try await nodeB.app.test(.live) { b in
                let first = try await RefreshTokenTests.redeemResponse(a, nodeA, clientID: "rt", scope: "profile email")
                let access1 = try #require(first.json["access_token"] as? String)
                let refreshed = try await a.refresh(try #require(first.json["refresh_token"] as? String), clientID: "rt")
                let access2 = try #require(refreshed.json["access_token"] as? String)
                let token = try #require(refreshed.json["refresh_token"] as? String)

                // Live: the RFC 7662 fields.
                let live = try await b.introspect(access2)
                #expect(live.status == .ok)
                #expect(live.json["active"] as? Bool == true)
                #expect(live.json["client_id"] as? String == "rt")
                #expect(live.json["sub"] as? String == "alice")
                #expect(live.json["scope"] as? String == "profile email")
                #expect(live.json["token_type"] as? String == "Bearer")
                #expect(live.json["exp"] is Int && live.json["iat"] is Int && live.json["jti"] is String)
                let liveRefresh = try await b.introspect(token)
                #expect(liveRefresh.json["active"] as? Bool == true)
                #expect(liveRefresh.json["token_type"] as? String == "refresh_token")
                #expect(liveRefresh.json["client_id"] as? String == "rt")
                #expect((liveRefresh.json["exp"] as? Int ?? 0) > Int(Date().timeIntervalSince1970) + 13 * 86_400)

                let revoked = try await b.postForm("/oauth/revoke", [("token", token), ("token_type_hint", "refresh_token"), ("client_id", "rt")])
                #expect(revoked.status == .ok)
                #expect(revoked.headers[.cacheControl] == "no-store")
                expectOAuthError(try await a.refresh(token, clientID: "rt"), "invalid_grant")
                for inactive in [token, access1, access2] {
                    let answer = try await a.introspect(inactive)
                    #expect(answer.status == .ok)
                    #expect(answer.json.count == 1 && answer.json["active"] as? Bool == false, "\(answer.text)")
                }
                // Revoking again, or an unknown token, is 200 all the same (RFC 7009 §2.2).
                #expect(try await a.postForm("/oauth/revoke", [("token", token), ("client_id", "rt")]).status == .ok)
            }
        }
    }

    @Test("a rotated refresh token revokes the family at /oauth/revoke too; introspecting a rotated token revokes nothing")
    func rotatedTokens() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let old = try await RefreshTokenTests.redeem(client, node, clientID: "rt")
            let current = try #require(try await client.refresh(old, clientID: "rt").json["refresh_token"] as? String)
            #expect(try await client.introspect(old).json["active"] as? Bool == false)
            #expect(try await client.introspect(current).json["active"] as? Bool == true)
            #expect(try await client.refresh(current, clientID: "rt").status == .ok, "introspection must not count as reuse")

            let old2 = try await RefreshTokenTests.redeem(client, node, clientID: "rt")
            let current2 = try #require(try await client.refresh(old2, clientID: "rt").json["refresh_token"] as? String)
            #expect(try await client.postForm("/oauth/revoke", [("token", old2), ("client_id", "rt")]).status == .ok)
            expectOAuthError(try await client.refresh(current2, clientID: "rt"), "invalid_grant")
        }
    }

    @Test("revoking an access token denylists its jti until exp (Redis TTL); other tokens stay active")
    func revokeAccessToken() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let plain = try #require(try await RefreshTokenTests.redeemResponse(client, node, clientID: "fast").json["access_token"] as? String)
            let other = try #require(try await RefreshTokenTests.redeemResponse(client, node, clientID: "fast").json["access_token"] as? String)
            let family = try await RefreshTokenTests.redeemResponse(client, node, clientID: "rt")
            let familyAccess = try #require(family.json["access_token"] as? String)
            #expect(try await client.introspect(plain).json["active"] as? Bool == true)

            #expect(try await client.postForm("/oauth/revoke", [("token", plain), ("token_type_hint", "access_token"), ("client_id", "fast")]).status == .ok)
            #expect(try await client.introspect(plain).json["active"] as? Bool == false)
            #expect(try await client.introspect(other).json["active"] as? Bool == true)
            let denylists = try await node.keys("{x*}:x:*")
            #expect(denylists.count == 1)
            let ttl = try await node.redis.send("PTTL", try #require(denylists.first)).int ?? -9
            #expect(ttl > 3_500_000 && ttl <= 3_662_000, "the entry lives until exp + 60 s: PTTL \(ttl)")

            // An access token of a family: denylisted with the family; the refresh token still works.
            #expect(try await client.postForm("/oauth/revoke", [("token", familyAccess), ("client_id", "rt")]).status == .ok)
            #expect(try await client.introspect(familyAccess).json["active"] as? Bool == false)
            #expect(try await client.refresh(try #require(family.json["refresh_token"] as? String), clientID: "rt").status == .ok)
        }
    }

    @Test("revocation: another client's token is refused and kept; unknown and hostile tokens get 200; a missing token is invalid_request")
    func revocationErrors() async throws {
        let node = try await HTTPFixture()
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let family = try await RefreshTokenTests.redeemResponse(client, node, clientID: "rt")
            let refresh = try #require(family.json["refresh_token"] as? String)
            let access = try #require(family.json["access_token"] as? String)
            expectOAuthError(try await client.postForm("/oauth/revoke", [("token", refresh), ("client_id", "rt-other")]), "unauthorized_client")
            expectOAuthError(try await client.postForm("/oauth/revoke", [("token", access), ("client_id", "rt-other")]), "unauthorized_client")
            #expect(try await client.introspect(access).json["active"] as? Bool == true)
            #expect(try await client.introspect(refresh).json["active"] as? Bool == true)

            for hostile in ["x", String(repeating: "A", count: 9000), "\u{0}\u{FFFF}", "a.b.c", refresh.uppercased(), access + "x"] {
                #expect(try await client.postForm("/oauth/revoke", [("token", hostile), ("client_id", "rt")]).status == .ok)
            }
            expectOAuthError(try await client.postForm("/oauth/revoke", [("client_id", "rt")]), "invalid_request")
            expectOAuthError(try await client.postForm("/oauth/revoke", [("token", refresh)]), "invalid_request")
            expectOAuthError(try await client.postForm("/oauth/revoke", [("token", refresh), ("client_id", "nobody")]), "invalid_client", status: .unauthorized)
            expectOAuthError(try await client.postForm("/oauth/revoke", [("token", refresh), ("client_id", "svc")]), "invalid_client", status: .unauthorized)
            #expect(try await client.refresh(refresh, clientID: "rt").status == .ok)
        }
    }

    @Test("introspection: only confidential clients; expired, forged and unknown tokens are {active: false}")
    func introspectionRules() async throws {
        let pem = ES256PrivateKey().pemRepresentation
        let node = try await HTTPFixture(signingKeyPEM: pem)
        defer { node.shutdown() }
        try await node.app.test(.router) { client in
            let family = try await RefreshTokenTests.redeemResponse(client, node, clientID: "rt")
            let access = try #require(family.json["access_token"] as? String)
            expectOAuthError(try await client.postForm("/oauth/introspect", [("token", access), ("client_id", "rt")]), "invalid_client", status: .unauthorized)
            expectOAuthError(
                try await client.postForm("/oauth/introspect", [("token", access)], headers: [.authorization: basicAuthorization("svc", "wrong")]),
                "invalid_client", status: .unauthorized)
            expectOAuthError(try await client.postForm("/oauth/introspect", [], headers: Self.resourceServer), "invalid_request")

            let expiredIssuer = try await JWTTokenIssuer(issuer: "https://auth.test", privateKeyPEM: pem, lifetime: .seconds(-5))
            let expired = try await expiredIssuer.issueToken(for: TokenRequest(userID: "alice", clientID: "rt", scopes: [], grantID: "g")).accessToken
            let strangerIssuer = try await JWTTokenIssuer(issuer: "https://auth.test", privateKeyPEM: nil)
            let forged = try await strangerIssuer.issueToken(for: TokenRequest(userID: "mallory", clientID: "rt", scopes: [], grantID: "g")).accessToken
            let otherIssuer = try await JWTTokenIssuer(issuer: "https://elsewhere.test", privateKeyPEM: pem)
            let foreign = try await otherIssuer.issueToken(for: TokenRequest(userID: "alice", clientID: "rt", scopes: [], grantID: "g")).accessToken
            for inactive in [expired, forged, foreign, "x", String(repeating: "A", count: 9000), "a.b.c"] {
                let answer = try await client.introspect(inactive)
                #expect(answer.status == .ok)
                #expect(answer.json.count == 1 && answer.json["active"] as? Bool == false, "\(answer.text)")
            }
            #expect(try await client.introspect(access).json["active"] as? Bool == true)
        }
    }

    @Test("a revocation racing 40 refreshes of the family across two nodes: afterwards no refresh token of it works (10 rounds)")
    func revocationRacesRefreshes() async throws {
        let (nodeA, nodeB) = try await RefreshTokenTests.twoNodes()
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.live) { a in
            try await nodeB.app.test(.live) { b in
                for _ in 0..<10 {
                    let token = try await RefreshTokenTests.redeem(a, nodeA, clientID: "rt")
                    let issued = try await withThrowingTaskGroup(of: [String].self) { group in
                        // A chain of refreshes on each node (each uses the token it got last).
                        for node in [a, b] {
                            group.addTask {
                                var current = token
                                var seen: [String] = []
                                for _ in 0..<20 {
                                    let response = try await node.refresh(current, clientID: "rt")
                                    guard let next = response.json["refresh_token"] as? String else { break }
                                    seen.append(next)
                                    current = next
                                }
                                return seen
                            }
                        }
                        group.addTask {
                            let revoked = try await b.postForm("/oauth/revoke", [("token", token), ("client_id", "rt")])
                            #expect(revoked.status == .ok)
                            return []
                        }
                        return try await group.reduce(into: []) { $0 += $1 }
                    }
                    for newToken in issued {
                        expectOAuthError(try await a.refresh(newToken, clientID: "rt"), "invalid_grant")
                    }
                }
            }
        }
    }
}

extension TestClientProtocol {
    /// `POST /oauth/introspect` as the confidential test client `svc`.
    func introspect(_ token: String) async throws -> TestResponse {
        try await postForm("/oauth/introspect", [("token", token)], headers: RevocationIntrospectionTests.resourceServer)
    }
}
