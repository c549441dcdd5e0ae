import DeviceAuthorization
import Foundation
import RedisClient

/// The JSON configuration file of `deviceauth-server` (`--config FILE`). Every member is optional.
///
/// ```json
/// {
///   "public_base_url": "https://auth.example.com",
///   "secret": "at least 32 characters, the same on every node",
///   "signing_key_file": "/etc/deviceauth/signing-key.pem",
///   "trusted_proxies": ["10.20.0.0/16"],
///   "proxy_secret_file": "/etc/deviceauth/proxy/proxy-secret",
///   "user_header": "X-Forwarded-User",
///   "clients": [
///     { "client_id": "tv-app", "display_name": "Living-room TV", "scopes": ["profile", "email"],
///       "secret_sha256": "…hex…", "code_lifetime_seconds": 600, "interval_seconds": 5 }
///   ]
/// }
/// ```
public struct ServerConfigurationFile: Codable, Sendable, Equatable {
    /// One OAuth client.
    public struct Client: Codable, Sendable, Equatable {
        /// The `client_id`.
        public var clientID: String
        /// The name shown on the verification page.
        public var displayName: String?
        /// Allowed scopes.
        public var scopes: [String]?
        /// Scopes granted when a request names none (default: all allowed).
        public var defaultScopes: [String]?
        /// A plaintext secret (hashed on load). Development mode only: elsewhere use
        /// ``secretSHA256`` or ``secretFile``.
        public var secret: String?
        /// A file holding the secret (hashed on load; one trailing line break ignored).
        public var secretFile: String?
        /// Hex SHA-256 of the secret: `printf %s "$SECRET" | sha256sum`.
        public var secretSHA256: String?
        /// Device-code lifetime for this client, in seconds.
        public var codeLifetimeSeconds: Int?
        /// Polling interval for this client, in seconds.
        public var intervalSeconds: Int?
        /// This client's own limit of device authorization requests per minute (0: none).
        public var deviceAuthorizationsPerMinute: Int?
        /// The `aud` of this client's access tokens (default: the server's `audience`).
        public var audience: String?
        /// Refresh tokens for every grant of this client (default false: only for grants with the
        /// `offline_access` scope, which must then be among `scopes`).
        public var refreshTokens: Bool?
        /// Idle lifetime of this client's refresh tokens, in seconds (default: the server's).
        public var refreshTokenIdleSeconds: Int?
        /// Absolute lifetime of this client's refresh families, in seconds (default: the server's).
        public var refreshTokenAbsoluteSeconds: Int?

        enum CodingKeys: String, CodingKey {
            case clientID = "client_id"
            case displayName = "display_name"
            case scopes
            case defaultScopes = "default_scopes"
            case secret
            case secretFile = "secret_file"
            case secretSHA256 = "secret_sha256"
            case codeLifetimeSeconds = "code_lifetime_seconds"
            case intervalSeconds = "interval_seconds"
            case deviceAuthorizationsPerMinute = "device_authorizations_per_minute"
            case audience
            case refreshTokens = "refresh_tokens"
            case refreshTokenIdleSeconds = "refresh_token_idle_seconds"
            case refreshTokenAbsoluteSeconds = "refresh_token_absolute_seconds"
        }

        /// Creates a client entry.
        public init(
            clientID: String, displayName: String? = nil, scopes: [String]? = nil, defaultScopes: [String]? = nil, secret: String? = nil,
            secretSHA256: String? = nil, codeLifetimeSeconds: Int? = nil, intervalSeconds: Int? = nil, secretFile: String? = nil
        ) {
            self.secretFile = secretFile
            self.clientID = clientID
            self.displayName = displayName
            self.scopes = scopes
            self.defaultScopes = defaultScopes
            self.secret = secret
            self.secretSHA256 = secretSHA256
            self.codeLifetimeSeconds = codeLifetimeSeconds
            self.intervalSeconds = intervalSeconds
        }

