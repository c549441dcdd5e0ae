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
    /// The product name shown on the verification page.
    public var serviceName: String

    /// Creates a configuration.
    /// - Parameters:
    ///   - issuer: the issuer identifier (`http://127.0.0.1:8080`).
    ///   - publicBaseURL: the public base URL (`nil`: the issuer).
    ///   - trustedProxies: trusted reverse proxies (none).
    ///   - secret: CSRF key material (≥ 32 bytes).
    ///   - secureCookies: `Secure` cookies (`true` when the public URL is https).
    ///   - maxBodySize: request body limit (16 KiB).
    ///   - serviceName: name on the page ("Device sign-in").
    public init(
        issuer: String = "http://127.0.0.1:8080",
        publicBaseURL: String? = nil,
        trustedProxies: TrustedProxies = .none,
        secret: [UInt8],
        secureCookies: Bool? = nil,
        maxBodySize: Int = 16 * 1024,
        serviceName: String = "Device sign-in"
    ) {
        self.issuer = issuer
        let base = publicBaseURL ?? issuer
        self.publicBaseURL = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.trustedProxies = trustedProxies
        self.secret = secret
        self.secureCookies = secureCookies ?? self.publicBaseURL.lowercased().hasPrefix("https://")
        self.maxBodySize = maxBodySize
        self.serviceName = serviceName
    }
}
