import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import DeviceAuthorizationHTTP

/// Trust in proxies is narrow and authenticated: forwarded addresses lose their ports, wide
/// ranges with a user header stop the server at start, and a proxy secret can be required.
@Suite("Trust configuration")
struct TrustConfigurationTests {
    static let userHeader = HTTPField.Name("X-Forwarded-User")!
    static let secretHeader = HTTPField.Name("X-Deviceauth-Proxy-Secret")!
    static let proxySecret = "a-proxy-secret-of-at-least-32-bytes-0123456789"

    @Test(
        "X-Forwarded-For entries lose their ports and are written canonically",
        arguments: [
            ("203.0.113.7:4711", "203.0.113.7"), (" 203.0.113.7 ", "203.0.113.7"), ("[2001:DB8::1]:443", "2001:db8::1"),
            ("[2001:db8:0:0::1]", "2001:db8::1"), ("2001:0db8::0001", "2001:db8::1"), ("::ffff:203.0.113.7", "203.0.113.7"),
            ("[::ffff:203.0.113.7]:80", "203.0.113.7"), ("unknown", "unknown"), ("203.0.113.7:http", "203.0.113.7:http"),
            ("[2001:db8::1]:x", "[2001:db8::1]:x"), ("2001:db8::1", "2001:db8::1"),
        ])
    func forwardedAddress(entry: String, expected: String) {
        #expect(TrustedProxies.forwardedAddress(entry) == expected)
    }

    @Test("ip:port and [v6]:port land in the bare address's bucket: unknown device codes from three spellings of one address share one limit")
    func portsShareTheBucket() async throws {
        for (spellings, bare) in [
            (["203.0.113.9:1111", "203.0.113.9:2222"], "203.0.113.9"),
            (["[2001:db8:5::1]:443", "[2001:DB8:5::1]:80"], "2001:db8:5::1"),
        ] {
            let fixture = try await HTTPFixture(
                trustedProxies: ["127.0.0.1", "::1"],
                rateLimits: RateLimitSettings(unknownDeviceCodesPerIP: RateLimit(2, per: .seconds(3600))))
            defer { fixture.shutdown() }
            try await fixture.app.test(.live) { client in
                for spelling in spellings {
                    let response = try await client.poll(deviceCode: "nope", headers: [.xForwardedForTest: spelling])
                    expectOAuthError(response, "invalid_grant")
                }
                let third = try await client.poll(deviceCode: "nope", headers: [.xForwardedForTest: bare])
                expectOAuthError(third, "temporarily_unavailable", status: .tooManyRequests)
                // Another address behind the same proxy is not limited.
                expectOAuthError(try await client.poll(deviceCode: "nope", headers: [.xForwardedForTest: "198.51.100.1:9"]), "invalid_grant")
            }
        }
    }

    static func load(_ json: String) throws -> ServerConfigurationFile {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-trust-\(UUID().uuidString).json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try ServerConfigurationFile.load(path: path)
    }

