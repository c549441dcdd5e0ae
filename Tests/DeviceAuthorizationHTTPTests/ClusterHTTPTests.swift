import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import RedisClient
import Testing

/// The HTTP routes on the Redis Cluster of `make test-cluster` (Tests/Support/with-redis-cluster.sh):
/// the same answers as on one Redis, with grants, user-code indexes and rate-limit counters spread
/// over three primaries.
@Suite(
    "HTTP routes on a Redis Cluster",
    .enabled(
        if: ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"] != nil || ProcessInfo.processInfo.environment["DEVICEAUTH_REQUIRE_CLUSTER"] == "1",
        "REDIS_CLUSTER_URL is not set: the Redis Cluster suites run with `make test-cluster` (Tests/Support/with-redis-cluster.sh)"))
struct ClusterHTTPTests {
    static func clusterURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"] else {
            throw RedisError(.invalidURL, "REDIS_CLUSTER_URL is not set but DEVICEAUTH_REQUIRE_CLUSTER=1: run `make test-cluster`")
        }
        return url
    }

    @Test("the whole flow through the HTML forms, readiness, and replay, on the cluster")
    func flowThroughForms() async throws {
        let fixture = try await HTTPFixture(redisURL: try Self.clusterURL())
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client async throws -> Void in
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok, "PING reaches a primary")
            let issued = try await client.issue(clientID: "fast", scope: "profile")
            let deviceCode = issued.deviceCode
            let userCode = issued.userCode
            expectOAuthError(try await client.poll(deviceCode: deviceCode, clientID: "fast"), "authorization_pending")

            let browser = Browser()
            try await browser.logIn(client)
            let confirm = try await browser.lookup(client, "\(userCode)")
            #expect(confirm.status == .ok)
            #expect(confirm.text.contains("Fast poller"))
            let approved = try await browser.decide(client, "approve", on: confirm)
            #expect(approved.text.contains("Device connected"))

            let token = try await client.poll(deviceCode: deviceCode, clientID: "fast")
            #expect(token.status == .ok)
            let keys = try await JWTKeyCollection().add(jwksJSON: try await client.execute(uri: "/.well-known/jwks.json", method: .get).text)
            let claims = try await keys.verify(try #require(token.json["access_token"] as? String), as: JWTTokenIssuer.Claims.self)
            #expect(claims.sub.value == "alice")
            expectSameToken(try await client.poll(deviceCode: deviceCode, clientID: "fast"), as: token)
            expectOAuthError(try await client.poll(deviceCode: deviceCode, clientID: "other-cli"), "invalid_grant")
            #expect(try await browser.lookup(client, "\(userCode)").status == .conflict, "already used")
        }
    }

    @Test("40 devices approved and redeemed concurrently across the primaries: 40 tokens, each polled again gets its own token back, replays from elsewhere refused")
    func manyGrants() async throws {
        // The default 30 device authorizations a minute per address would stop a single test client.
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"], redisURL: try Self.clusterURL(),
            rateLimits: RateLimitSettings(deviceAuthorizationsPerIP: nil, deviceAuthorizationsPerClient: nil))
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client async throws -> Void in
            let issued = try await withThrowingTaskGroup(of: (String, String).self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        let answer = try await client.issue(clientID: "fast")
                        return (answer.deviceCode, answer.userCode)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // What the cluster holds: the 40 grant records, spread over every primary (KEYS on each).
            var perPrimary: [Int] = []
            for (node, result) in await fixture.redis.sendToEachPrimary(RedisCommand("KEYS", fixture.store.configuration.keyPrefix + ":*:d:*")) {
                perPrimary.append(try #require(try result.get().array, "KEYS on \(node)").count)
            }
            #expect(perPrimary.count == 3)
            #expect(perPrimary.reduce(0, +) == 40)
            #expect(perPrimary.allSatisfy { $0 > 0 }, "40 random hash tags land on every primary: \(perPrimary)")
            for (_, userCode) in issued { try await fixture.store.approve(userCode: userCode, userID: "bob") }
            let answers = try await withThrowingTaskGroup(of: [TestResponse].self) { group in
                for (deviceCode, _) in issued {
                    group.addTask {
                        [
                            try await client.poll(deviceCode: deviceCode, clientID: "fast"),
                            try await client.poll(deviceCode: deviceCode, clientID: "fast"),
                            try await client.poll(deviceCode: deviceCode, clientID: "fast", headers: elsewhere),
                        ]
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0[0].status == .ok && $0[1].text == $0[0].text }, "one token per device, the same when polled again")
            #expect(Set(answers.map { $0[0].text }).count == 40)
            #expect(answers.allSatisfy { $0[2].oauthError == "invalid_grant" }, "each poll from elsewhere is a refused replay")
        }
    }

    @Test("rate limits on the cluster: per-client device authorizations and unknown device codes per IP")
    func rateLimits() async throws {
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"], redisURL: try Self.clusterURL(),
            rateLimits: RateLimitSettings(
                deviceAuthorizationsPerIP: nil, deviceAuthorizationsPerClient: RateLimit(100, per: .seconds(3600)),
                unknownDeviceCodesPerIP: RateLimit(3, per: .seconds(3600))))
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client async throws -> Void in
            // "limited" allows two device authorizations a minute; counted in the cluster, not per node.
            for _ in 0..<2 { _ = try await client.issue(clientID: "limited", headers: RateLimitTests.from("198.51.100.10")) }
            RateLimitTests.expectLimited(
                try await client.postForm(
                    "/oauth/device_authorization", [("client_id", "limited")],
                    headers: RateLimitTests.from("198.51.100.11")))

            let live = try await client.issue(clientID: "fast").deviceCode
            let attacker = RateLimitTests.from("203.0.113.90")
            for letter in ["J", "K", "L"] {
                expectOAuthError(
                    try await client.poll(deviceCode: "abcd." + String(repeating: letter, count: 43), clientID: "fast", headers: attacker),
                    "invalid_grant")
            }
            RateLimitTests.expectLimited(try await client.poll(deviceCode: "abcd." + String(repeating: "M", count: 43), clientID: "fast", headers: attacker))
            RateLimitTests.expectLimited(try await client.poll(deviceCode: live, clientID: "fast", headers: attacker))
            expectOAuthError(try await client.poll(deviceCode: live, clientID: "fast", headers: RateLimitTests.from("203.0.113.91")), "authorization_pending")
        }
    }
}
