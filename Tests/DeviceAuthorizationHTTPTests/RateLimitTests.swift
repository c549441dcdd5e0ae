import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import RedisClient
import Testing

/// Abuse limits, measured through HTTP on a live server (real peer address, trusted proxy, so
/// `X-Forwarded-For` names the client IP) and a real Redis: the N+1-th request is refused, another
/// IP or client is not.
@Suite("Rate limits")
struct RateLimitTests {
    static func from(_ ip: String) -> HTTPFields { [.xForwardedForTest: ip] }

    /// Expects the 429 answer: RFC 6749 body `temporarily_unavailable`, `Retry-After` within the window.
    static func expectLimited(_ response: TestResponse, window: Int = 3600, sourceLocation: SourceLocation = #_sourceLocation) {
        expectOAuthError(response, "temporarily_unavailable", status: .tooManyRequests, sourceLocation: sourceLocation)
        let retryAfter = response.headers[.retryAfter].flatMap(Int.init)
        #expect(
            retryAfter.map { (1...2 * window).contains($0) } == true, "Retry-After: \(response.headers[.retryAfter] ?? "none")",
            sourceLocation: sourceLocation)
    }

    @Test("device authorization per IP: the 4th request of an IP is refused, another IP is not; a flood stores nothing")
    func deviceAuthorizationPerIP() async throws {
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"],
            rateLimits: RateLimitSettings(
                deviceAuthorizationsPerIP: RateLimit(3, per: .seconds(3600)),
                deviceAuthorizationsPerClient: nil))
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            for _ in 0..<3 { _ = try await client.issue(headers: Self.from("203.0.113.10")) }
            Self.expectLimited(try await client.postForm("/oauth/device_authorization", [("client_id", "cli")], headers: Self.from("203.0.113.10")))
            // Another address, and another client from the first address's neighbour, still get codes.
            _ = try await client.issue(headers: Self.from("203.0.113.11"))
            // A flood from the limited address: every answer 429, and Redis holds no more grants.
            var statuses: [HTTPResponse.Status: Int] = [:]
            for _ in 0..<100 {
                statuses[try await client.postForm("/oauth/device_authorization", [("client_id", "cli")], headers: Self.from("203.0.113.10")).status, default: 0] += 1
            }
            #expect(statuses == [.tooManyRequests: 100])
            #expect(try await fixture.keys("*:d:*").count == 4, "3 grants of the limited IP + 1 of the other")
            // IPv6 addresses of one /64 share a bucket.
            for index in 0..<3 { _ = try await client.issue(headers: Self.from("2001:db8:1:2::\(index + 1)")) }
            Self.expectLimited(try await client.postForm("/oauth/device_authorization", [("client_id", "cli")], headers: Self.from("2001:db8:1:2::ffff")))
        }
    }

    @Test("device authorization per client: the 6th request of a client is refused from any IP; other clients are not; per-client override")
    func deviceAuthorizationPerClient() async throws {
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"],
            rateLimits: RateLimitSettings(
                deviceAuthorizationsPerIP: nil,
                deviceAuthorizationsPerClient: RateLimit(5, per: .seconds(3600))))
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            for index in 0..<5 { _ = try await client.issue(clientID: "fast", headers: Self.from("198.51.100.\(index)")) }
            let refused = try await client.postForm("/oauth/device_authorization", [("client_id", "fast")], headers: Self.from("198.51.100.99"))
            Self.expectLimited(refused)
            #expect(refused.json["error_description"] as? String == "too many device authorization requests for this client; retry after \(refused.headers[.retryAfter] ?? "") s")
            _ = try await client.issue(clientID: "cli", headers: Self.from("198.51.100.99"))
            // "limited" has its own, smaller limit (2) instead of the server's 5.
            for _ in 0..<2 { _ = try await client.issue(clientID: "limited", headers: Self.from("198.51.100.1")) }
            Self.expectLimited(try await client.postForm("/oauth/device_authorization", [("client_id", "limited")], headers: Self.from("198.51.100.2")))
            // A refused client authentication is not charged to the client.
            expectOAuthError(try await client.postForm("/oauth/device_authorization", [("client_id", "nobody")]), "invalid_client", status: .unauthorized)
        }
    }

    @Test("Retry-After is honest: after waiting it out, the next request is allowed (sliding window on Redis time)")
    func retryAfterIsHonest() async throws {
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"],
            rateLimits: RateLimitSettings(
                deviceAuthorizationsPerIP: RateLimit(2, per: .seconds(2)),
                deviceAuthorizationsPerClient: nil))
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            // Bursts of 10 at once until one is refused: one burst on any machine (sequential
            // requests on a loaded one could each take longer than the window). The refusal
            // with the longest Retry-After is the one waited out.
            var firstRefused: TestResponse?
            let deadline = ContinuousClock.now + .seconds(60)
            while firstRefused == nil && ContinuousClock.now < deadline {
                let responses = try await withThrowingTaskGroup(of: TestResponse.self) { group in
                    for _ in 0..<10 {
                        group.addTask { try await client.postForm("/oauth/device_authorization", [("client_id", "cli")], headers: Self.from("192.0.2.1")) }
                    }
                    return try await group.reduce(into: [TestResponse]()) { $0.append($1) }
                }
                firstRefused = responses.filter { $0.status != .ok }.max { ($0.headers[.retryAfter].flatMap(Int.init) ?? 0) < ($1.headers[.retryAfter].flatMap(Int.init) ?? 0) }
            }
            let refused = try #require(firstRefused, "never limited")
            Self.expectLimited(refused, window: 2)
            let wait = try #require(refused.headers[.retryAfter].flatMap(Int.init))
            try await Task.sleep(for: .seconds(wait) + .milliseconds(100))
            let allowed = try await client.postForm("/oauth/device_authorization", [("client_id", "cli")], headers: Self.from("192.0.2.1"))
            #expect(allowed.status == .ok, "after Retry-After (\(wait) s): \(allowed.text)")
        }
    }

    @Test("unknown device codes per IP: the 5th is refused, and then even a live code from that IP (no oracle); another IP is not")
    func unknownDeviceCodesPerIP() async throws {
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"],
            rateLimits: RateLimitSettings(
                deviceAuthorizationsPerIP: nil, deviceAuthorizationsPerClient: nil,
                unknownDeviceCodesPerIP: RateLimit(4, per: .seconds(3600))))
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let live = try await client.issue(clientID: "fast").deviceCode
            let attacker = Self.from("203.0.113.66")
            // Well-formed but unknown, malformed, and oversized codes all count.
            let guesses = ["abcd." + String(repeating: "A", count: 43), "not-a-device-code", String(repeating: "x", count: 300), "0000." + String(repeating: "B", count: 43)]
            for guess in guesses {
                expectOAuthError(try await client.poll(deviceCode: guess, clientID: "fast", headers: attacker), "invalid_grant")
            }
            Self.expectLimited(try await client.poll(deviceCode: "beef." + String(repeating: "C", count: 43), clientID: "fast", headers: attacker))
            Self.expectLimited(try await client.poll(deviceCode: live, clientID: "fast", headers: attacker))
            // Another address: its own budget, and the live code still works.
            expectOAuthError(try await client.poll(deviceCode: live, clientID: "fast", headers: Self.from("203.0.113.67")), "authorization_pending")
            expectOAuthError(try await client.poll(deviceCode: "abcd." + String(repeating: "A", count: 43), clientID: "fast", headers: Self.from("203.0.113.67")), "invalid_grant")
            // Polls of live codes do not count: 20 of them from a third address, then still 4 unknown ones allowed.
            let device = Self.from("203.0.113.68")
            for _ in 0..<20 { expectOAuthError(try await client.poll(deviceCode: live, clientID: "fast", headers: device), "authorization_pending") }
            for _ in 0..<4 { expectOAuthError(try await client.poll(deviceCode: "abcd." + String(repeating: "D", count: 43), clientID: "fast", headers: device), "invalid_grant") }
            Self.expectLimited(try await client.poll(deviceCode: live, clientID: "fast", headers: device))
        }
    }

    @Test("unknown device codes per IP across two nodes: the count is shared; the 5th is refused on the other node, and then a live code there too")
    func unknownDeviceCodesAcrossNodes() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let limits = RateLimitSettings(deviceAuthorizationsPerIP: nil, deviceAuthorizationsPerClient: nil, unknownDeviceCodesPerIP: RateLimit(4, per: .seconds(3600)))
        let nodeA = try await HTTPFixture(trustedProxies: ["127.0.0.1"], keyPrefix: prefix, rateLimits: limits)
        let nodeB = try await HTTPFixture(trustedProxies: ["127.0.0.1"], keyPrefix: prefix, rateLimits: limits)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.live) { a in
            try await nodeB.app.test(.live) { b in
                let live = try await a.issue(clientID: "fast").deviceCode
                let attacker = Self.from("203.0.113.77")
                for letter in ["E", "F", "G", "H"] {
                    expectOAuthError(try await a.poll(deviceCode: "abcd." + String(repeating: letter, count: 43), clientID: "fast", headers: attacker), "invalid_grant")
                }
                // B has never refused this address: its 5th unknown code is counted in Redis, found over the limit, refused.
                Self.expectLimited(try await b.poll(deviceCode: "abcd." + String(repeating: "I", count: 43), clientID: "fast", headers: attacker))
                Self.expectLimited(try await b.poll(deviceCode: live, clientID: "fast", headers: attacker))
                Self.expectLimited(try await a.poll(deviceCode: live, clientID: "fast", headers: attacker))
                // The counter's current and previous fixed windows (`c`, `p`): the run may straddle a boundary.
                let counts = try await nodeA.redis.send("HMGET", try #require(try await nodeA.keys("{rl}:tku:*").first), "c", "p").array ?? []
                #expect(
                    counts.compactMap { $0.string.flatMap(Int.init) }.reduce(0, +) == 5,
                    "four unknown codes on A and one on B, counted once each; the live-code polls not at all: \(counts)")
                expectOAuthError(try await b.poll(deviceCode: live, clientID: "fast", headers: Self.from("203.0.113.78")), "authorization_pending")
            }
        }
    }

    @Test("user-code guessing (store limits): with the defaults the 11th wrong code of an IP is refused, also for a right code; another IP is not; the global limit stops many IPs")
    func userCodeGuessing() async throws {
        // One signed-in person makes all the guesses here: the per-person budget is raised so the
        // per-address and global budgets are what is measured (PersonLimitsTests covers it).
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"],
            configureStore: {
                $0.maxFailuresGlobal = 25
                $0.maxFailuresPerUser = 1_000
            })
        defer { fixture.shutdown() }
        #expect(fixture.store.configuration.maxFailuresPerCaller == 10, "the default per-IP budget")
        try await fixture.app.test(.live) { client in
            let issued = try await client.issue(clientID: "fast")
            let userCode = issued.userCode
            let browser = Browser()
            try await browser.logIn(client)
            var answers: [HTTPResponse.Status] = []
            for index in 0..<11 {
                answers.append(
                    try await browser.lookup(
                        client, "BBBB-BB\(["BC", "BD", "BF", "BG", "BH", "BJ", "BK", "BL", "BM", "BN", "BP"][index])",
                        headers: Self.from("203.0.113.20")
                    ).status)
            }
            #expect(answers == Array(repeating: .notFound, count: 10) + [.tooManyRequests])
            let locked = try await browser.lookup(client, "\(userCode)", headers: Self.from("203.0.113.20"))
            #expect(locked.status == .tooManyRequests)
            #expect(locked.headers[.retryAfter].flatMap(Int.init).map { (1...900).contains($0) } == true)
            #expect(try await browser.lookup(client, "\(userCode)", headers: Self.from("203.0.113.21")).status == .ok)
            // Global: 10 + 9 + 6 = 25 failures from three addresses exhaust the global budget (25 here);
            // a fourth, fresh address is then refused too.
            for _ in 0..<9 { #expect(try await browser.lookup(client, "CCCC-CCCC", headers: Self.from("203.0.113.22")).status == .notFound) }
            for _ in 0..<6 { #expect(try await browser.lookup(client, "DDDD-DDDD", headers: Self.from("203.0.113.23")).status == .notFound) }
            let global = try await browser.lookup(client, "\(userCode)", headers: Self.from("203.0.113.24"))
            #expect(global.status == .tooManyRequests)
            #expect(global.text.contains("Too many attempts"))
        }
    }
}

