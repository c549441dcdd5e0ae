import DeviceAuthorization

/// Settings of the HTTP layer. Every API node behind one load balancer should use the same values.
public struct DeviceAuthorizationHTTPConfiguration: Sendable {
    /// The issuer identifier (RFC 8414 `issuer`, the JWT `iss`), e.g. `https://auth.example.com`.
    public var issuer: String
    /// The public base URL people and devices reach the server at (for `verification_uri` and
    /// the metadata's endpoints), without a trailing slash.
    public var publicBaseURL: String
    /// Addresses whose `X-Forwarded-For` and user header are believed.
    public var trustedProxies: TrustedProxies
    /// Key material for CSRF tokens (≥ 32 bytes; the same on every node).
    public var secret: [UInt8]
    /// Whether cookies get the `Secure` attribute (set it whenever people use HTTPS).
    public var secureCookies: Bool
    /// Largest accepted request body in bytes; larger ones get 413 `invalid_request`.
    public var maxBodySize: Int
    /// Most parameters one form body may carry; more get 400 `invalid_request` "too many
    /// parameters" before the rest is decoded.
    public var maxFormParameters: Int
    /// The product name shown on the verification page.
    public var serviceName: String
    /// Request rate limits (abuse protection), shared by all nodes through Redis.
    public var rateLimits: RateLimitSettings
    /// Whether the main listener serves `GET /metrics`; `false` when the metrics have a listener
    /// of their own (``DeviceAuthorizationRoutes/makeMetricsRouter()``), and the main one answers 404.
    public var metricsOnMainListener: Bool

    /// Creates a configuration.
    /// - Parameters:
    ///   - issuer: the issuer identifier (`http://127.0.0.1:8080`).
    ///   - publicBaseURL: the public base URL (`nil`: the issuer).
    ///   - trustedProxies: trusted reverse proxies (none).
    ///   - secret: CSRF key material (≥ 32 bytes).
    ///   - secureCookies: `Secure` cookies (`true` when the public URL is https).
    ///   - maxBodySize: request body limit (16 KiB).
    ///   - maxFormParameters: parameters per form body (64; no endpoint reads more than six).
    ///   - serviceName: name on the page ("Device sign-in").
    ///   - rateLimits: request rate limits (``RateLimitSettings/init(deviceAuthorizationsPerIP:deviceAuthorizationsPerClient:unknownDeviceCodesPerIP:)``'s defaults).
    ///   - metricsOnMainListener: serve `/metrics` on the main listener (`true`).
    public init(
        issuer: String = "http://127.0.0.1:8080",
        publicBaseURL: String? = nil,
        trustedProxies: TrustedProxies = .none,
        secret: [UInt8],
        secureCookies: Bool? = nil,
        maxBodySize: Int = 16 * 1024,
        maxFormParameters: Int = 64,
        serviceName: String = "Device sign-in",
        rateLimits: RateLimitSettings = RateLimitSettings(),
        metricsOnMainListener: Bool = true
    ) {
        self.issuer = issuer
        let base = publicBaseURL ?? issuer
        self.publicBaseURL = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.trustedProxies = trustedProxies
        self.secret = secret
        self.secureCookies = secureCookies ?? self.publicBaseURL.lowercased().hasPrefix("https://")
        self.maxBodySize = maxBodySize
        self.maxFormParameters = max(1, maxFormParameters)
        self.serviceName = serviceName
        self.rateLimits = rateLimits
        self.metricsOnMainListener = metricsOnMainListener
    }
}

