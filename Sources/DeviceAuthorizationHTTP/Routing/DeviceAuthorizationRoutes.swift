import DeviceAuthorization
import Foundation
import Hummingbird
import HTTPTypes
import Logging
import RedisClient

/// The API node's routes, mountable on any Hummingbird router:
///
/// | route | purpose |
/// |---|---|
/// | `POST /oauth/device_authorization` | RFC 8628 §3.1–3.2 |
/// | `POST /oauth/token` | RFC 8628 §3.4–3.5 (device-code grant), RFC 6749 §6 (refresh-token grant) |
/// | `POST /oauth/revoke` | RFC 7009 token revocation |
/// | `POST /oauth/introspect` | RFC 7662 token introspection (confidential clients) |
/// | `GET /device`, `POST /device`, `POST /device/login` | the verification page |
/// | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata |
/// | `GET /.well-known/jwks.json` | the token signing key |
/// | `GET /healthz`, `GET /readyz`, `GET /metrics` | liveness, Redis readiness, Prometheus |
/// | `GET /openapi.json` | this API as an OpenAPI 3 document |
///
/// ```swift
/// let routes = try DeviceAuthorizationRoutes(store: store, redis: redis, clients: clients,
///                                            users: users, tokens: tokens, configuration: settings)
/// let router = routes.makeRouter()
/// let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 8080)))
/// ```
public struct DeviceAuthorizationRoutes: Sendable {
    /// The RFC 8628 grant type.
    public static let deviceCodeGrantType = "urn:ietf:params:oauth:grant-type:device_code"
    /// The RFC 6749 §6 grant type.
    public static let refreshTokenGrantType = "refresh_token"

    /// The refresh-token families, on the store's Redis, prefix and secret.
    public let refreshTokens: RefreshTokenStore

    let store: DeviceCodeStore
    let redis: RedisClient
    let clients: any ClientRegistry
    let users: any UserAuthenticator
    let tokens: any TokenIssuer
    let metrics: DeviceAuthorizationMetrics
    let configuration: DeviceAuthorizationHTTPConfiguration
    let clientAuthenticator: ClientAuthenticator
    let pages: PageRenderer
    /// The API's description, served as is, and the routes' table (`StrictRoutingMiddleware`).
    let apiDocument: OpenAPIDocument
    let csrf: CSRFProtection
    let rateLimiter: RequestRateLimiter
    let logger: Logger

    /// Creates the routes.
    /// - Parameters:
    ///   - store: the device-code store (shared Redis).
    ///   - redis: the Redis client, pinged by `/readyz`.
    ///   - clients: the OAuth clients.
    ///   - users: who the person on the verification page is.
    ///   - tokens: mints access tokens.
    ///   - metrics: the Prometheus registry exported at `/metrics`.
    ///   - configuration: URLs, proxies, secrets and limits.
    ///   - logger: the logger for events (never given codes, tokens or secrets).
    /// - Throws: ``DeviceAuthorizationHTTPError`` when the templates cannot be loaded.
    public init(store: DeviceCodeStore, redis: RedisClient, clients: any ClientRegistry, users: any UserAuthenticator,
                tokens: any TokenIssuer, metrics: DeviceAuthorizationMetrics = DeviceAuthorizationMetrics(),
                configuration: DeviceAuthorizationHTTPConfiguration, logger: Logger = Logger(label: "deviceauth.http")) throws {
        self.store = store
        self.redis = redis
        self.refreshTokens = RefreshTokenStore(client: redis, configuration: store.configuration)
        self.clients = clients
        self.users = users
        self.tokens = tokens
        self.metrics = metrics
        self.configuration = configuration
        let rateLimiter = RequestRateLimiter(client: redis, keyPrefix: store.configuration.keyPrefix, secret: store.configuration.secret)
        self.rateLimiter = rateLimiter
        self.clientAuthenticator = ClientAuthenticator(registry: clients, rateLimiter: rateLimiter, limits: configuration.rateLimits)
        self.pages = try PageRenderer(serviceName: configuration.serviceName)
        self.apiDocument = try OpenAPIDocument.bundled.get()
        self.csrf = CSRFProtection(secret: configuration.secret, secureCookies: configuration.secureCookies, publicBaseURL: configuration.publicBaseURL)
        self.logger = logger
    }

