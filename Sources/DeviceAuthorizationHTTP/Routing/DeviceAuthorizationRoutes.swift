import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
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

    let oauth: OAuthController
    let verification: VerificationController
    let operations: OperationsController
    let metrics: DeviceAuthorizationMetrics
    let configuration: DeviceAuthorizationHTTPConfiguration
    let pages: PageRenderer
    /// The API's description, served as is, and the routes' table (`StrictRoutingMiddleware`).
    let apiDocument: OpenAPIDocument

    /// Creates the routes.
    /// - Parameters:
    ///   - store: the device-code store (shared Redis).
    ///   - redis: the Redis client, pinged by `/readyz`.
    ///   - clients: the OAuth clients.
    ///   - users: who the person on the verification page is.
    ///   - tokens: mints access tokens.
    ///   - metrics: the Prometheus registry exported at `/metrics`.
    ///   - configuration: URLs, proxies, secrets and limits.
    ///   - rateLimiter: the shared counters of every limit (default: on `redis`, under the store's
    ///     key prefix, keyed with the store's secret).
    /// - Throws: ``DeviceAuthorizationHTTPError`` when the templates or the OpenAPI document cannot be loaded.
    public init(
        store: DeviceCodeStore, redis: RedisClient, clients: any ClientRegistry, users: any UserAuthenticator,
        tokens: any TokenIssuer, metrics: DeviceAuthorizationMetrics = DeviceAuthorizationMetrics(),
        configuration: DeviceAuthorizationHTTPConfiguration, rateLimiter: RequestRateLimiter? = nil
    ) throws {
        let refreshTokens = RefreshTokenStore(client: redis, configuration: store.configuration)
        let rateLimiter = rateLimiter ?? RequestRateLimiter(client: redis, keyPrefix: store.configuration.keyPrefix, secret: store.configuration.secret)
        let pages = try PageRenderer(serviceName: configuration.serviceName)
        let apiDocument = try OpenAPIDocument.bundled.get()
        self.refreshTokens = refreshTokens
        self.metrics = metrics
        self.configuration = configuration
        self.pages = pages
        self.apiDocument = apiDocument
        oauth = OAuthController(
            store: store, refreshTokens: refreshTokens, tokens: tokens, configuration: configuration,
            clientAuthenticator: ClientAuthenticator(registry: clients, rateLimiter: rateLimiter, limits: configuration.rateLimits),
            rateLimiter: rateLimiter)
        verification = VerificationController(
            store: store, clients: clients, users: users, configuration: configuration, pages: pages,
            csrf: CSRFProtection(
                secret: configuration.secret, secureCookies: configuration.secureCookies,
                publicBaseURL: configuration.publicBaseURL),
            rateLimiter: rateLimiter)
        operations = OperationsController(redis: redis, tokens: tokens, metrics: metrics, configuration: configuration, apiDocument: apiDocument)
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
        oauth.addRoutes(to: router)
        verification.addRoutes(to: router)
        operations.addRoutes(to: router)
    }

    /// A router with only `GET /metrics` (and the same strict routing and headers), for a
    /// listener of its own (``DeviceAuthorizationHTTPConfiguration/metricsOnMainListener`` `false`),
    /// so the metrics are reachable only where the scraper is.
    public func makeMetricsRouter() -> Router<DeviceAuthorizationRequestContext> {
        let router = Router(context: DeviceAuthorizationRequestContext.self)
        router.add(middleware: SecurityHeadersMiddleware(configuration: configuration))
        router.add(middleware: StrictRoutingMiddleware(routes: self, paths: ["/metrics": OpenAPIDocument.PathEntry(methods: [.get], html: false)]))
        operations.addMetricsRoute(to: router)
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
        var response =
            entry.html
            ? pages.render("message", ["title": "Not allowed", "message": "This page cannot be used this way.", "show_back": true], status: .methodNotAllowed)
            : OAuthError("invalid_request", "method not allowed; use \(allow)", status: .methodNotAllowed).response
        response.headers[.allow] = allow
        return response
    }
}