        /// The registry entry.
        /// - Parameter allowPlaintextSecret: accept `secret` (plaintext in the file); only in
        ///   development mode, since the file is then a copy of every client's credential.
        /// - Throws: ``DeviceAuthorizationHTTPError`` for a malformed hash, bad numbers, a plaintext
        ///   secret that is not allowed, an unreadable secret file or more than one secret.
        public func registeredClient(allowPlaintextSecret: Bool = false) throws -> RegisteredClient {
            guard !clientID.isEmpty else { throw DeviceAuthorizationHTTPError(.invalidConfiguration, "a client has an empty client_id") }
            guard [secret != nil, secretSHA256 != nil, secretFile != nil].filter({ $0 }).count <= 1 else {
                throw DeviceAuthorizationHTTPError(.invalidConfiguration, "client \(clientID): give one of secret_sha256, secret_file and secret")
            }
            if secret != nil && !allowPlaintextSecret {
                throw DeviceAuthorizationHTTPError(
                    .invalidConfiguration,
                    """
                    client \(clientID): a plaintext "secret" is accepted only in development mode; \
                    use "secret_sha256" (printf %s "$SECRET" | sha256sum) or "secret_file"
                    """)
            }
            let fileSecret = try secretFile.map { String(decoding: try SecretFile.read($0, setting: "client \(clientID): secret_file"), as: UTF8.self) }
            var client = RegisteredClient(
                clientID: clientID, displayName: displayName, allowedScopes: scopes ?? [], defaultScopes: defaultScopes,
                secret: secret ?? fileSecret, codeLifetime: codeLifetimeSeconds.map { .seconds($0) }, pollingInterval: intervalSeconds,
                audience: audience)
            if let audience, audience.isEmpty {
                throw DeviceAuthorizationHTTPError(.invalidConfiguration, "client \(clientID): audience must not be empty")
            }
            if let secretSHA256 {
                guard let hash = bytes(fromHex: secretSHA256), hash.count == 32 else {
                    throw DeviceAuthorizationHTTPError(.invalidConfiguration, "client \(clientID): secret_sha256 must be 64 hex digits")
                }
                client.secretSHA256 = hash
            }
            try Ranges.check(codeLifetimeSeconds, "client \(clientID): code_lifetime_seconds", Ranges.codeLifetimeSeconds)
            try Ranges.check(intervalSeconds, "client \(clientID): interval_seconds", Ranges.intervalSeconds)
            try Ranges.check(refreshTokenIdleSeconds, "client \(clientID): refresh_token_idle_seconds", Ranges.refreshTokenSeconds)
            try Ranges.check(refreshTokenAbsoluteSeconds, "client \(clientID): refresh_token_absolute_seconds", Ranges.refreshTokenSeconds)
            client.refreshTokens = refreshTokens ?? false
            client.refreshIdleLifetime = refreshTokenIdleSeconds.map { .seconds($0) }
            client.refreshAbsoluteLifetime = refreshTokenAbsoluteSeconds.map { .seconds($0) }
            if let perMinute = deviceAuthorizationsPerMinute {
                guard perMinute >= 0 else { throw DeviceAuthorizationHTTPError(.invalidConfiguration, "client \(clientID): device_authorizations_per_minute must not be negative") }
                // 0 lifts the limit for this client (a huge one, so the server-wide default does not apply).
                client.deviceAuthorizationLimit = RateLimit(perMinute == 0 ? Int.max / 4 : perMinute, per: .seconds(60))
            }
            if let defaultScopes, !Set(defaultScopes).isSubset(of: Set(client.allowedScopes)) {
                throw DeviceAuthorizationHTTPError(.invalidConfiguration, "client \(clientID): default_scopes must be among scopes")
            }
            return client
        }
    }

