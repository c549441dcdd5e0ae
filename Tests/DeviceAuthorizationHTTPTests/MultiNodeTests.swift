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
    @Test("issue on A, approve on B, redeem on A, the same token again on B; concurrent redemption on A and B from 9 addresses gives one token to one address")
    func twoNodes() async throws {
        let prefix = HTTPFixture.uniquePrefix()
        let pem = ES256PrivateKey().pemRepresentation
        let nodeA = try await HTTPFixture(trustedProxies: ["127.0.0.1", "::1"], keyPrefix: prefix, signingKeyPEM: pem)
        let nodeB = try await HTTPFixture(trustedProxies: ["127.0.0.1", "::1"], keyPrefix: prefix, signingKeyPEM: pem)
        defer {
            nodeA.shutdown()
            nodeB.shutdown()
        }
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
                // Polled again on B (the answer from A was lost): the same token; from elsewhere, refused.
                expectSameToken(try await b.poll(deviceCode: first.deviceCode, clientID: "fast"), as: token)
                expectOAuthError(try await b.poll(deviceCode: first.deviceCode, clientID: "fast", headers: elsewhere), "invalid_grant")

                // Concurrent redemption on both nodes: exactly one token.
                let second = try await b.issue(clientID: "fast")
                try await nodeA.store.approve(userCode: second.userCode, userID: "bob")
                let deviceCode = second.deviceCode
                // Half from the device's address, half from 8 others: one token, to the device's polls only.
                let answers = try await withThrowingTaskGroup(of: (Int, TestResponse).self) { group in
                    for index in 0..<16 {
                        let headers: HTTPFields = index < 8 ? [:] : [.xForwardedForTest: "192.0.2.\(index)"]
                        group.addTask { (index, try await (index.isMultiple(of: 2) ? a : b).poll(deviceCode: deviceCode, clientID: "fast", headers: headers)) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                let tokens = answers.filter { $0.1.status == .ok }
                #expect(Set(tokens.map { $0.1.text }).count == 1, "one token")
                #expect(tokens.allSatisfy { $0.0 < 8 } || tokens.count == 1, "the token goes to one address only")
                #expect(answers.filter { $0.1.oauthError == "invalid_grant" }.count == 16 - tokens.count)
            }
        }
    }
}