    /// A new router with every route and the request-observation middleware (latency
    /// histogram, `X-Request-Id`, one log line per request).
    public func makeRouter() -> Router<DeviceAuthorizationRequestContext> {
        let router = Router(context: DeviceAuthorizationRequestContext.self)
        addRoutes(to: router)
        return router
    }

    /// Adds the middleware and routes to an existing router.
    public func addRoutes(to router: Router<DeviceAuthorizationRequestContext>) {
        router.add(middleware: SecurityHeadersMiddleware(configuration: configuration))
        router.add(middleware: RequestObservationMiddleware(metrics: metrics))
        router.add(middleware: StrictRoutingMiddleware(routes: self))
        router.post("/oauth/device_authorization") { request, context in await self.deviceAuthorization(request, context) }
        router.post("/oauth/token") { request, context in await self.token(request, context) }
        router.post("/oauth/revoke") { request, context in await self.revoke(request, context) }
        router.post("/oauth/introspect") { request, context in await self.introspect(request, context) }
        router.get("/.well-known/oauth-authorization-server") { _, _ in self.serverMetadata() }
        router.get("/.well-known/jwks.json") { _, _ in await self.jwks() }
        router.get("/healthz") { _, _ in JSONResponse.make(object: ["status": "ok"]) }
        router.get("/readyz") { _, context in await self.readiness(context) }
        if configuration.metricsOnMainListener {
            router.get("/metrics") { _, _ in self.metricsText() }
        }
        router.get("/device") { request, context in await self.verificationPage(request, context) }
        router.post("/device") { request, context in await self.verificationSubmit(request, context) }
        router.post("/device/login") { request, context in await self.login(request, context) }
        router.get("/openapi.json") { _, _ in self.openAPIResponse() }
    }

    /// A router with only `GET /metrics` (and the same strict routing and headers), for a
    /// listener of its own (``DeviceAuthorizationHTTPConfiguration/metricsOnMainListener`` `false`),
    /// so the metrics are reachable only where the scraper is.
    public func makeMetricsRouter() -> Router<DeviceAuthorizationRequestContext> {
        let router = Router(context: DeviceAuthorizationRequestContext.self)
        router.add(middleware: SecurityHeadersMiddleware(configuration: configuration))
        router.add(middleware: StrictRoutingMiddleware(routes: self, paths: ["/metrics": OpenAPIDocument.PathEntry(methods: [.get], html: false)]))
        router.get("/metrics") { _, _ in self.metricsText() }
        return router
    }

    /// The paths the main listener serves: the documented ones, without `/metrics` when the
    /// metrics have a listener of their own.
    var servedPaths: [String: OpenAPIDocument.PathEntry] {
        var paths = apiDocument.paths
        if !configuration.metricsOnMainListener { paths["/metrics"] = nil }
        return paths
    }

    /// 405 with `Allow` and a body of the endpoint's kind: RFC 6749 JSON on the API, an HTML page
    /// on the verification page.
    func methodNotAllowed(_ request: Request, paths: [String: OpenAPIDocument.PathEntry]) -> Response? {
        guard let entry = paths[request.uri.path] else { return nil }
        // HEAD is answered like GET by the server where GET exists.
        guard !entry.methods.contains(request.method), !(request.method == .head && entry.methods.contains(.get)) else { return nil }
        let allow = entry.methods.map(\.rawValue).joined(separator: ", ")
        var response = entry.html
            ? pages.render("message", ["title": "Not allowed", "message": "This page cannot be used this way.", "show_back": true], status: .methodNotAllowed)
            : OAuthError("invalid_request", "method not allowed; use \(allow)", status: .methodNotAllowed).response
        response.headers[.allow] = allow
        return response
    }