@Suite("Rate limits: configuration file")
struct RateLimitConfigurationTests {
    @Test("rate_limits per minute, 0 turns a limit off, per-client override; negative numbers are refused")
    func configurationFile() throws {
        let json = """
            {"rate_limits": {"device_authorizations_per_ip": 12, "device_authorizations_per_client": 0},
             "clients": [{"client_id": "tv", "device_authorizations_per_minute": 3000}, {"client_id": "plain"}]}
            """
        let file = try JSONDecoder().decode(ServerConfigurationFile.self, from: Data(json.utf8))
        let settings = try #require(try file.rateLimits?.settings())
        #expect(settings.deviceAuthorizationsPerIP == RateLimit(12, per: .seconds(60)))
        #expect(settings.deviceAuthorizationsPerClient == nil)
        #expect(settings.unknownDeviceCodesPerIP == RateLimitSettings().unknownDeviceCodesPerIP, "a missing member keeps the default")
        let clients = try (file.clients ?? []).map { try $0.registeredClient() }
        #expect(clients[0].deviceAuthorizationLimit == RateLimit(3000, per: .seconds(60)))
        #expect(clients[1].deviceAuthorizationLimit == nil)
        let negative = try JSONDecoder().decode(ServerConfigurationFile.self, from: Data(#"{"rate_limits": {"unknown_device_codes_per_ip": -1}}"#.utf8))
        #expect(throws: DeviceAuthorizationHTTPError.self) { try negative.rateLimits?.settings() }
        // The defaults a careful operator starts from.
        #expect(
            RateLimitSettings()
                == RateLimitSettings(
                    deviceAuthorizationsPerIP: RateLimit(30, per: .seconds(60)),
                    deviceAuthorizationsPerClient: RateLimit(600, per: .seconds(60)),
                    unknownDeviceCodesPerIP: RateLimit(30, per: .seconds(60))))
    }
}
