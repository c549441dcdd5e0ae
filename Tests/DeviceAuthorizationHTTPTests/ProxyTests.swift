import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Live-server tests: the peer address is real (127.0.0.1), so the trusted-proxy rules apply.
@Suite("Trusted reverse proxy")
struct ProxyTests {
    static let userHeader = HTTPField.Name("X-Forwarded-User")!

    @Test("the user header is ignored from a non-proxy address (401)")
    func headerIgnoredFromNonProxy() async throws {
        let fixture = try await HTTPFixture(users: try TrustedHeaderAuthenticator(headerName: "X-Forwarded-User"), trustedProxies: ["10.9.8.7"])
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let response = try await client.execute(uri: "/device", method: .get, headers: [Self.userHeader: "alice"])
            #expect(response.status == .unauthorized)
            #expect(!response.text.contains("alice"))
        }
    }

    @Test("the user header is honoured from a trusted proxy, and the flow completes")
    func headerHonouredFromProxy() async throws {
        let fixture = try await HTTPFixture(users: try TrustedHeaderAuthenticator(headerName: "X-Forwarded-User"), trustedProxies: ["127.0.0.0/8", "::1"])
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let issued = try await client.issue(clientID: "fast")
            let browser = Browser()
            let page = try await browser.lookup(client, "\(issued.userCode)", headers: [Self.userHeader: "carol"])
            #expect(page.status == .ok)
            #expect(page.text.contains("carol"))
            let approved = try await browser.decide(client, "approve", on: page, headers: [Self.userHeader: "carol"])
            #expect(approved.status == .ok)
            let token = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            #expect(token.status == .ok)
        }
    }

    @Test("X-Forwarded-For from a non-proxy does not escape the per-IP lockout")
    func forwardedForIgnoredFromNonProxy() async throws {
        let fixture = try await HTTPFixture(configureStore: { $0.maxFailuresPerCaller = 2 })
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let browser = Browser()
            try await browser.logIn(client)
            for index in 0..<2 {
                let response = try await browser.lookup(client, "BBBB-BBBB", headers: [.xForwardedForTest: "203.0.113.\(index)"])
                #expect(response.status == .notFound)
            }
            let locked = try await browser.lookup(client, "BBBB-BBBB", headers: [.xForwardedForTest: "203.0.113.99"])
            #expect(locked.status == .tooManyRequests)
        }
    }

    @Test("X-Forwarded-For from a trusted proxy separates clients")
    func forwardedForFromProxy() async throws {
        let fixture = try await HTTPFixture(trustedProxies: ["127.0.0.1"], configureStore: { $0.maxFailuresPerCaller = 2 })
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let browser = Browser()
            try await browser.logIn(client)
            for _ in 0..<2 {
                #expect(try await browser.lookup(client, "BBBB-BBBB", headers: [.xForwardedForTest: "203.0.113.1"]).status == .notFound)
            }
            #expect(try await browser.lookup(client, "BBBB-BBBB", headers: [.xForwardedForTest: "203.0.113.1"]).status == .tooManyRequests)
            // Another client behind the same proxy is not locked out.
            #expect(try await browser.lookup(client, "BBBB-BBBB", headers: [.xForwardedForTest: "198.51.100.7"]).status == .notFound)
        }
    }

    @Test("trusted proxy ranges parse and match")
    func ranges() throws {
        let proxies = try TrustedProxies(["10.0.0.0/8", "192.168.1.10", "fd00::/8"])
        #expect(proxies.contains("10.200.3.4"))
        #expect(!proxies.contains("11.0.0.1"))
        #expect(proxies.contains("192.168.1.10"))
        #expect(!proxies.contains("192.168.1.11"))
        #expect(proxies.contains("fd12::1"))
        #expect(proxies.contains("::ffff:10.1.1.1"))
        #expect(!proxies.contains(nil))
        #expect(throws: DeviceAuthorizationHTTPError.self) { try TrustedProxies(["not-an-ip"]) }
        // IPv6 clients share one brute-force bucket per /64; IPv4 clients one per address.
        #expect(RequestOrigin(clientIP: "2001:db8:1:2::1").rateLimitKey == RequestOrigin(clientIP: "2001:db8:1:2:ffff::9").rateLimitKey)
        #expect(RequestOrigin(clientIP: "2001:db8:1:2::1").rateLimitKey != RequestOrigin(clientIP: "2001:db8:1:3::1").rateLimitKey)
        #expect(RequestOrigin(clientIP: "203.0.113.5").rateLimitKey == "203.0.113.5")
    }
}

extension HTTPField.Name {
    static let xForwardedForTest = HTTPField.Name("X-Forwarded-For")!
}
