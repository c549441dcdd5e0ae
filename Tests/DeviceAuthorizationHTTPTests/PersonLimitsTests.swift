import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import DeviceAuthorizationHTTP

/// Guess limits per address, per person and per network, and the development login's attempt
/// limit, attacked in bursts across two nodes on one Redis; and what the confirmation page tells
/// the person about the request (RFC 8628 §5.4).
@Suite("Person-side limits and consent details")
struct PersonLimitsTests {
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    /// `count` different well-formed user codes that no grant has.
    static func wrongCodes(_ count: Int) -> [String] {
        let alphabet = Array("BCDFGHJKLMNPQRSTVWXZ")
        return (0..<count).map { index in
            "BBBB-" + String([alphabet[(index / 400) % 20], alphabet[(index / 20) % 20], alphabet[index % 20], "B"])
        }
    }

    /// Posts `forms` concurrently, alternating between the nodes; the statuses by code.
    static func burst(_ nodes: [any TestClientProtocol], path: String, headers: HTTPFields, forms: [[(String, String)]]) async throws -> [Int: Int] {
        var formHeaders = headers
        formHeaders[.contentType] = "application/x-www-form-urlencoded"
        let requestHeaders = formHeaders
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, form) in forms.enumerated() {
                let node = nodes[index % nodes.count]
                let body = formEncode(form)
                group.addTask { try await node.execute(uri: path, method: .post, headers: requestHeaders, body: ByteBuffer(string: body)).status.code }
            }
            var statuses: [Int] = []
            for try await status in group { statuses.append(status) }
            return statuses
        }
        return Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count)
    }

    @Test("300 concurrent wrong codes from one address across two nodes, limit 10 → 10 × 404, 290 × 429; then a right code → 429")
    func concurrentGuessesPerAddress() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let configure: (inout DeviceCodeStoreConfiguration) -> Void = {
            $0.maxFailuresPerCaller = 10
            $0.maxFailuresPerUser = 10_000
            $0.maxFailuresGlobal = 10_000
        }
        let nodeA = try await HTTPFixture(keyPrefix: prefix, configureStore: configure)
        let nodeB = try await HTTPFixture(keyPrefix: prefix, configureStore: configure)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.router) { a in
            try await nodeB.app.test(.router) { b in
                let issued = try await a.issue(clientID: "fast")
                let browser = Browser()
                try await browser.logIn(a)
                let token = try #require(hiddenField("csrf_token", in: try await browser.get(a, "/device").text))
                let forms = Self.wrongCodes(300).map { [("action", "lookup"), ("user_code", $0), ("csrf_token", token)] }
                let counts = try await Self.burst([a, b], path: "/device", headers: browser.headers(), forms: forms)
                #expect(counts == [404: 10, 429: 290], "\(counts)")
                #expect(try await browser.lookup(b, issued.userCode).status == .tooManyRequests)
            }
        }
    }

    @Test("one person, 100 concurrent wrong codes across two nodes, per-user limit 5 → 5 × 404, 95 × 429; from fresh addresses still 429; another person is not limited")
    func guessesPerPerson() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let configure: (inout DeviceCodeStoreConfiguration) -> Void = {
            $0.maxFailuresPerCaller = 10_000
            $0.maxFailuresPerUser = 5
            $0.maxFailuresGlobal = 10_000
        }
        let nodeA = try await HTTPFixture(trustedProxies: ["127.0.0.1"], keyPrefix: prefix, configureStore: configure)
        let nodeB = try await HTTPFixture(trustedProxies: ["127.0.0.1"], keyPrefix: prefix, configureStore: configure)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.router) { a in
            try await nodeB.app.test(.router) { b in
                let alice = Browser()
                try await alice.logIn(a)
                let token = try #require(hiddenField("csrf_token", in: try await alice.get(a, "/device").text))
                let forms = Self.wrongCodes(100).map { [("action", "lookup"), ("user_code", $0), ("csrf_token", token)] }
                let counts = try await Self.burst([a, b], path: "/device", headers: alice.headers(), forms: forms)
                #expect(counts == [404: 5, 429: 95], "\(counts)")
                let bob = Browser()
                try await bob.logIn(b, user: "bob", password: "builder")
                #expect(try await bob.lookup(b, "CCCC-CCCC").status == .notFound, "the limit is alice's, not everyone's")
            }
        }
        // Through a trusted proxy, from addresses the per-address budget has never seen.
        try await nodeA.app.test(.live) { a in
            let alice = Browser()
            try await alice.logIn(a)
            for index in 1...3 {
                #expect(try await alice.lookup(a, "DDDD-DDDD", headers: [Self.forwardedFor: "198.51.100.\(index)"]).status == .tooManyRequests)
            }
        }
    }

    @Test("IPv6: wrong codes from different /64s of one /48 share the /48's budget; another /48 does not")
    func ipv6Networks() async throws {
        let fixture = try await HTTPFixture(
            trustedProxies: ["127.0.0.1"],
            configureStore: {
                $0.maxFailuresPerCaller = 3
                $0.maxFailuresPerUser = 10_000
            })
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let browser = Browser()
            try await browser.logIn(client)
            for network in ["a", "b", "c"] {
                #expect(try await browser.lookup(client, "BBBB-BBBB", headers: [Self.forwardedFor: "2001:db8:1:\(network)::1"]).status == .notFound)
            }
            #expect(
                try await browser.lookup(client, "BBBB-BBBB", headers: [Self.forwardedFor: "2001:db8:1:d::1"]).status == .tooManyRequests,
                "a fourth /64 of the same /48")
            #expect(try await browser.lookup(client, "BBBB-BBBB", headers: [Self.forwardedFor: "2001:db8:2::1"]).status == .notFound)
        }
        #expect(RequestOrigin(clientIP: "2001:db8:1:a::1").lookupCallers == ["20010db80001000a::/64", "20010db80001::/48"])
        #expect(RequestOrigin(clientIP: "192.0.2.7").lookupCallers == ["192.0.2.7"])
    }

    @Test("100 concurrent wrong passwords across two nodes, per-address limit 7 → 7 × 401, 93 × 429; the right password then → 429 with Retry-After")
    func loginBurstPerAddress() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let limits = RateLimitSettings(loginFailuresPerIP: RateLimit(7, per: .seconds(900)), loginFailuresPerUser: nil)
        let nodeA = try await HTTPFixture(keyPrefix: prefix, rateLimits: limits)
        let nodeB = try await HTTPFixture(keyPrefix: prefix, rateLimits: limits)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.router) { a in
            try await nodeB.app.test(.router) { b in
                let browser = Browser()
                let token = try #require(hiddenField("csrf_token", in: try await browser.get(a, "/device").text))
                let forms = (0..<100).map { [("username", $0 % 2 == 0 ? "alice" : "bob"), ("password", "guess\($0)"), ("csrf_token", token)] }
                let counts = try await Self.burst([a, b], path: "/device/login", headers: browser.headers(), forms: forms)
                #expect(counts == [401: 7, 429: 93], "\(counts)")
                let right = try await browser.post(b, "/device/login", [("username", "alice"), ("password", "wonderland"), ("csrf_token", token)])
                #expect(right.status == .tooManyRequests)
                // The counters are sliding windows over two fixed ones: a retry can be due up to two windows on.
                #expect(right.headers[.retryAfter].flatMap(Int.init).map { (1...1_800).contains($0) } == true, "\(right.headers)")
                #expect(right.text.contains("Too many sign-in attempts"))
                #expect(!right.headers[values: .setCookie].contains { $0.hasPrefix(DevelopmentLoginAuthenticator.cookieName + "=") }, "no session")
            }
        }
    }

    @Test("50 concurrent wrong passwords for one user name across two nodes, per-user limit 4 → 4 × 401, 46 × 429; that user's right password → 429, another user signs in")
    func loginBurstPerUser() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let limits = RateLimitSettings(loginFailuresPerIP: nil, loginFailuresPerUser: RateLimit(4, per: .seconds(900)))
        let nodeA = try await HTTPFixture(keyPrefix: prefix, rateLimits: limits)
        let nodeB = try await HTTPFixture(keyPrefix: prefix, rateLimits: limits)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
        try await nodeA.app.test(.router) { a in
            try await nodeB.app.test(.router) { b in
                let browser = Browser()
                let token = try #require(hiddenField("csrf_token", in: try await browser.get(a, "/device").text))
                let forms = (0..<50).map { [("username", "alice"), ("password", "guess\($0)"), ("csrf_token", token)] }
                let counts = try await Self.burst([a, b], path: "/device/login", headers: browser.headers(), forms: forms)
                #expect(counts == [401: 4, 429: 46], "\(counts)")
                #expect(try await browser.post(a, "/device/login", [("username", "alice"), ("password", "wonderland"), ("csrf_token", token)]).status == .tooManyRequests)
                #expect(
                    try await Browser().post(
                        b, "/device/login", [("username", "bob"), ("password", "builder"), ("csrf_token", token)],
                        headers: browser.headers()
                    ).status == .seeOther)
            }
        }
    }

    @Test("a right password gives its charge back: 20 sign-ins with limit 2 all succeed, then 2 wrong → 401, the next → 429")
    func loginSuccessGivesBack() async throws {
        let fixture = try await HTTPFixture(rateLimits: RateLimitSettings(loginFailuresPerIP: RateLimit(2, per: .seconds(900)), loginFailuresPerUser: nil))
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let browser = Browser()
            let token = try #require(hiddenField("csrf_token", in: try await browser.get(client, "/device").text))
            let headers = browser.headers()
            for _ in 0..<20 {
                #expect(
                    try await client.postForm("/device/login", [("username", "alice"), ("password", "wonderland"), ("csrf_token", token)], headers: headers).status == .seeOther)
            }
            let wrong = (0..<3).map { _ in [("username", "alice"), ("password", "nope"), ("csrf_token", token)] }
            var statuses: [HTTPResponse.Status] = []
            for form in wrong { statuses.append(try await client.postForm("/device/login", form, headers: headers).status) }
            #expect(statuses == [.unauthorized, .unauthorized, .tooManyRequests])
        }
    }

    @Test("the confirmation page shows the client's name and id, the scopes, how long ago and from which address the device asked; a non-address is not shown")
    func confirmationDetails() async throws {
        let fixture = try await HTTPFixture(trustedProxies: ["127.0.0.1"])
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let issued = try await client.issue(clientID: "cli", scope: "email admin", headers: [Self.forwardedFor: "203.0.113.45"])
            let browser = Browser()
            try await browser.logIn(client)
            let page = try await browser.lookup(client, issued.userCode)
            #expect(page.status == .ok)
            #expect(page.text.contains("Allow Test CLI to access your account?") && page.text.contains("(cli)"))
            #expect(page.text.contains("<li>email</li>") && page.text.contains("<li>admin</li>"))
            #expect(page.text.contains("asked <strong>less than a minute ago</strong> from <strong>203.0.113.45</strong>"), "\(page.text)")

            let odd = try await client.issue(clientID: "cli", headers: [Self.forwardedFor: "<b>not-an-address</b>"])
            let oddPage = try await browser.lookup(client, odd.userCode)
            #expect(oddPage.text.contains("from <strong>an unknown address</strong>"))
            #expect(!oddPage.text.contains("not-an-address"))
        }
        #expect(VerificationController.age(from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: 59)) == "less than a minute ago")
        #expect(VerificationController.age(from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: 60)) == "1 minute ago")
        #expect(VerificationController.age(from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: 150)) == "2 minutes ago")
        #expect(VerificationController.age(from: Date(timeIntervalSince1970: 0), to: Date(timeIntervalSince1970: 7300)) == "2 hours ago")
        #expect(VerificationController.age(from: Date(timeIntervalSince1970: 10), to: Date(timeIntervalSince1970: 0)) == "less than a minute ago", "clock skew")
    }
}
