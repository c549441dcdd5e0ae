import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import NIOCore
import Testing

/// Two live API nodes (own routes, own Redis connections, own HTTP servers) on one Redis behave
/// as one server.
@Suite("Two nodes on one Redis")
struct MultiNodeTests {
    @Test("issue on A, approve on B, redeem on A; concurrent redemption on A and B mints one token")
    func twoNodes() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let pem = ES256PrivateKey().pemRepresentation
        let nodeA = try await HTTPFixture(keyPrefix: prefix, signingKeyPEM: pem)
        let nodeB = try await HTTPFixture(keyPrefix: prefix, signingKeyPEM: pem)
        defer { nodeA.shutdown(); nodeB.shutdown() }
        try await nodeA.app.test(.live) { a in
            try await nodeB.app.test(.live) { b in
                // Issue on A, approve on B through the page, redeem on A.
                let first = try await a.issue(clientID: "fast")
                let browser = Browser()
                try await browser.logIn(b)
                let page = try await browser.lookup(b, "\(first.userCode)")
                #expect(page.status == .ok)
                let approved = try await browser.decide(b, "approve", on: page)
                #expect(approved.status == .ok)
                let token = try await a.poll(deviceCode: first.deviceCode, clientID: "fast")
                #expect(token.status == .ok)
                // B's JWKS verifies A's token: one key for the whole deployment.
                let keys = try await JWTKeyCollection().add(jwksJSON: try await b.execute(uri: "/.well-known/jwks.json", method: .get).text)
                let claims = try await keys.verify(try #require(token.json["access_token"] as? String), as: JWTTokenIssuer.Claims.self)
                #expect(claims.sub.value == "alice")
                // The replay on B is refused.
                expectOAuthError(try await b.poll(deviceCode: first.deviceCode, clientID: "fast"), "invalid_grant")

                // Concurrent redemption on both nodes: exactly one token.
                let second = try await b.issue(clientID: "fast")
                try await nodeA.store.approve(userCode: second.userCode, userID: "bob")
                let deviceCode = second.deviceCode
                let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for index in 0..<16 {
                        group.addTask { try await (index.isMultiple(of: 2) ? a : b).poll(deviceCode: deviceCode, clientID: "fast").status }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(statuses.filter { $0 == .ok }.count == 1)
                #expect(statuses.filter { $0 == .badRequest }.count == 15)
            }
        }
    }
}