/// Request rate limits of the API nodes. Counters live in Redis (``RequestRateLimiter``), so the
/// limits hold across every node; `nil` turns a limit off.
///
/// Over a limit the answer is HTTP 429 with `Retry-After` and the RFC 6749 error
/// `temporarily_unavailable` (the server is unable to handle the request *for now*).
/// User-code guessing on the verification page has its own limits in the store
/// (``DeviceCodeStoreConfiguration/maxFailuresPerCaller``, ``DeviceCodeStoreConfiguration/maxFailuresGlobal``).
public struct RateLimitSettings: Sendable, Hashable {
    /// `POST /oauth/device_authorization` per client IP (IPv6: per /64). Bounds what one
    /// address can make Redis hold.
    public var deviceAuthorizationsPerIP: RateLimit?
    /// `POST /oauth/device_authorization` per client, unless the client has its own
    /// (``RegisteredClient/deviceAuthorizationLimit``). With a known set of clients this bounds
    /// the number of live grants, and so Redis memory: limit × (lifetime + grace) / window per client.
    public var deviceAuthorizationsPerClient: RateLimit?
    /// Token requests with a device code that does not exist (or is malformed), per client IP.
    /// Counted after a poll finds no such code; an address a node knows to be over the limit is
    /// refused before polling, a live code included, so it cannot probe codes.
    public var unknownDeviceCodesPerIP: RateLimit?
    /// Development-login attempts per client IP (IPv6: per /64). Charged before the password is
    /// checked and given back when it was right, so a burst across nodes gets at most the limit
    /// of wrong-password answers, and the rest (a right password included) 429.
    public var loginFailuresPerIP: RateLimit?
    /// Development-login attempts per user name, counted the same way (guessing one person's
    /// password from many addresses).
    public var loginFailuresPerUser: RateLimit?
    /// Client authentications of a confidential client, per client id: charged before the
    /// secret is checked and given back when it is right, so only failures count and a burst
    /// across nodes gets no more `invalid_client` answers than the limit.
    public var failedClientAuthenticationsPerClient: RateLimit?
    /// The same per client IP (IPv6: per /64), across all clients.
    public var failedClientAuthenticationsPerIP: RateLimit?

    /// Creates the limits.
    /// - Parameters:
    ///   - deviceAuthorizationsPerIP: per client IP (30 per minute: a household or office starting
    ///     many devices at once stays far below it).
    ///   - deviceAuthorizationsPerClient: per client (600 per minute = 10/s; raise it per client for
    ///     big fleets).
    ///   - unknownDeviceCodesPerIP: unknown device codes per client IP (30 per minute; a
    ///     well-behaved device sees at most one, when its code is gone).
    ///   - loginFailuresPerIP: wrong development-login passwords per client IP (10 per 15 minutes).
    ///   - loginFailuresPerUser: wrong development-login passwords per user name (20 per 15
    ///     minutes; higher than per IP, because anyone can spend it and lock the name out).
    ///   - failedClientAuthenticationsPerClient: failed client authentications per confidential
    ///     client (20 per minute: a misconfigured client is noticed, a guesser gets 20 tries a minute).
    ///   - failedClientAuthenticationsPerIP: failed client authentications per client IP (20 per minute).
    public init(
        deviceAuthorizationsPerIP: RateLimit? = RateLimit(30, per: .seconds(60)),
        deviceAuthorizationsPerClient: RateLimit? = RateLimit(600, per: .seconds(60)),
        unknownDeviceCodesPerIP: RateLimit? = RateLimit(30, per: .seconds(60)),
        loginFailuresPerIP: RateLimit? = RateLimit(10, per: .seconds(900)),
        loginFailuresPerUser: RateLimit? = RateLimit(20, per: .seconds(900)),
        failedClientAuthenticationsPerClient: RateLimit? = RateLimit(20, per: .seconds(60)),
        failedClientAuthenticationsPerIP: RateLimit? = RateLimit(20, per: .seconds(60))
    ) {
        self.deviceAuthorizationsPerIP = deviceAuthorizationsPerIP
        self.deviceAuthorizationsPerClient = deviceAuthorizationsPerClient
        self.unknownDeviceCodesPerIP = unknownDeviceCodesPerIP
        self.loginFailuresPerIP = loginFailuresPerIP
        self.loginFailuresPerUser = loginFailuresPerUser
        self.failedClientAuthenticationsPerClient = failedClientAuthenticationsPerClient
        self.failedClientAuthenticationsPerIP = failedClientAuthenticationsPerIP
    }

    /// No limits at all (tests, or a gateway in front that already limits).
    public static let off = RateLimitSettings(
        deviceAuthorizationsPerIP: nil, deviceAuthorizationsPerClient: nil, unknownDeviceCodesPerIP: nil,
        loginFailuresPerIP: nil, loginFailuresPerUser: nil,
        failedClientAuthenticationsPerClient: nil, failedClientAuthenticationsPerIP: nil)
}
