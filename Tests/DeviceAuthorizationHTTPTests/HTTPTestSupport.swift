import DeviceAuthorization
import DeviceAuthorizationHTTP
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Metrics
import NIOCore
import Prometheus
import RedisClient
import TestProcesses
import Testing

/// One Prometheus registry for the whole test process: `MetricsSystem` can be bootstrapped once.
enum TestMetrics {
    static let shared: DeviceAuthorizationMetrics = {
        let metrics = DeviceAuthorizationMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        return metrics
    }()
}

let testSecret = Array("an-http-test-secret-of-32-bytes-or-more".utf8)
let confidentialSecret = "correct horse battery staple"

/// The clients every fixture knows.
let testClients: [RegisteredClient] = [
    RegisteredClient(clientID: "cli", displayName: "Test CLI", allowedScopes: ["profile", "email", "admin"], defaultScopes: ["profile"]),
    RegisteredClient(clientID: "other-cli", displayName: "Other CLI", allowedScopes: ["profile"]),
    RegisteredClient(clientID: "svc", displayName: "Confidential Service", allowedScopes: ["profile"], secret: confidentialSecret),
    RegisteredClient(clientID: "short", displayName: "Short-lived", allowedScopes: ["profile"], codeLifetime: .seconds(1), pollingInterval: 0),
    RegisteredClient(clientID: "fast", displayName: "Fast poller", allowedScopes: ["profile", "email"], pollingInterval: 0),
    RegisteredClient(
        clientID: "limited", displayName: "Client with its own rate limit", allowedScopes: ["profile"],
        deviceAuthorizationLimit: RateLimit(2, per: .seconds(3600))),
    RegisteredClient(
        clientID: "aud-cli", displayName: "Client with its own audience", allowedScopes: ["profile"], pollingInterval: 0,
        audience: "https://api.example.test"),
    RegisteredClient(
        clientID: "rt", displayName: "Refreshing CLI", allowedScopes: ["profile", "email", "offline_access"], defaultScopes: ["profile"],
        pollingInterval: 0, refreshTokens: true),
    RegisteredClient(clientID: "rt-other", displayName: "Other refreshing CLI", allowedScopes: ["profile", "email"], pollingInterval: 0, refreshTokens: true),
    RegisteredClient(
        clientID: "offline", displayName: "Offline-access CLI", allowedScopes: ["profile", "offline_access"], defaultScopes: ["profile"],
        pollingInterval: 0),
    RegisteredClient(
        clientID: "rt-svc", displayName: "Refreshing service", allowedScopes: ["profile"], secret: confidentialSecret, pollingInterval: 0,
        refreshTokens: true),
    // 5 s: a busy machine must not let the token die between the redemption and the rotation.
    RegisteredClient(
        clientID: "rt-idle", displayName: "Short idle refresh", allowedScopes: ["profile"], pollingInterval: 0, refreshTokens: true,
        refreshIdleLifetime: .seconds(5)),
    RegisteredClient(
        clientID: "rt-abs", displayName: "Short absolute refresh", allowedScopes: ["profile"], pollingInterval: 0, refreshTokens: true,
        refreshAbsoluteLifetime: .seconds(3)),
]

/// Routes on the shared test Redis (REDIS_URL) with their own key prefix.
struct HTTPFixture {
    let redis: RedisClient
    let store: DeviceCodeStore
    let routes: DeviceAuthorizationRoutes
    let tokens: JWTTokenIssuer

    init(
        users: (any UserAuthenticator)? = nil, trustedProxies: [String] = [], redisURL: String? = nil,
        keyPrefix: String? = nil, signingKeyPEM: String? = nil, secureCookies: Bool? = nil, publicBaseURL: String? = nil,
        rateLimits: RateLimitSettings = RateLimitSettings(), maxBodySize: Int = 16 * 1024,
        configureStore: (inout DeviceCodeStoreConfiguration) -> Void = { _ in },
        configureHTTP: (inout DeviceAuthorizationHTTPConfiguration) -> Void = { _ in }
    ) async throws {
        _ = TestMetrics.shared
        let url = redisURL ?? TestEnvironment.redisURL
        var redisConfiguration = try RedisClientConfiguration(url: url)
        redisConfiguration.connectTimeout = .milliseconds(500)
        redisConfiguration.commandTimeout = .seconds(2)
        redis = RedisClient(configuration: redisConfiguration)
        var storeConfiguration = DeviceCodeStoreConfiguration(keyPrefix: keyPrefix ?? Self.uniquePrefix(), secret: testSecret)
        configureStore(&storeConfiguration)
        store = DeviceCodeStore(client: redis, configuration: storeConfiguration)
        tokens = try await JWTTokenIssuer(issuer: "https://auth.test", privateKeyPEM: signingKeyPEM)
        var httpConfiguration = DeviceAuthorizationHTTPConfiguration(
            issuer: "https://auth.test", publicBaseURL: publicBaseURL, trustedProxies: try TrustedProxies(trustedProxies), secret: testSecret,
            secureCookies: secureCookies, maxBodySize: maxBodySize, rateLimits: rateLimits)
        configureHTTP(&httpConfiguration)
        routes = try DeviceAuthorizationRoutes(
            store: store, redis: redis, clients: StaticClientRegistry(clients: testClients),
            users: users
                ?? DevelopmentLoginAuthenticator(
                    users: ["alice": "wonderland", "bob": "builder"], secret: testSecret,
                    secureCookies: secureCookies ?? true),
            tokens: tokens, metrics: DeviceAuthorizationMetrics(registry: TestMetrics.shared.registry),
            configuration: httpConfiguration)
    }