    /// Redis URL (`redis://…` or `unix://…`); flags and environment win.
    public var redisURL: String?
    /// Issuer identifier (default: the public base URL).
    public var issuer: String?
    /// Public base URL (default `http://<host>:<port>`).
    public var publicBaseURL: String?
    /// Shared secret (≥ 32 bytes) for user-code hashes, CSRF and sessions.
    public var secret: String?
    /// A file holding the shared secret instead (one trailing line break ignored).
    public var secretFile: String?
    /// PEM file of the ES256 signing key.
    public var signingKeyFile: String?
    /// Access-token lifetime in seconds (3600).
    public var tokenLifetimeSeconds: Int?
    /// The default `aud` of access tokens (RFC 9068 §2.2; default: the issuer).
    public var audience: String?
    /// Trusted reverse-proxy addresses / CIDR ranges.
    public var trustedProxies: [String]?
    /// When set, users are identified by this header from trusted proxies.
    public var userHeader: String?
    /// Development login users: name → password.
    public var users: [String: String]?
    /// OAuth clients.
    public var clients: [Client]?
    /// Whether cookies are `Secure` (default: when the public URL is https).
    public var secureCookies: Bool?
    /// Redis key prefix ("da").
    public var keyPrefix: String?
    /// Default device-code lifetime in seconds (600).
    public var codeLifetimeSeconds: Int?
    /// Default polling interval in seconds (5).
    public var intervalSeconds: Int?
    /// Idle lifetime of refresh tokens in seconds (1 209 600 = 14 days): unused this long, a
    /// refresh token dies.
    public var refreshTokenIdleSeconds: Int?
    /// Absolute lifetime of a refresh family in seconds (7 776 000 = 90 days): however often it
    /// is refreshed, the person must approve again after it.
    public var refreshTokenAbsoluteSeconds: Int?
    /// Failed code entries allowed per client IP (IPv6: per /64 and per /48) per 15 minutes (10).
    public var maxFailuresPerCaller: Int?
    /// Failed code entries allowed per signed-in person per 15 minutes (20).
    public var maxFailuresPerUser: Int?
    /// The most `slow_down` can raise a device's polling interval to, in seconds (60).
    public var maxIntervalSeconds: Int?
    /// How long a redeemed grant's token answer is kept (sealed) for a device whose answer was
    /// lost, in seconds (60; 0 turns it off; see ``DeviceCodeStoreConfiguration/redemptionRetryWindow``).
    public var redemptionRetrySeconds: Int?
    /// Request rate limits per minute; 0 turns one off (see ``RateLimitSettings``).
    public var rateLimits: RateLimitsPerMinute?
    /// Replica acknowledgements every approval, denial and redemption waits for (none when absent;
    /// see ``DeviceCodeStoreConfiguration/durability``).
    public var durability: Durability?

    /// `"durability"`: `WAIT replicas timeout_ms` after each decision and redemption, or with
    /// `append_only_file` `WAITAOF 1 replicas timeout_ms` (Redis ≥ 7.2 / Valkey ≥ 8 with
    /// `appendonly yes`).
    public struct Durability: Codable, Sendable, Equatable {
        /// Replicas that must acknowledge (1…64; 0 with `append_only_file`: the primary's own fsync only).
        public var replicas: Int
        /// Milliseconds to wait for them (1…60 000; default 500).
        public var timeoutMs: Int?
        /// Also require the write fsynced to the append-only files (default false).
        public var appendOnlyFile: Bool?

        enum CodingKeys: String, CodingKey {
            case replicas
            case timeoutMs = "timeout_ms"
            case appendOnlyFile = "append_only_file"
        }

        /// The store setting these numbers describe.
        /// - Throws: ``DeviceAuthorizationHTTPError`` for a number out of range.
        public func setting() throws -> RedisDurability {
            try Ranges.check(replicas, "durability.replicas", appendOnlyFile == true ? 0...Ranges.durabilityReplicas.upperBound : Ranges.durabilityReplicas)
            try Ranges.check(timeoutMs, "durability.timeout_ms", Ranges.durabilityTimeoutMs)
            return try RedisDurability(replicas: replicas, timeout: .milliseconds(timeoutMs ?? 500), appendOnlyFile: appendOnlyFile ?? false)
        }
    }
    /// Most parameters in one form body (64); more get 400 `invalid_request`.
    public var maxFormParameters: Int?
    /// A header every trusted proxy must send with ``proxySecretFile``'s secret before its
    /// `X-Forwarded-For` and user header are believed (default `X-Deviceauth-Proxy-Secret` when
    /// the file is set).
    public var proxySecretHeader: String?
    /// File holding the shared proxy secret (≥ 32 bytes).
    public var proxySecretFile: String?
    /// Accept `user_header` with trusted proxy ranges wider than /16 (IPv4) or /32 (IPv6). Any host
    /// in such a range can sign in as anyone; leave it unset unless the network alone is trusted.
    public var allowWideTrustedProxies: Bool?
    /// Seconds a connection has to send a whole request head (10; ``ConnectionLimits``).
    public var headerReadTimeoutSeconds: Int?
    /// Seconds a kept-alive connection may wait for its next request (60).
    public var idleTimeoutSeconds: Int?
    /// Connections open at once on one node (10 000); more are closed as they arrive.
    public var maxConnections: Int?
    /// Port of a separate `GET /metrics` listener; the main listener then answers 404 there.
    public var metricsPort: Int?
    /// Address of the metrics listener (default: the main listener's).
    public var metricsHost: String?