    @Test(
        "user_header with trusted ranges wider than /16 (IPv4) or /32 (IPv6) stops the server at load, naming the ranges and the override",
        arguments: [["0.0.0.0/0"], ["10.0.0.0/8"], ["127.0.0.1", "172.16.0.0/12"], ["::/0"], ["2001:db8::/31"], ["10.1.0.0/15"]])
    func wideRangesRefused(ranges: [String]) throws {
        let list = ranges.map { "\"\($0)\"" }.joined(separator: ",")
        let error = #expect(throws: DeviceAuthorizationHTTPError.self) {
            try Self.load(#"{"user_header": "X-Forwarded-User", "trusted_proxies": [\#(list)]}"#)
        }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("allow_wide_trusted_proxies") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(ranges.last!) == true, "names the range: \(error?.message ?? "")")
        // The explicit override, or no user header at all, is accepted.
        _ = try Self.load(#"{"user_header": "X-Forwarded-User", "trusted_proxies": [\#(list)], "allow_wide_trusted_proxies": true}"#)
        _ = try Self.load(#"{"trusted_proxies": [\#(list)]}"#)
    }

    @Test("the narrowest accepted ranges: /16 IPv4, /32 IPv6, single addresses")
    func narrowRangesAccepted() throws {
        _ = try Self.load(#"{"user_header": "X-Forwarded-User", "trusted_proxies": ["10.1.0.0/16", "2001:db8::/32", "127.0.0.1", "::1"]}"#)
        let error = #expect(throws: DeviceAuthorizationHTTPError.self) {
            try Self.load(#"{"proxy_secret_header": "X-Proxy"}"#)
        }
        #expect(error?.message.contains("proxy_secret_file") == true)
    }

    @Test("secret files: one trailing line break dropped, empty and short files refused naming the setting")
    func secretFiles() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("deviceauth-secret-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try (Self.proxySecret + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try SecretFile.read(path, setting: "proxy_secret_file", minimumLength: 32) == Array(Self.proxySecret.utf8))
        try "short\r\n".write(toFile: path, atomically: true, encoding: .utf8)
        let short = #expect(throws: DeviceAuthorizationHTTPError.self) { try SecretFile.read(path, setting: "proxy_secret_file", minimumLength: 32) }
        #expect(short?.message.contains("proxy_secret_file") == true)
        try "\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: DeviceAuthorizationHTTPError.self) { try SecretFile.read(path, setting: "secret_file") }
        #expect(throws: DeviceAuthorizationHTTPError.self) { try SecretFile.read("/nonexistent/secret", setting: "secret_file") }
    }

    @Test("with a proxy secret, a trusted address without it (absent, wrong, repeated, a prefix) is an ordinary client: user header and X-Forwarded-For ignored")
    func proxySecretRequired() async throws {
        let proxies = try TrustedProxies(["127.0.0.1", "::1"], secretHeader: "X-Deviceauth-Proxy-Secret", secret: Array(Self.proxySecret.utf8))
        let fixture = try await HTTPFixture(
            users: try TrustedHeaderAuthenticator(headerName: "X-Forwarded-User"),
            rateLimits: RateLimitSettings(unknownDeviceCodesPerIP: RateLimit(1, per: .seconds(3600))),
            configureHTTP: { $0.trustedProxies = proxies })
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let wrong: [HTTPFields] = [
                [Self.userHeader: "mallory"],
                [Self.userHeader: "mallory", Self.secretHeader: "guess"],
                [Self.userHeader: "mallory", Self.secretHeader: String(Self.proxySecret.dropLast())],
                [Self.userHeader: "mallory", Self.secretHeader: Self.proxySecret + "x"],
                HTTPFields([
                    HTTPField(name: Self.userHeader, value: "mallory"), HTTPField(name: Self.secretHeader, value: Self.proxySecret),
                    HTTPField(name: Self.secretHeader, value: Self.proxySecret),
                ]),
            ]
            for headers in wrong {
                let page = try await client.execute(uri: "/device", method: .get, headers: headers)
                #expect(page.status == .unauthorized, "\(headers)")
                #expect(!page.text.contains("mallory"))
            }
            let signedIn = try await client.execute(uri: "/device", method: .get, headers: [Self.userHeader: "carol", Self.secretHeader: Self.proxySecret])
            #expect(signedIn.status == .ok)
            #expect(signedIn.text.contains("carol"))
            // X-Forwarded-For without the secret does not move the caller to another bucket:
            // the second unknown code from "two addresses" is the peer's second, over the limit of 1.
            expectOAuthError(try await client.poll(deviceCode: "nope", headers: [.xForwardedForTest: "203.0.113.1"]), "invalid_grant")
            expectOAuthError(try await client.poll(deviceCode: "nope", headers: [.xForwardedForTest: "203.0.113.2"]), "temporarily_unavailable", status: .tooManyRequests)
            // With the secret, the forwarded address is believed: a fresh bucket.
            expectOAuthError(try await client.poll(deviceCode: "nope", headers: [.xForwardedForTest: "203.0.113.3", Self.secretHeader: Self.proxySecret]), "invalid_grant")
        }
    }

    @Test("RequestOrigin's coarse bucket: IPv6 per /48, IPv4 per address; rateLimitKey stays per /64")
    func coarseBucket() {
        let a = RequestOrigin(clientIP: "2001:db8:1:2::1")
        let b = RequestOrigin(clientIP: "2001:db8:1:ffff::9")
        let c = RequestOrigin(clientIP: "2001:db8:2::1")
        #expect(a.coarseRateLimitKey == b.coarseRateLimitKey)
        #expect(a.rateLimitKey != b.rateLimitKey)
        #expect(a.coarseRateLimitKey != c.coarseRateLimitKey)
        #expect(a.coarseRateLimitKey == "20010db80001::/48")
        #expect(RequestOrigin(clientIP: "203.0.113.5").coarseRateLimitKey == "203.0.113.5")
    }
}