    static func uniquePrefix() -> String { "h" + UUID().uuidString.prefix(8).lowercased() }

    var app: some ApplicationProtocol {
        Application(router: routes.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
    }

    /// The application on a fixed port (for a public base URL that names it, as a browser's
    /// `Origin` does).
    func app(port: Int) -> some ApplicationProtocol {
        Application(router: routes.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: port)))
    }

    func shutdown() { redis.shutdown() }

    /// The keys of this fixture's prefix that match `pattern` (e.g. `*:d:*` for grants).
    func keys(_ pattern: String) async throws -> [String] {
        var cursor = "0"
        var keys: [String] = []
        repeat {
            let reply = try await redis.send("SCAN", cursor, "MATCH", store.configuration.keyPrefix + ":" + pattern, "COUNT", 1000).array ?? []
            cursor = reply[0].string ?? "0"
            keys += (reply[1].array ?? []).compactMap(\.string)
        } while cursor != "0"
        return keys
    }
}

// MARK: - Requests

func formEncode(_ parameters: [(String, String)]) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return parameters.map { name, value in
        "\(name.addingPercentEncoding(withAllowedCharacters: allowed)!)=\(value.addingPercentEncoding(withAllowedCharacters: allowed)!)"
    }.joined(separator: "&")
}

extension TestClientProtocol {
    /// POSTs a form.
    @discardableResult
    func postForm(_ path: String, _ parameters: [(String, String)], headers: HTTPFields = [:]) async throws -> TestResponse {
        var headers = headers
        if headers[.contentType] == nil { headers[.contentType] = "application/x-www-form-urlencoded" }
        return try await execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: formEncode(parameters)))
    }

    /// Issues a device code for `clientID`. A failed issue ends the test with the answer's status
    /// and body, rather than letting a later cast of a missing code crash the whole test process.
    func issue(clientID: String = "cli", scope: String? = nil, headers: HTTPFields = [:]) async throws -> IssuedGrant {
        var parameters = [("client_id", clientID)]
        if let scope { parameters.append(("scope", scope)) }
        let response = try await postForm("/oauth/device_authorization", parameters, headers: headers)
        try #require(response.status == .ok, "device_authorization answered \(response.status): \(String(buffer: response.body))")
        let json = response.json
        return IssuedGrant(
            deviceCode: try #require(json["device_code"] as? String, "no device_code in \(json)"),
            userCode: try #require(json["user_code"] as? String, "no user_code in \(json)"), json: json)
    }

    /// Polls the token endpoint.
    func poll(deviceCode: String, clientID: String = "cli", extra: [(String, String)] = [], headers: HTTPFields = [:]) async throws -> TestResponse {
        try await postForm(
            "/oauth/token", [("grant_type", DeviceAuthorizationRoutes.deviceCodeGrantType), ("device_code", deviceCode), ("client_id", clientID)] + extra,
            headers: headers)
    }
}

/// A successful device authorization answer: both codes (checked present) and the whole JSON.
struct IssuedGrant {
    let deviceCode: String
    let userCode: String
    let json: [String: Any]

    /// A member of the JSON answer (`expires_in`, `interval`, …).
    subscript(member: String) -> Any? { json[member] }
}

extension TestResponse {
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    }
    var text: String { String(buffer: body) }
    var oauthError: String? { json["error"] as? String }
}

