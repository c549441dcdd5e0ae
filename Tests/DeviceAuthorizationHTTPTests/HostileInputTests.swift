import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// What an attacker or a broken client can send: each answer is a specific 4xx with an RFC 6749
/// body on the OAuth endpoints and an HTML page on the verification page, never a 5xx, and body
/// collection stays capped.
@Suite("Hostile input")
struct HostileInputTests {
    /// One fixture for the 51 table cases: they only read, and creating a Redis client (two
    /// connection threads) per case would churn threads under tests that count them.
    actor SharedFixture {
        // A task, not the fixture: the actor is re-entered while the first caller awaits it.
        private var creation: Task<HTTPFixture, any Error>?
        func get() async throws -> HTTPFixture {
            if let creation { return try await creation.value }
            let task = Task { try await HTTPFixture(rateLimits: .off) }
            creation = task
            return try await task.value
        }
    }
    static let shared = SharedFixture()

    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var method: HTTPRequest.Method = .post
        var path: String
        var contentType: String? = "application/x-www-form-urlencoded"
        var body: [UInt8]
        var status: HTTPResponse.Status
        /// The RFC error code on OAuth endpoints; `nil` for an HTML page.
        var error: String?
        var testDescription: String { name }

        init(
            _ name: String, _ path: String, contentType: String? = "application/x-www-form-urlencoded",
            _ body: String, _ status: HTTPResponse.Status, _ error: String? = nil, method: HTTPRequest.Method = .post
        ) {
            self.name = name
            self.method = method
            self.path = path
            self.contentType = contentType
            self.body = Array(body.utf8)
            self.status = status
            self.error = error
        }