    /// `"rate_limits"`: requests per minute; a missing member keeps the default, 0 turns it off.
    public struct RateLimitsPerMinute: Codable, Sendable, Equatable {
        /// `POST /oauth/device_authorization` per client IP (30).
        public var deviceAuthorizationsPerIP: Int?
        /// `POST /oauth/device_authorization` per client (600).
        public var deviceAuthorizationsPerClient: Int?
        /// Unknown device codes at the token endpoint per client IP (30).
        public var unknownDeviceCodesPerIP: Int?
        /// Failed client authentications per confidential client (20).
        public var failedClientAuthenticationsPerClient: Int?
        /// Failed client authentications per client IP (20).
        public var failedClientAuthenticationsPerIP: Int?

        enum CodingKeys: String, CodingKey {
            case deviceAuthorizationsPerIP = "device_authorizations_per_ip"
            case deviceAuthorizationsPerClient = "device_authorizations_per_client"
            case unknownDeviceCodesPerIP = "unknown_device_codes_per_ip"
            case failedClientAuthenticationsPerClient = "failed_client_authentications_per_client"
            case failedClientAuthenticationsPerIP = "failed_client_authentications_per_ip"
        }

        /// The settings these numbers describe.
        /// - Throws: ``DeviceAuthorizationHTTPError`` for a negative number.
        public func settings() throws -> RateLimitSettings {
            var settings = RateLimitSettings()
            func limit(_ value: Int?, _ name: String, _ keep: RateLimit?) throws -> RateLimit? {
                guard let value else { return keep }
                guard value >= 0 else { throw DeviceAuthorizationHTTPError(.invalidConfiguration, "rate_limits.\(name) must not be negative") }
                return value == 0 ? nil : RateLimit(value, per: .seconds(60))
            }
            settings.deviceAuthorizationsPerIP = try limit(deviceAuthorizationsPerIP, "device_authorizations_per_ip", settings.deviceAuthorizationsPerIP)
            settings.deviceAuthorizationsPerClient = try limit(deviceAuthorizationsPerClient, "device_authorizations_per_client", settings.deviceAuthorizationsPerClient)
            settings.unknownDeviceCodesPerIP = try limit(unknownDeviceCodesPerIP, "unknown_device_codes_per_ip", settings.unknownDeviceCodesPerIP)
            settings.failedClientAuthenticationsPerClient = try limit(
                failedClientAuthenticationsPerClient, "failed_client_authentications_per_client",
                settings.failedClientAuthenticationsPerClient)
            settings.failedClientAuthenticationsPerIP = try limit(
                failedClientAuthenticationsPerIP, "failed_client_authentications_per_ip",
                settings.failedClientAuthenticationsPerIP)
            return settings
        }
    }