/// Expects an RFC 6749 §5.2 error answer.
func expectOAuthError(
    _ response: TestResponse, _ code: String, status: HTTPResponse.Status = .badRequest,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(response.status == status, "status for \(code): \(response.text)", sourceLocation: sourceLocation)
    #expect(response.oauthError == code, "body: \(response.text)", sourceLocation: sourceLocation)
    #expect(response.json["error_description"] is String, sourceLocation: sourceLocation)
    #expect(response.headers[.cacheControl] == "no-store", sourceLocation: sourceLocation)
    #expect(response.headers[.contentType]?.hasPrefix("application/json") == true, sourceLocation: sourceLocation)
}

/// A poll of a redeemed code from the device's own address, within the retry window: the same
/// token answer again (a device whose answer was lost), never a second token.
func expectSameToken(_ response: TestResponse, as first: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(response.status == .ok, "\(response.text)", sourceLocation: sourceLocation)
    #expect(response.json["access_token"] is String, sourceLocation: sourceLocation)
    #expect(response.text == first.text, "the same answer, byte for byte", sourceLocation: sourceLocation)
    #expect(response.headers[.cacheControl] == "no-store", sourceLocation: sourceLocation)
}

/// An address other than the device's, through a trusted proxy (fixtures trusting 127.0.0.1).
let elsewhere: HTTPFields = [.xForwardedForTest: "203.0.113.250"]

func basicAuthorization(_ id: String, _ secret: String) -> String {
    "Basic " + Data("\(id):\(secret)".utf8).base64EncodedString()
}

// MARK: - A browser

/// Keeps cookies between requests and reads hidden form fields, like a browser without JavaScript.
final class Browser: @unchecked Sendable {
    private(set) var cookies: [String: String] = [:]
    private let lock = NSLock()

    func headers(_ extra: HTTPFields = [:]) -> HTTPFields {
        var headers = extra
        lock.lock()
        defer { lock.unlock() }
        if !cookies.isEmpty {
            headers[.cookie] = cookies.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")
        }
        return headers
    }

    func remember(_ response: TestResponse) {
        lock.lock()
        defer { lock.unlock() }
        for header in response.headers[values: .setCookie] {
            let pair = header.split(separator: ";", maxSplits: 1)[0]
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { continue }
            let name = String(parts[0]).trimmingCharacters(in: .whitespaces)
            if parts[1].isEmpty || header.lowercased().contains("max-age=0") { cookies[name] = nil } else { cookies[name] = String(parts[1]) }
        }
    }

    func get(_ client: some TestClientProtocol, _ uri: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        let response = try await client.execute(uri: uri, method: .get, headers: self.headers(headers))
        remember(response)
        return response
    }

    func post(_ client: some TestClientProtocol, _ uri: String, _ parameters: [(String, String)], headers: HTTPFields = [:]) async throws -> TestResponse {
        var headers = self.headers(headers)
        headers[.contentType] = "application/x-www-form-urlencoded"
        let response = try await client.execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(string: formEncode(parameters)))
        remember(response)
        return response
    }

    /// Presses Approve or Deny (`action`) on a confirmation page: posts the page's hidden code,
    /// grant id and CSRF token, as the page's form does.
    func decide(
        _ client: some TestClientProtocol, _ action: String, on page: TestResponse, headers: HTTPFields = [:],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> TestResponse {
        var form = [("action", action)]
        for name in ["user_code", "grant_id", "csrf_token"] {
            form.append((name, try #require(hiddenField(name, in: page.text), "no hidden \(name) on the confirmation page", sourceLocation: sourceLocation)))
        }
        return try await post(client, "/device", form, headers: headers)
    }

    /// Enters a code as a person does: opens `/device` (which only shows the form), then posts
    /// the form with `action=lookup`. Answers the GET when it shows no form.
    func lookup(_ client: some TestClientProtocol, _ userCode: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        let page = try await get(client, "/device", headers: headers)
        guard let token = hiddenField("csrf_token", in: page.text) else { return page }
        return try await post(client, "/device", [("action", "lookup"), ("user_code", userCode), ("csrf_token", token)], headers: headers)
    }

    /// Signs in through the development login form.
    func logIn(_ client: some TestClientProtocol, user: String = "alice", password: String = "wonderland") async throws {
        let page = try await get(client, "/device")
        let token = try #require(hiddenField("csrf_token", in: page.text))
        let response = try await post(client, "/device/login", [("username", user), ("password", password), ("csrf_token", token)])
        #expect(response.status == .seeOther)
    }
}

/// The value of a hidden input in a page.
func hiddenField(_ name: String, in html: String) -> String? {
    guard let range = html.range(of: "name=\"\(name)\" value=\"") else { return nil }
    let rest = html[range.upperBound...]
    guard let end = rest.firstIndex(of: "\"") else { return nil }
    return String(rest[..<end])
}
