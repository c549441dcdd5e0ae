import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Failed client authentication is limited like a guess: charged before the secret is checked,
/// in one script on the Redis clock, given back when the secret is right.
@Suite("Failed client authentication limits")
struct ClientAuthLimitTests {
    static let limit = 10

    static func limits(perClient: Int?, perIP: Int?) -> RateLimitSettings {
        RateLimitSettings(
            deviceAuthorizationsPerIP: nil, deviceAuthorizationsPerClient: nil, unknownDeviceCodesPerIP: nil,
            failedClientAuthenticationsPerClient: perClient.map { RateLimit($0, per: .seconds(3600)) },
            failedClientAuthenticationsPerIP: perIP.map { RateLimit($0, per: .seconds(3600)) })
    }

    static func authorize(_ client: some TestClientProtocol, secret: String, basic: Bool) async throws -> TestResponse {
        basic
            ? try await client.postForm("/oauth/device_authorization", [], headers: [.authorization: basicAuthorization("svc", secret)])
            : try await client.postForm("/oauth/device_authorization", [("client_id", "svc"), ("client_secret", secret)])
    }

    @Test(
        "200 concurrent wrong secrets across two nodes, limit 10 per client → exactly 10 × 401 invalid_client, 190 × 429 with Retry-After; then the right secret → 429 too",
        arguments: [(10, nil), (nil, 10)] as [(Int?, Int?)])
    func burstAcrossTwoNodes(perClient: Int?, perIP: Int?) async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let first = try await HTTPFixture(keyPrefix: prefix, rateLimits: Self.limits(perClient: perClient, perIP: perIP))
        let second = try await HTTPFixture(keyPrefix: prefix, rateLimits: Self.limits(perClient: perClient, perIP: perIP))
        defer {
            first.shutdown()
            second.shutdown()
        }
        try await first.app.test(.router) { one in
            try await second.app.test(.router) { two in
                let answers = try await withThrowingTaskGroup(of: (Int, String?, String?).self) { group in
                    for index in 0..<200 {
                        group.addTask {
                            let response =
                                index % 2 == 0
                                ? try await Self.authorize(one, secret: "wrong-\(index)", basic: index % 4 == 0)
                                : try await Self.authorize(two, secret: "wrong-\(index)", basic: index % 4 == 1)
                            return (Int(response.status.code), response.oauthError, response.headers[.retryAfter])
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let unauthorized = answers.filter { $0.0 == 401 }
                let limited = answers.filter { $0.0 == 429 }
                #expect(unauthorized.count == Self.limit, "401s: \(unauthorized.count)")
                #expect(unauthorized.allSatisfy { $0.1 == "invalid_client" })
                #expect(limited.count == 200 - Self.limit, "429s: \(limited.count); others: \(answers.filter { ![401, 429].contains($0.0) })")
                #expect(limited.allSatisfy { $0.1 == "temporarily_unavailable" && ($0.2.flatMap(Int.init) ?? 0) >= 1 })
                // The right secret is refused as well until the window passes, on either node.
                for client in [one, two] as [any TestClientProtocol] {
                    let right = try await Self.authorize(client, secret: confidentialSecret, basic: true)
                    expectOAuthError(right, "temporarily_unavailable", status: .tooManyRequests)
                    #expect(right.headers[.retryAfter] != nil)
                }
                // A public client is not affected by the confidential client's limit.
                if perClient != nil {
                    #expect(try await one.postForm("/oauth/device_authorization", [("client_id", "cli")]).status == .ok)
                }
            }
        }
    }

    @Test("right secrets are given back: 50 successful authentications with a limit of 10, then 10 wrong ones still get 401")
    func successesAreNotCounted() async throws {
        let fixture = try await HTTPFixture(rateLimits: Self.limits(perClient: Self.limit, perIP: Self.limit))
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            for index in 0..<50 {
                let response = try await Self.authorize(client, secret: confidentialSecret, basic: index % 2 == 0)
                #expect(response.status == .ok, "\(index): \(response.text)")
            }
            for index in 0..<Self.limit {
                expectOAuthError(try await Self.authorize(client, secret: "wrong-\(index)", basic: false), "invalid_client", status: .unauthorized)
            }
            expectOAuthError(try await Self.authorize(client, secret: "wrong", basic: false), "temporarily_unavailable", status: .tooManyRequests)
        }
    }
}
