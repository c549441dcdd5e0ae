import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import NIOCore
import Synchronization
import Testing

/// Log lines kept in memory, so a test can read what the node logged.
final class RecordedLogs: Sendable {
    struct Line: Sendable {
        var message: String
        var metadata: [String: String]
    }

    private let lines = Mutex<[Line]>([])
    var all: [Line] { lines.withLock { $0 } }

    func logger() -> Logger {
        var logger = Logger(label: "test.recorded") { _ in Handler(logs: self) }
        logger.logLevel = .info
        return logger
    }

    func append(_ line: Line) { lines.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let logs: RecordedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            var all = metadata
            for (key, value) in event.metadata ?? [:] { all[key] = value }
            logs.append(Line(message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
        }
    }
}

@Suite("Tokens (aud, jti) and response headers (nosniff, HSTS, Server)")
struct TokensAndHeadersTests {
    /// Approves and redeems one grant of `clientID`; the verified claims of its token.
    static func redeem(_ fixture: HTTPFixture, _ client: some TestClientProtocol, clientID: String) async throws -> JWTTokenIssuer.Claims {
        let issued = try await client.issue(clientID: clientID)
        try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
        let response = try await client.poll(deviceCode: issued.deviceCode, clientID: clientID)
        try #require(response.status == .ok, "\(response.text)")
        let token = try #require(response.json["access_token"] as? String)
        let jwks = try await client.execute(uri: "/.well-known/jwks.json", method: .get)
        return try await JWTKeyCollection().add(jwksJSON: jwks.text).verify(token, as: JWTTokenIssuer.Claims.self)
    }

    @Test("every access token has an aud: the client's own, else the issuer's default (the issuer itself when none is set)")
    func audience() async throws {
        let fixture = try await HTTPFixture(rateLimits: .off)
        defer { fixture.shutdown() }
        try await fixture.app.test(.router) { client in
            let own = try await Self.redeem(fixture, client, clientID: "aud-cli")
            let fallback = try await Self.redeem(fixture, client, clientID: "fast")
            #expect(own.aud?.value == ["https://api.example.test"])
            #expect(fallback.aud?.value == ["https://auth.test"], "the issuer when nothing is set")
        }
        // A configured server default, and a client's own winning over it.
        let issuer = try await JWTTokenIssuer(issuer: "https://auth.test", privateKeyPEM: nil, audience: "https://default-api.test")
        let set = try #require(try await issuer.jsonWebKeySet())
        let keys = try await JWTKeyCollection().add(jwksJSON: String(decoding: try JSONSerialization.data(withJSONObject: set), as: UTF8.self))
        let plain = try await issuer.issueToken(for: TokenRequest(userID: "alice", clientID: "tv", scopes: [], grantID: "g1"))
        #expect(try await keys.verify(plain.accessToken, as: JWTTokenIssuer.Claims.self).aud?.value == ["https://default-api.test"])
        let own = try await issuer.issueToken(for: TokenRequest(userID: "alice", clientID: "tv", scopes: [], grantID: "g2", audience: "https://tv-api.test"))
        #expect(try await keys.verify(own.accessToken, as: JWTTokenIssuer.Claims.self).aud?.value == ["https://tv-api.test"])
        #expect(own.tokenID != nil && own.tokenID != plain.tokenID)
    }

    @Test("the node logs the token's jti with the grant id (and never the token)")
    func jtiLogged() async throws {
        let fixture = try await HTTPFixture(rateLimits: .off)
        defer { fixture.shutdown() }
        let logs = RecordedLogs()
        let app = Application(router: fixture.routes.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logs.logger())
        try await app.test(.router) { client in
            let issued = try await client.issue(clientID: "fast")
            try await fixture.store.approve(userCode: issued.userCode, userID: "alice")
            let response = try await client.poll(deviceCode: issued.deviceCode, clientID: "fast")
            let token = try #require(response.json["access_token"] as? String)
            let jwks = try await client.execute(uri: "/.well-known/jwks.json", method: .get)
            let claims = try await JWTKeyCollection().add(jwksJSON: jwks.text).verify(token, as: JWTTokenIssuer.Claims.self)
            let lines = logs.all.filter { $0.message == "issued access token" }
            #expect(lines.count == 1)
            #expect(lines.first?.metadata["jti"] == claims.jti.value)
            #expect(lines.first?.metadata["grant_id"]?.isEmpty == false)
            let grantIDs = logs.all.filter { $0.message == "issued device code" }.compactMap { $0.metadata["grant_id"] }
            #expect(grantIDs == [lines.first?.metadata["grant_id"]].compactMap { $0 }, "the same grant id as at issue")
            for line in logs.all {
                #expect(!("\(line.message) \(line.metadata)").contains(token), "the token is never logged")
                #expect(!("\(line.message) \(line.metadata)").contains(issued.deviceCode), "the device code is never logged")
            }
        }
    }

    static let everyKind: [(String, HTTPRequest.Method, String?)] = [
        ("/oauth/token", .post, "grant_type=x"),  // JSON error
        ("/oauth/device_authorization", .post, "client_id=cli"),  // JSON success
        ("/healthz", .get, nil), ("/metrics", .get, nil), ("/openapi.json", .get, nil), ("/.well-known/jwks.json", .get, nil),
        ("/device", .get, nil),  // page
        ("/device", .put, nil), ("/oauth/token", .get, nil),  // 405 page, 405 JSON
        ("/metrics/", .get, nil), ("/nothing", .get, nil),  // 404
    ]

    @Test("X-Content-Type-Options: nosniff on every kind of answer; HSTS only with an https public base URL")
    func securityHeaders() async throws {
        for https in [true, false] {
            let fixture = try await HTTPFixture(rateLimits: .off, configureHTTP: { $0.publicBaseURL = https ? "https://auth.test" : "http://127.0.0.1:8080" })
            defer { fixture.shutdown() }
            // The routes decide HSTS from the configuration they were built with.
            try await fixture.app.test(.router) { client in
                for (path, method, body) in Self.everyKind {
                    let response = try await client.execute(
                        uri: path, method: method, headers: body == nil ? [:] : [.contentType: "application/x-www-form-urlencoded"],
                        body: body.map { ByteBuffer(string: $0) })
                    #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff", "\(method) \(path) → \(response.status)")
                    let hsts = response.headers[HTTPField.Name("Strict-Transport-Security")!]
                    #expect(hsts == (https ? "max-age=31536000" : nil), "\(method) \(path), https \(https)")
                }
            }
        }
    }
}