    /// `GET /openapi.json`: the API description (``OpenAPIDocument``).
    func openAPIResponse() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "public, max-age=300"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: apiDocument.bytes)))
    }

    // MARK: - OAuth endpoints

    func deviceAuthorization(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let form = try await readForm(request)
            let client = try await clientAuthenticator.authenticate(request: request, form: form) {
                RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            }
            let scopes = try Self.resolveScopes(form["scope"], for: client)
            try await limitDeviceAuthorizations(client: client, request: request, context)
            // The address the device asked from, for the confirmation page (RFC 8628 §5.4).
            let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            let issued = try await store.issue(clientID: client.clientID, scopes: scopes, lifetime: client.codeLifetime, interval: client.pollingInterval,
                                               origin: origin.clientIP)
            context.logger.info("issued device code", metadata: ["grant_id": "\(issued.grantID)", "client_id": "\(client.clientID)"])
            let verificationURI = configuration.publicBaseURL + "/device"
            let complete = verificationURI + "?user_code=" + (issued.userCode.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? issued.userCode)
                .replacingOccurrences(of: "%2D", with: "-")
            return JSONResponse.make(object: [
                "device_code": issued.deviceCode,
                "user_code": issued.userCode,
                "verification_uri": verificationURI,
                "verification_uri_complete": complete,
                "expires_in": issued.expiresIn,
                "interval": issued.interval,
            ])
        } catch {
            return oauthErrorResponse(error, context)
        }
    }

    func token(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let form = try await readForm(request)
            guard let grantType = form["grant_type"] else { throw OAuthError.invalidRequest("missing parameter 'grant_type'") }
            guard grantType == Self.deviceCodeGrantType || grantType == Self.refreshTokenGrantType else {
                throw OAuthError("unsupported_grant_type", "this endpoint supports \(Self.deviceCodeGrantType) and \(Self.refreshTokenGrantType)")
            }
            let client = try await clientAuthenticator.authenticate(request: request, form: form) {
                RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            }
            if grantType == Self.refreshTokenGrantType {
                return try await refresh(form: form, client: client, context)
            }
            guard let deviceCode = form["device_code"] else { throw OAuthError.invalidRequest("missing parameter 'device_code'") }
            // Unknown codes are counted after the fact, so an honest poll costs one round trip.
            // An address this node already knows to be over its limit is refused before the
            // poll, whatever its code, so the limit is no oracle for live codes.
            // (The address is worked out only when the node remembers refusals or must count.)
            if rateLimiter.remembersRefusals, let bucket = unknownDeviceCodeBucket(request, context),
               case .limited(_, let retryAfter) = rateLimiter.knownLimit([bucket]) {
                throw OAuthError.rateLimited("too many unknown device codes from this address", retryAfter: retryAfter)
            }
            // An oversized code cannot exist: answered like an unknown one without asking Redis.
            guard deviceCode.utf8.count <= 256 else { return try await answer(.invalidGrant(.unknown), client: client, request, context) }
            // What this poll minted, if it did: discarded unless this poll's answer is the one sent.
            var minted: (family: IssuedRefreshToken?, tokenID: String?)?
            // The origin is worked out only for an approved or redeemed code (pending polls skip it).
            let result = try await store.poll(deviceCode: deviceCode, clientID: client.clientID,
                                              origin: RequestOrigin(request: request, peerAddress: context.peerIPAddress,
                                                                    trustedProxies: configuration.trustedProxies).clientIP) { grant in
                var family: IssuedRefreshToken?
                let planned = plannedAccessToken()
                if client.issuesRefreshToken(scopes: grant.scopes) {
                    // Before the access token, so the family knows its jti: revoking the family
                    // then denylists this first token too.
                    family = try await refreshTokens.createFamily(clientID: client.clientID, userID: grant.userID, scopes: grant.scopes,
                                                                  idleLifetime: client.refreshIdleLifetime, absoluteLifetime: client.refreshAbsoluteLifetime,
                                                                  accessToken: planned)
                }
                let (body, tokenID) = try await tokenAnswer(TokenRequest(userID: grant.userID, clientID: client.clientID, scopes: grant.scopes, grantID: grant.grantID,
                                                                         audience: client.audience, tokenID: planned.tokenID, familyID: family?.familyID),
                                                            refreshToken: family?.token, context)
                minted = (family, tokenID)
                return body
            }
            switch result {
            case .outcome(let outcome):
                if let minted { await discard(minted.family, client: client, context) }
                return try await answer(outcome, client: client, request, context)
            case .unconfirmed(let grantID):
                // Kept for the next poll (see TokenPollResult.unconfirmed): 503, retry; nothing discarded.
                context.logger.notice("token answer kept for the next poll: the redemption is not on enough Redis copies yet",
                                      metadata: ["grant_id": "\(grantID)", "client_id": "\(client.clientID)"])
                throw OAuthError.notConfirmedYet
            case .answer(let tokenAnswer):
                switch tokenAnswer.source {
                case .minted:
                    // The jti ties a token seen later (a resource server's log, a leak) to its grant.
                    context.logger.info("issued access token", metadata: ["grant_id": "\(tokenAnswer.grantID)", "client_id": "\(client.clientID)",
                                                                          "jti": "\(minted?.tokenID ?? "-")", "refresh": "\(minted?.family != nil)"])
                case .redelivered, .concurrentRedemption:
                    if let minted { await discard(minted.family, client: client, context) }
                    context.logger.notice("token answer sent again", metadata: ["grant_id": "\(tokenAnswer.grantID)", "client_id": "\(client.clientID)"])
                }
                return JSONResponse.make(bytes: tokenAnswer.body)
            }
        } catch {
            return oauthErrorResponse(error, context)
        }
    }

    /// The answer to a poll that gave no token; an unknown code is counted against its address.
    func answer(_ outcome: PollOutcome, client: RegisteredClient, _ request: Request, _ context: DeviceAuthorizationRequestContext) async throws -> Response {
        if case .invalidGrant(.unknown) = outcome, let unknownCodeBucket = unknownDeviceCodeBucket(request, context) {
            let recorded = try await rateLimiter.record([unknownCodeBucket])
            if !recorded.admitted, case .limited(_, let retryAfter) = recorded.next {
                throw OAuthError.rateLimited("too many unknown device codes from this address", retryAfter: retryAfter)
            }
        }
        switch outcome {
        case .authorizationPending:
            return OAuthError.authorizationPendingResponse
        case .slowDown(let newInterval):
            throw OAuthError("slow_down", "polling too fast; wait at least \(newInterval) seconds between requests", extra: ["interval": newInterval])
        case .accessDenied:
            return OAuthError.accessDeniedResponse
        case .expiredToken:
            return OAuthError.expiredTokenResponse
        case .invalidGrant(let reason):
            if reason != .unknown {
                context.logger.notice("invalid_grant", metadata: ["reason": "\(reason.rawValue)", "client_id": "\(client.clientID)"])
            }
            throw OAuthError("invalid_grant", reason == .alreadyRedeemed ? "the device code was already used" : "the device code is not valid for this client")
        case .authorized:
            // The redeeming poll answers with a token; this outcome never reaches here.
            throw OAuthError.serverError
        }
    }

    /// A refresh family minted for an answer that was not sent (another poll's answer was): revoked,
    /// so no usable refresh token exists that nobody holds.
    func discard(_ family: IssuedRefreshToken?, client: RegisteredClient, _ context: DeviceAuthorizationRequestContext) async {
        guard let family else { return }
        do {
            _ = try await refreshTokens.revoke(refreshToken: family.token, clientID: client.clientID)
        } catch {
            context.logger.warning("could not revoke the refresh family of an answer not sent; it expires unused",
                                   metadata: ["family_id": "\(family.familyID)", "error": "\(type(of: error))"])
        }
    }

    /// `grant_type=refresh_token` (RFC 6749 §6) for an authenticated client: one rotation script.
    func refresh(form: FormBody, client: RegisteredClient, _ context: DeviceAuthorizationRequestContext) async throws -> Response {
        guard let presented = form["refresh_token"], !presented.isEmpty else { throw OAuthError.invalidRequest("missing parameter 'refresh_token'") }
        var requested: [String]?
        if let scope = form["scope"] {
            requested = try Self.parseScopes(scope)
            // A scope the client may no longer ask for is refused even if the family has it.
            if let denied = requested?.first(where: { !client.allowedScopes.contains($0) }) {
                throw OAuthError("invalid_scope", "scope '\(String(denied.prefix(64)))' is not allowed for this client")
            }
        }
        let planned = plannedAccessToken()
        // An oversized token cannot be one of ours: answered like an unknown one without asking Redis.
        let outcome: RefreshOutcome = presented.utf8.count <= 256
            ? try await refreshTokens.refresh(token: presented, clientID: client.clientID, scopes: requested, accessToken: planned)
            : .invalidGrant(.unknown)
        switch outcome {
        case .rotated(let rotated):
            let scopes = rotated.scopes.filter { client.allowedScopes.contains($0) }
            return try await tokenResponse(TokenRequest(userID: rotated.userID, clientID: client.clientID, scopes: scopes, grantID: rotated.familyID,
                                                        audience: client.audience, tokenID: planned.tokenID, familyID: rotated.familyID),
                                           refreshToken: rotated.token, context)
        case .invalidScope:
            throw OAuthError("invalid_scope", "a refresh may ask for some of the granted scopes, never for more")
        case .invalidGrant(let reason):
            if reason != .unknown {
                context.logger.notice("invalid_grant", metadata: ["reason": "\(reason.rawValue)", "client_id": "\(client.clientID)"])
            }
            throw OAuthError("invalid_grant", reason == .reused ? "the refresh token was already used; the grant is revoked"
                                                                 : "the refresh token is not valid for this client")
        }
    }

    /// A fresh `jti` and the latest `exp` a token minted now can have.
    func plannedAccessToken() -> AccessTokenReference {
        AccessTokenReference(tokenID: UUID().uuidString.lowercased(),
                             expiresAt: Date().addingTimeInterval(TimeInterval(tokens.maximumTokenLifetime.components.seconds) + 1))
    }

    /// Mints the access token and renders the RFC 6749 §5.1 answer; also its `jti`.
    func tokenAnswer(_ tokenRequest: TokenRequest, refreshToken: String?, _ context: DeviceAuthorizationRequestContext) async throws -> (body: [UInt8], tokenID: String?) {
        let token: IssuedToken
        do {
            token = try await tokens.issueToken(for: tokenRequest)
        } catch {
            context.logger.error("token issuer failed after redemption", metadata: ["grant_id": "\(tokenRequest.grantID)", "error": "\(type(of: error))"])
            throw OAuthError.serverError
        }
        var body: [String: Any] = ["access_token": token.accessToken, "token_type": token.tokenType, "expires_in": token.expiresIn]
        if !token.scopes.isEmpty { body["scope"] = token.scopes.joined(separator: " ") }
        if let refreshToken { body["refresh_token"] = refreshToken }
        return (JSONResponse.encode(body), token.tokenID)
    }

    /// ``tokenAnswer(_:refreshToken:_:)`` as a response, logged with its `jti`.
    func tokenResponse(_ tokenRequest: TokenRequest, refreshToken: String?, _ context: DeviceAuthorizationRequestContext) async throws -> Response {
        let (body, tokenID) = try await tokenAnswer(tokenRequest, refreshToken: refreshToken, context)
        // The jti ties a token seen later (a resource server's log, a leak) to its grant.
        context.logger.info("issued access token", metadata: ["grant_id": "\(tokenRequest.grantID)", "client_id": "\(tokenRequest.clientID)",
                                                              "jti": "\(tokenID ?? "-")", "refresh": "\(refreshToken != nil)"])
        return JSONResponse.make(bytes: body)
    }

    func serverMetadata() -> Response {
        let base = configuration.publicBaseURL
        return JSONResponse.make(object: [
            "issuer": configuration.issuer,
            "device_authorization_endpoint": base + "/oauth/device_authorization",
            "token_endpoint": base + "/oauth/token",
            "jwks_uri": base + "/.well-known/jwks.json",
            "grant_types_supported": [Self.deviceCodeGrantType, Self.refreshTokenGrantType],
            "response_types_supported": [String](),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint": base + "/oauth/revoke",
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint": base + "/oauth/introspect",
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        ])
    }

    func jwks() async -> Response {
        guard let set = try? await tokens.jsonWebKeySet() else {
            return JSONResponse.make(status: .notFound, object: ["error": "not_found", "error_description": "this server publishes no keys"])
        }
        var response = JSONResponse.make(object: set)
        response.headers[.contentType] = "application/jwk-set+json"
        return response
    }

    func readiness(_ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let reply = try await redis.send("PING")
            guard reply.string == "PONG" else { throw RedisError(.protocolError, "unexpected PING reply") }
            return JSONResponse.make(object: ["status": "ready", "redis": "ok"])
        } catch {
            context.logger.warning("readiness check failed: Redis unreachable", metadata: ["error": "\(error)"])
            var response = JSONResponse.make(status: .serviceUnavailable, object: ["status": "unavailable", "redis": "unreachable"])
            response.headers[.retryAfter] = "5"
            return response
        }
    }

    func metricsText() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.render())))
    }

    // MARK: - Rate limits

    /// Charges a device authorization request to its client and its client IP; throws 429 when
    /// either is at its limit (nothing is counted then).
    func limitDeviceAuthorizations(client: RegisteredClient, request: Request, _ context: DeviceAuthorizationRequestContext) async throws {
        let limits = configuration.rateLimits
        var buckets: [RateLimitBucket] = []
        if let limit = client.deviceAuthorizationLimit ?? limits.deviceAuthorizationsPerClient {
            buckets.append(RateLimitBucket(name: "dac", subject: client.clientID, limit: limit))
        }
        if let limit = limits.deviceAuthorizationsPerIP {
            let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            buckets.append(RateLimitBucket(name: "dai", subject: origin.rateLimitKey, limit: limit))
        }
        guard case .limited(let index, let retryAfter) = try await rateLimiter.acquire(buckets) else { return }
        let perClient = buckets[index].name == "dac"
        context.logger.notice("device authorization rate limit reached",
                              metadata: ["limit": "\(perClient ? "client" : "ip")", "client_id": "\(client.clientID)"])
        throw OAuthError.rateLimited(perClient ? "too many device authorization requests for this client" : "too many device authorization requests from this address",
                                     retryAfter: retryAfter)
    }

    /// The per-IP bucket of unknown device codes, or `nil` when that limit is off.
    func unknownDeviceCodeBucket(_ request: Request, _ context: DeviceAuthorizationRequestContext) -> RateLimitBucket? {
        guard let limit = configuration.rateLimits.unknownDeviceCodesPerIP else { return nil }
        let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
        return RateLimitBucket(name: "tku", subject: origin.rateLimitKey, limit: limit)
    }

    // MARK: - Helpers

    func readForm(_ request: Request) async throws(OAuthError) -> FormBody {
        do {
            return try await FormBody.read(from: request, limit: configuration.maxBodySize, maxParameters: configuration.maxFormParameters)
        } catch {
            throw OAuthError.from(error)
        }
    }

    /// The scope tokens of a `scope` parameter, deduplicated, each checked against RFC 6749 §3.3.
    static func parseScopes(_ text: String) throws(OAuthError) -> [String] {
        var scopes: [String] = []
        for token in text.split(separator: " ", omittingEmptySubsequences: true).map(String.init) {
            guard token.utf8.allSatisfy({ $0 == 0x21 || (0x23...0x5B).contains($0) || (0x5D...0x7E).contains($0) }) else {
                throw OAuthError("invalid_scope", "the scope parameter is malformed")
            }
            if !scopes.contains(token) { scopes.append(token) }
        }
        return scopes
    }

    /// The scopes to grant: the requested ones (deduplicated, each allowed), or the client's defaults.
    static func resolveScopes(_ requested: String?, for client: RegisteredClient) throws(OAuthError) -> [String] {
        guard let requested else { return client.defaultScopes ?? client.allowedScopes }
        var scopes: [String] = []
        for token in requested.split(separator: " ", omittingEmptySubsequences: true).map(String.init) {
            // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            guard token.utf8.allSatisfy({ $0 == 0x21 || (0x23...0x5B).contains($0) || (0x5D...0x7E).contains($0) }) else {
                throw OAuthError("invalid_scope", "the scope parameter is malformed")
            }
            guard client.allowedScopes.contains(token) else {
                throw OAuthError("invalid_scope", "scope '\(String(token.prefix(64)))' is not allowed for this client")
            }
            if !scopes.contains(token) { scopes.append(token) }
        }
        return scopes.isEmpty ? (client.defaultScopes ?? client.allowedScopes) : scopes
    }

    func oauthErrorResponse(_ error: any Error, _ context: DeviceAuthorizationRequestContext) -> Response {
        switch error {
        case let error as OAuthError:
            return error.response
        case let error as RedisError:
            context.logger.error("Redis unavailable", metadata: ["error": "\(error.code)"])
            return OAuthError.temporarilyUnavailable.response
        case let error as DeviceAuthorizationError where error.code == .invalidArgument:
            return OAuthError.invalidRequest(error.message).response
        default:
            context.logger.error("unexpected error", metadata: ["error": "\(error)"])
            return OAuthError.serverError.response
        }
    }
}