    enum CodingKeys: String, CodingKey {
        case redisURL = "redis_url"
        case issuer
        case publicBaseURL = "public_base_url"
        case secret
        case secretFile = "secret_file"
        case signingKeyFile = "signing_key_file"
        case tokenLifetimeSeconds = "token_lifetime_seconds"
        case trustedProxies = "trusted_proxies"
        case userHeader = "user_header"
        case users, clients
        case secureCookies = "secure_cookies"
        case keyPrefix = "key_prefix"
        case codeLifetimeSeconds = "code_lifetime_seconds"
        case intervalSeconds = "interval_seconds"
        case maxFailuresPerCaller = "max_failures_per_caller"
        case rateLimits = "rate_limits"
        case durability
        case maxFailuresPerUser = "max_failures_per_user"
        case maxIntervalSeconds = "max_interval_seconds"
        case redemptionRetrySeconds = "redemption_retry_seconds"
        case proxySecretHeader = "proxy_secret_header"
        case proxySecretFile = "proxy_secret_file"
        case allowWideTrustedProxies = "allow_wide_trusted_proxies"
        case headerReadTimeoutSeconds = "header_read_timeout_seconds"
        case idleTimeoutSeconds = "idle_timeout_seconds"
        case maxConnections = "max_connections"
        case audience
        case maxFormParameters = "max_form_parameters"
        case metricsPort = "metrics_port"
        case metricsHost = "metrics_host"
        case refreshTokenIdleSeconds = "refresh_token_idle_seconds"
        case refreshTokenAbsoluteSeconds = "refresh_token_absolute_seconds"
    }

    /// An empty configuration.
    public init() {}

    /// The ranges of the numeric settings. A value outside its range stops the server at start,
    /// instead of failing requests later (a negative lifetime made every device authorization a
    /// 400 that blamed the client) or overflowing (a lifetime of 10^17 s trapped on the first
    /// request). The upper bounds are generous; a device code that lives longer than a day, or an
    /// access token longer than a year, is refused.
    public enum Ranges {
        /// `code_lifetime_seconds`, top level and per client: a second to a day.
        public static let codeLifetimeSeconds = 1...86_400
        /// `interval_seconds`, top level and per client: up to an hour (0: no minimum).
        public static let intervalSeconds = 0...3_600
        /// `token_lifetime_seconds`: a second to a year.
        public static let tokenLifetimeSeconds = 1...31_536_000
        /// `max_failures_per_caller`: at least one (0 would lock every caller out).
        public static let maxFailuresPerCaller = 1...1_000_000
        /// `max_failures_per_user`: as `max_failures_per_caller`.
        public static let maxFailuresPerUser = 1...1_000_000
        /// `max_interval_seconds`: from one `slow_down` step (5 s) to an hour.
        public static let maxIntervalSeconds = 5...3_600
        /// `redemption_retry_seconds`: off, up to 10 minutes.
        public static let redemptionRetrySeconds = 0...600
        /// `max_form_parameters`: enough for every form (the page's largest has five), at most
        /// 1000 (past that the cap no longer bounds anything a 16 KiB body could not do).
        public static let maxFormParameters = 8...1_000
        /// `header_read_timeout_seconds`: a second to five minutes.
        public static let headerReadTimeoutSeconds = 1...300
        /// `idle_timeout_seconds`: a second to an hour.
        public static let idleTimeoutSeconds = 1...3_600
        /// `max_connections`: at least one, at most a million.
        public static let maxConnections = 1...1_000_000
        /// `refresh_token_idle_seconds` and `refresh_token_absolute_seconds`, top level and per
        /// client: a second to ten years.
        public static let refreshTokenSeconds = 1...315_360_000
        /// `durability.replicas`: at least one (none: leave `durability` out), or 0 with
        /// `append_only_file` (`WAITAOF 1 0`: a single Redis's own fsync).
        public static let durabilityReplicas = 1...64
        /// `durability.timeout_ms`: a millisecond to a minute (0 would make `WAIT` block forever).
        public static let durabilityTimeoutMs = 1...60_000
        /// `metrics_port`: a TCP port.
        public static let port = 1...65_535

        static func check(_ value: Int?, _ name: String, _ range: ClosedRange<Int>) throws {
            guard let value, !range.contains(value) else { return }
            throw DeviceAuthorizationHTTPError(
                .invalidConfiguration,
                "\(name) must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
        }
    }