        init(_ name: String, path: String, bytes: [UInt8], _ status: HTTPResponse.Status, _ error: String? = nil) {
            self.name = name
            self.path = path
            self.body = bytes
            self.status = status
            self.error = error
        }
    }

    static let deviceAuthorization = "/oauth/device_authorization"
    static let token = "/oauth/token"
    static let grant = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"
    static let big = String(repeating: "A", count: 15_000)
    static let manyParameters: String = "client_id=nobody&" + (0..<1800).map { "p\($0)=1" }.joined(separator: "&")
    static let longName: String = "client_id=cli&" + big + "=1&" + String(big.prefix(100)) + "=2"
    /// 16 KiB of the shapes that once made the parser quadratic (names with empty values, empty
    /// pieces) and of many distinct names: each stops at the parameter cap (64) or parses in one pass.
    static let emptyValues: String = String((0..<4_000).map { "\($0)=&" }.joined().prefix(16_000))
    static let emptyPieces = String(repeating: "&", count: 16_000)
    static let exactlyAtCap: String = "client_id=nobody&" + (1..<64).map { "p\($0)=1" }.joined(separator: "&")
    static let overCap: String = "client_id=nobody&" + (1...64).map { "p\($0)=1" }.joined(separator: "&")
    static let manyScopes: String = "client_id=cli&scope=" + String(repeating: "a+", count: 7_400)

    static let oauthCases: [Case] = [
        // Size: over maxBodySize (16 KiB) → 413; big but under it → the parameter's own error.
        Case("oversized body, device authorization", deviceAuthorization, "client_id=cli&scope=" + String(repeating: "a", count: 17_000), .contentTooLarge, "invalid_request"),
        Case("oversized body, token", token, grant + "&device_code=" + String(repeating: "a", count: 17_000), .contentTooLarge, "invalid_request"),
        Case("15 KB client_id", deviceAuthorization, "client_id=" + big, .unauthorized, "invalid_client"),
        Case("15 KB scope", deviceAuthorization, "client_id=cli&scope=" + big, .badRequest, "invalid_scope"),
        Case("15 KB scope of 7500 tokens", deviceAuthorization, manyScopes, .badRequest, "invalid_scope"),
        Case("15 KB device_code", token, grant + "&client_id=cli&device_code=" + big, .badRequest, "invalid_grant"),
        Case("15 KB grant_type", token, "grant_type=" + big, .badRequest, "unsupported_grant_type"),
        // Parameter cap (64): was "1800 distinct parameters → 401 invalid_client" before the cap.
        Case("1800 distinct parameters", deviceAuthorization, manyParameters, .badRequest, "invalid_request"),
        Case("1800 distinct parameters, token", token, grant + "&" + manyParameters, .badRequest, "invalid_request"),
        Case("64 parameters (at the cap)", deviceAuthorization, exactlyAtCap, .unauthorized, "invalid_client"),
        Case("65 parameters (over the cap)", deviceAuthorization, overCap, .badRequest, "invalid_request"),
        Case("16 KB of names with empty values", deviceAuthorization, emptyValues, .badRequest, "invalid_request"),
        Case("16 KB of '&'", token, emptyPieces, .badRequest, "invalid_request"),
        Case("15 KB parameter name", deviceAuthorization, longName, .ok),
        // Encoding.
        Case("invalid percent-encoding %ZZ", deviceAuthorization, "client_id=%ZZ", .badRequest, "invalid_request"),
        Case("truncated percent-encoding", deviceAuthorization, "client_id=cli%", .badRequest, "invalid_request"),
        Case("percent-encoded invalid UTF-8", deviceAuthorization, "client_id=%FF%FE", .badRequest, "invalid_request"),
        Case("percent-encoded overlong UTF-8", token, grant + "&client_id=%C0%AF", .badRequest, "invalid_request"),
        Case("percent-encoded surrogate", token, grant + "&client_id=%ED%A0%80", .badRequest, "invalid_request"),
        Case("raw invalid UTF-8", path: deviceAuthorization, bytes: Array("client_id=cli&scope=".utf8) + [0xFF, 0xC3, 0x28], .badRequest, "invalid_request"),
        Case("NUL in a value", deviceAuthorization, "client_id=cli%00", .unauthorized, "invalid_client"),
        Case("empty name", deviceAuthorization, "=x&client_id=cli", .badRequest, "invalid_request"),
        // Repeated parameters (RFC 6749 §3.1: at most once).
        Case("repeated client_id", deviceAuthorization, "client_id=cli&client_id=fast", .badRequest, "invalid_request"),
        Case("repeated grant_type", token, grant + "&" + grant + "&client_id=cli&device_code=x", .badRequest, "invalid_request"),
        Case("repeated device_code", token, grant + "&client_id=cli&device_code=a&device_code=b", .badRequest, "invalid_request"),
        Case("repeated empty scope", deviceAuthorization, "client_id=cli&scope=&scope=", .badRequest, "invalid_request"),
        // Content types.
        Case("JSON body", deviceAuthorization, contentType: "application/json", #"{"client_id":"cli"}"#, .badRequest, "invalid_request"),
        Case(
            "JSON body at the token endpoint", token, contentType: "application/json",
            #"{"grant_type":"urn:ietf:params:oauth:grant-type:device_code","client_id":"cli","device_code":"x"}"#, .badRequest, "invalid_request"),
        Case("JSON body sent as a form", deviceAuthorization, #"{"client_id":"cli"}"#, .badRequest, "invalid_request"),
        Case(
            "multipart body", deviceAuthorization, contentType: "multipart/form-data; boundary=x",
            "--x\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\ncli\r\n--x--\r\n", .badRequest, "invalid_request"),
        Case("text/plain", token, contentType: "text/plain", grant, .badRequest, "invalid_request"),
        Case("no content type with a body", token, contentType: nil, grant, .badRequest, "invalid_request"),
        Case("garbage content type", deviceAuthorization, contentType: ";;;", "client_id=cli", .badRequest, "invalid_request"),
        Case("form with charset parameter is fine", deviceAuthorization, contentType: "Application/X-WWW-Form-URLEncoded; charset=UTF-8", "client_id=cli", .ok),
        // Methods.
        Case("PUT on the token endpoint", token, grant, .methodNotAllowed, "invalid_request", method: .put),
        Case("DELETE on device authorization", deviceAuthorization, "", .methodNotAllowed, "invalid_request", method: .delete),
        Case("PATCH on the token endpoint", token, grant, .methodNotAllowed, "invalid_request", method: .patch),
    ]

    @Test("too many parameters: 400 invalid_request naming the cap, on the API and on the page")
    func parameterCap() async throws {
        let fixture = try await Self.shared.get()
        try await fixture.app.test(.router) { client in
            for path in [Self.deviceAuthorization, Self.token] {
                for body in [Self.overCap, Self.emptyValues, Self.manyParameters] {
                    let response = try await client.execute(
                        uri: path, method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                        body: ByteBuffer(string: body))
                    expectOAuthError(response, "invalid_request")
                    #expect(response.json["error_description"] as? String == "too many parameters (at most 64)", "\(path): \(response.text)")
                }
            }
            let page = try await client.execute(
                uri: "/device", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: Self.overCap))
            #expect(page.status == .badRequest)
            #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
        }
    }

    @Test("OAuth endpoints: a specific 4xx with an RFC 6749 body, never a 5xx", arguments: oauthCases)
    func oauthEndpoints(_ testCase: Case) async throws {
        let fixture = try await Self.shared.get()
        try await fixture.app.test(.router) { client in
            var headers: HTTPFields = [:]
            if let contentType = testCase.contentType { headers[.contentType] = contentType }
            let response = try await client.execute(uri: testCase.path, method: testCase.method, headers: headers, body: ByteBuffer(bytes: testCase.body))
            if let error = testCase.error {
                expectOAuthError(response, error, status: testCase.status)
                #expect((response.json["error_description"] as? String).map { $0.utf8.count < 200 } == true, "no echo of huge input")
            } else {
                #expect(response.status == testCase.status, "\(response.text)")
            }
        }
    }

    static let pageCases: [Case] = [
        Case("oversized form", "/device", "action=lookup&user_code=" + String(repeating: "B", count: 17_000), .contentTooLarge),
        Case("15 KB user code", "/device", "csrf_token={csrf}&action=lookup&user_code=" + String(repeating: "B", count: 15_000), .badRequest),
        Case("15 KB of dashes and spaces around a code", "/device", "csrf_token={csrf}&action=lookup&user_code=" + String(repeating: "-+", count: 7_000) + "BBBB", .badRequest),
        Case("approve a 15 KB user code", "/device", "csrf_token={csrf}&action=approve&grant_id=x&user_code=" + String(repeating: "C", count: 15_000), .badRequest),
        Case("unknown action", "/device", "csrf_token={csrf}&action=" + String(repeating: "x", count: 5_000), .badRequest),
        Case("invalid percent-encoding", "/device", "action=lookup&user_code=%ZZ", .badRequest),
        Case("percent-encoded invalid UTF-8", "/device", "action=lookup&user_code=%FF", .badRequest),
        Case("raw invalid UTF-8", path: "/device", bytes: Array("action=lookup&user_code=".utf8) + [0xFE, 0xFF], .badRequest),
        Case("repeated action", "/device", "action=approve&action=deny&user_code=BBBB-BBBB", .badRequest),
        Case("JSON body", "/device", contentType: "application/json", #"{"action":"lookup"}"#, .badRequest),
        Case("no content type with a body", "/device", contentType: nil, "action=lookup", .badRequest),
        Case("login: JSON body", "/device/login", contentType: "application/json", #"{"username":"alice"}"#, .badRequest),
        Case("login: oversized form", "/device/login", "username=" + String(repeating: "a", count: 17_000), .badRequest),
        Case("login: 15 KB user name", "/device/login", "username=" + big + "&password=x", .forbidden),
    ]

    @Test("verification page: a specific 4xx as an HTML page with the page headers, never a 5xx", arguments: pageCases)
    func pages(_ testCase: Case) async throws {
        let fixture = try await Self.shared.get()
        try await fixture.app.test(.router) { client in
            let browser = Browser()
            try await browser.logIn(client)
            let form = try await browser.get(client, "/device")
            let csrf = try #require(hiddenField("csrf_token", in: form.text))
            var headers = browser.headers()
            if let contentType = testCase.contentType { headers[.contentType] = contentType }
            let body =
                String(decoding: testCase.body, as: UTF8.self) == String(decoding: testCase.body, as: UTF8.self).replacingOccurrences(of: "{csrf}", with: csrf)
                ? testCase.body : Array(String(decoding: testCase.body, as: UTF8.self).replacingOccurrences(of: "{csrf}", with: csrf).utf8)
            let response = try await client.execute(uri: testCase.path, method: testCase.method, headers: headers, body: ByteBuffer(bytes: body))
            #expect(response.status == testCase.status, "\(response.text.prefix(300))")
            #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
            #expect(response.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)
            #expect(response.text.contains("<!doctype html>"))
            #expect(response.text.utf8.count < 12_000, "the page does not echo huge input")
        }
    }

    @Test(
        "GET /device with a huge or malformed user_code query: the code form (no lookup), only code-alphabet characters echoed",
        arguments: [
            "/device?user_code=" + String(repeating: "B", count: 6_000),
            "/device?user_code=%ZZ%",
            "/device?user_code=%FF%FE",
            "/device?user_code=BBBB-BBBB&user_code=CCCC-CCCC&user_code=" + String(repeating: "D", count: 100),
            "/device?user_code=%3Cscript%3E" + String(repeating: "x", count: 200),
        ])
    func hugeQuery(_ uri: String) async throws {
        let fixture = try await Self.shared.get()
        try await fixture.app.test(.router) { client in
            let browser = Browser()
            try await browser.logIn(client)
            let response = try await browser.get(client, uri)
            // A GET only fills in the form (the lookup is the POST), with at most a code's worth
            // of code-alphabet characters from the query.
            #expect(response.status == .ok, "\(response.status)")
            #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
            let prefilled = try #require(response.text.range(of: "name=\"user_code\" value=\"")).upperBound
            let value = response.text[prefilled...].prefix { $0 != "\"" }
            #expect(value.count <= 9 && value.allSatisfy { "BCDFGHJKLMNPQRSTVWXZ-".contains($0) }, "prefilled \(value)")
            #expect(!response.text.contains("<script>"))
        }
    }

    @Test("oversized header block → 4xx or a closed connection, never a 5xx; the server keeps serving")
    func oversizedHeaders() async throws {
        let fixture = try await HTTPFixture(rateLimits: .off)
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let port = try #require(client.port)
            for (name, value) in [("X-Padding", String(repeating: "a", count: 200_000)), ("Cookie", "deviceauth_csrf=" + String(repeating: "b", count: 200_000))] {
                let head = Array("GET /device HTTP/1.1\r\nHost: 127.0.0.1\r\n\(name): \(value)".utf8)
                let reply = try await RawHTTP.request(port: port, head: head)
                if let status = reply.status { #expect((400..<500).contains(status), "\(reply.head)") }
            }
            // 2000 small headers.
            let many = Array(("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (0..<2000).map { "X-H\($0): v" }.joined(separator: "\r\n")).utf8)
            let reply = try await RawHTTP.request(port: port, head: many)
            if let status = reply.status { #expect(status < 500, "\(reply.head)") }
            // A 64 KB request line.
            let longLine = Array(("GET /device?user_code=" + String(repeating: "B", count: 65_536) + " HTTP/1.1\r\nHost: 127.0.0.1").utf8)
            let line = try await RawHTTP.request(port: port, head: longLine)
            if let status = line.status { #expect(status < 500, "\(line.head)") }
            // Invalid UTF-8 in the path.
            let bytes = Array("GET /device?user_code=".utf8) + [0xFF, 0xFE] + Array(" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close".utf8)
            let invalid = try await RawHTTP.request(port: port, head: bytes)
            if let status = invalid.status { #expect(status < 500, "\(invalid.head)") }
            // Still serving.
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
    }

    @Test("an endless body is cut off at the limit: 413 with an RFC body before the body ends; body collection is capped")
    func endlessBody() async throws {
        let fixture = try await HTTPFixture(rateLimits: .off)
        defer { fixture.shutdown() }
        try await fixture.app.test(.live) { client in
            let port = try #require(client.port)
            // A chunked body that never ends: 1 MB sent, no last chunk. The only way to answer is to
            // stop collecting at the 16 KiB limit; a server that buffered the whole body would hang.
            let chunk = Array(String(format: "%x\r\n", 1 << 20).utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20) + Array("\r\n".utf8)
            for path in ["/oauth/token", "/oauth/device_authorization", "/device"] {
                let head = Array("POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked".utf8)
                let reply = try await RawHTTP.request(port: port, head: head, bodyChunks: [chunk], timeout: .seconds(20))
                #expect(reply.status == 413, "\(path): \(reply.head)")
                if path.hasPrefix("/oauth") {
                    #expect(reply.body.contains("\"error\":\"invalid_request\""), "\(reply.body.prefix(200))")
                } else {
                    #expect(reply.header("Content-Type")?.hasPrefix("text/html") == true)
                }
            }
            // A Content-Length over the limit is refused before the body arrives.
            let declared = Array(
                "POST /oauth/device_authorization HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000000".utf8)
            let early = try await RawHTTP.request(port: port, head: declared, bodyChunks: [Array("client_id=cli".utf8)], timeout: .seconds(20))
            #expect(early.status == 413, "\(early.head)")
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
    }
}