/// Strict routing, before the router: a path that is not exactly a served route is 404 (the
/// router's own answer and `NotFound` metrics label), and a wrong method on a served path is 405
/// (see ``DeviceAuthorizationRoutes/methodNotAllowed(_:paths:)``).
///
/// Hummingbird's trie splits paths on `/` and drops empty components, so `/metrics/`,
/// `/metrics//` and `/device/` would reach `/metrics` and `/device`: a proxy that hides
/// `location = /metrics` then still leaks the metrics through `/metrics/`.
struct StrictRoutingMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: DeviceAuthorizationRoutes
    let paths: [String: OpenAPIDocument.PathEntry]

    init(routes: DeviceAuthorizationRoutes, paths: [String: OpenAPIDocument.PathEntry]? = nil) {
        self.routes = routes
        self.paths = paths ?? routes.servedPaths
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard paths[request.uri.path] != nil else {
            context.coreContext.endpointPath.value = "NotFound"
            throw HTTPError(.notFound)
        }
        if let response = routes.methodNotAllowed(request, paths: paths) { return response }
        return try await next(request, context)
    }
}

/// Headers on every answer of the routes, errors and 404s included: `X-Content-Type-Options:
/// nosniff` (a browser must not read a JSON error or the metrics as HTML or script), and
/// `Strict-Transport-Security` when the public base URL is https (a browser that once reached the
/// page over TLS never again sends a session cookie or a user code in clear).
struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    /// One year, the value HSTS preload lists ask for; no `includeSubDomains`: the server cannot
    /// know that every sibling host speaks TLS.
    static var hstsValue: String { "max-age=31536000" }

    let hsts: Bool

    init(configuration: DeviceAuthorizationHTTPConfiguration) {
        self.hsts = configuration.publicBaseURL.lowercased().hasPrefix("https://")
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            // The router's 404 and other thrown answers: render them here so they get the headers too.
            response = try error.response(from: request, context: context)
        }
        // Only where missing: the prebuilt JSON and page headers carry it already, and writing it
        // again would copy their shared storage on every answer (the token endpoint's hot path).
        if response.headers.value(of: .xContentTypeOptions) == nil { response.headers[.xContentTypeOptions] = "nosniff" }
        if hsts { response.headers[.strictTransportSecurity] = Self.hstsValue }
        return response
    }
}

extension HTTPField.Name {
    static let strictTransportSecurity = HTTPField.Name("Strict-Transport-Security")!
}