    /// Checks the server-wide numeric settings against ``Ranges`` (clients are checked by
    /// ``Client/registeredClient()``).
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/invalidConfiguration``.
    public func validate() throws {
        try Ranges.check(codeLifetimeSeconds, "code_lifetime_seconds", Ranges.codeLifetimeSeconds)
        try Ranges.check(intervalSeconds, "interval_seconds", Ranges.intervalSeconds)
        try Ranges.check(tokenLifetimeSeconds, "token_lifetime_seconds", Ranges.tokenLifetimeSeconds)
        try Ranges.check(maxFailuresPerCaller, "max_failures_per_caller", Ranges.maxFailuresPerCaller)
        try Ranges.check(maxFailuresPerUser, "max_failures_per_user", Ranges.maxFailuresPerUser)
        try Ranges.check(maxIntervalSeconds, "max_interval_seconds", Ranges.maxIntervalSeconds)
        try Ranges.check(redemptionRetrySeconds, "redemption_retry_seconds", Ranges.redemptionRetrySeconds)
        _ = try durability?.setting()
        try Ranges.check(maxFormParameters, "max_form_parameters", Ranges.maxFormParameters)
        try Ranges.check(metricsPort, "metrics_port", Ranges.port)
        try Ranges.check(headerReadTimeoutSeconds, "header_read_timeout_seconds", Ranges.headerReadTimeoutSeconds)
        try Ranges.check(idleTimeoutSeconds, "idle_timeout_seconds", Ranges.idleTimeoutSeconds)
        try Ranges.check(maxConnections, "max_connections", Ranges.maxConnections)
        try Ranges.check(refreshTokenIdleSeconds, "refresh_token_idle_seconds", Ranges.refreshTokenSeconds)
        try Ranges.check(refreshTokenAbsoluteSeconds, "refresh_token_absolute_seconds", Ranges.refreshTokenSeconds)
        try validateTrust()
    }

    /// The narrowest trusted-proxy prefixes accepted with `user_header`: a wider range holds hosts
    /// that are not proxies, and any of them could then sign in as anyone.
    public static let narrowestTrustedPrefix = (ipv4: 16, ipv6: 32)

    /// Refuses `user_header` with trusted proxy ranges wider than ``narrowestTrustedPrefix``
    /// (such as `0.0.0.0/0` or `10.0.0.0/8`) unless `allow_wide_trusted_proxies` is true.
    /// - Throws: ``DeviceAuthorizationHTTPError`` naming the ranges and the override.
    public func validateTrust() throws {
        if proxySecretHeader != nil && proxySecretFile == nil {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "proxy_secret_header needs proxy_secret_file (the file with the shared secret)")
        }
        guard userHeader != nil, allowWideTrustedProxies != true else { return }
        let narrowest = Self.narrowestTrustedPrefix
        let wide = try TrustedProxies(trustedProxies ?? []).entriesWiderThan(ipv4: narrowest.ipv4, ipv6: narrowest.ipv6)
        guard wide.isEmpty else {
            throw DeviceAuthorizationHTTPError(
                .invalidConfiguration,
                "user_header is set but trusted_proxies has ranges wider than /\(narrowest.ipv4) (IPv4) or /\(narrowest.ipv6) (IPv6): "
                    + "\(wide.joined(separator: ", ")); any host in them could sign in as anyone. List the proxies' own addresses "
                    + "(and set proxy_secret_file), or set \"allow_wide_trusted_proxies\": true to accept them")
        }
    }

    /// The trusted proxies this file describes, with the proxy secret when it names one.
    /// - Throws: ``DeviceAuthorizationHTTPError`` for bad entries or an unreadable secret file.
    public func trustedProxySettings() throws -> TrustedProxies {
        guard let proxySecretFile else { return try TrustedProxies(trustedProxies ?? []) }
        let secret = try SecretFile.read(proxySecretFile, setting: "proxy_secret_file", minimumLength: 32)
        return try TrustedProxies(trustedProxies ?? [], secretHeader: proxySecretHeader ?? "X-Deviceauth-Proxy-Secret", secret: secret)
    }

    /// Reads, decodes and validates a configuration file.
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/invalidConfiguration``.
    public static func load(path: String) throws -> ServerConfigurationFile {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "cannot read configuration file \(path)", underlying: error)
        }
        let file: ServerConfigurationFile
        do {
            file = try JSONDecoder().decode(ServerConfigurationFile.self, from: data)
        } catch {
            throw DeviceAuthorizationHTTPError(.invalidConfiguration, "configuration file \(path) is not valid: \(error)", underlying: error)
        }
        try file.validate()
        return file
    }
}
