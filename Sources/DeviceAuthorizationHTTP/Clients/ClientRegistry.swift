import Crypto
import DeviceAuthorization
import Foundation

/// An OAuth client allowed to use the device flow.
public struct RegisteredClient: Sendable, Hashable {
    /// The `client_id`.
    public var clientID: String
    /// The name shown to people on the verification page.
    public var displayName: String
    /// Scopes the client may request.
    public var allowedScopes: [String]
    /// Scopes granted when the request names none (`nil`: all allowed scopes).
    public var defaultScopes: [String]?
    /// SHA-256 of the client secret, or `nil` for a public client (no secret).
    public var secretSHA256: [UInt8]?
    /// Lifetime of this client's device codes (`nil`: the store's default).
    public var codeLifetime: Duration?
    /// Polling interval for this client in seconds (`nil`: the store's default).
    public var pollingInterval: Int?
    /// This client's own limit of device authorization requests (`nil`: the server's
    /// ``RateLimitSettings/deviceAuthorizationsPerClient``).
    public var deviceAuthorizationLimit: RateLimit?
    /// The `aud` of this client's access tokens (`nil`: the token issuer's default audience).
    public var audience: String?
    /// Whether every redeemed grant of this client also gets a refresh token. Without it, a grant
    /// gets one only when its scopes include `offline_access` (which the client must be allowed).
    public var refreshTokens: Bool
    /// Idle lifetime of this client's refresh tokens (`nil`: the store's default, 14 days).
    public var refreshIdleLifetime: Duration?
    /// Absolute lifetime of this client's refresh families (`nil`: the store's default, 90 days).
    public var refreshAbsoluteLifetime: Duration?

    /// Creates a client.
    /// - Parameters:
    ///   - clientID: the `client_id`.
    ///   - displayName: the name shown on the verification page (defaults to the id).
    ///   - allowedScopes: the scopes it may request.
    ///   - defaultScopes: scopes used when a request names none (`nil`: all allowed).
    ///   - secret: a plaintext secret, hashed at once and never kept (`nil`: public client).
    ///   - codeLifetime: per-client device-code lifetime.
    ///   - pollingInterval: per-client polling interval in seconds.
    ///   - deviceAuthorizationLimit: per-client limit of device authorization requests.
    ///   - audience: the `aud` of this client's tokens (`nil`: the issuer's default).
    ///   - refreshTokens: refresh tokens for every grant (else only with `offline_access`).
    ///   - refreshIdleLifetime: idle lifetime of its refresh tokens (`nil`: the store's).
    ///   - refreshAbsoluteLifetime: absolute lifetime of its refresh families (`nil`: the store's).
    public init(
        clientID: String, displayName: String? = nil, allowedScopes: [String] = [], defaultScopes: [String]? = nil,
        secret: String? = nil, codeLifetime: Duration? = nil, pollingInterval: Int? = nil, deviceAuthorizationLimit: RateLimit? = nil,
        audience: String? = nil, refreshTokens: Bool = false, refreshIdleLifetime: Duration? = nil, refreshAbsoluteLifetime: Duration? = nil
    ) {
        self.refreshTokens = refreshTokens
        self.refreshIdleLifetime = refreshIdleLifetime
        self.refreshAbsoluteLifetime = refreshAbsoluteLifetime
        self.clientID = clientID
        self.displayName = displayName ?? clientID
        self.allowedScopes = allowedScopes
        self.defaultScopes = defaultScopes
        self.secretSHA256 = secret.map { Array(SHA256.hash(data: Array($0.utf8))) }
        self.codeLifetime = codeLifetime
        self.pollingInterval = pollingInterval
        self.deviceAuthorizationLimit = deviceAuthorizationLimit
        self.audience = audience
    }

    /// The scope that asks for a refresh token (OpenID Connect's `offline_access`).
    public static let offlineAccessScope = "offline_access"

    /// Whether a grant of `scopes` gets a refresh token.
    public func issuesRefreshToken(scopes: [String]) -> Bool {
        refreshTokens || scopes.contains(Self.offlineAccessScope)
    }

    /// Whether the client is confidential (has a secret and must authenticate).
    public var isConfidential: Bool { secretSHA256 != nil }

    /// Checks a presented secret against the stored hash in constant time.
    public func verifySecret(_ secret: String) -> Bool {
        guard let secretSHA256 else { return false }
        return constantTimeEquals(Array(SHA256.hash(data: Array(secret.utf8))), secretSHA256)
    }
}

/// Where the server finds OAuth clients. Implement it to read clients from a database.
public protocol ClientRegistry: Sendable {
    /// The client with this `client_id`, or `nil` when there is none.
    func client(id: String) async throws -> RegisteredClient?
}

/// A fixed set of clients, typically from the configuration file.
public struct StaticClientRegistry: ClientRegistry {
    private let clients: [String: RegisteredClient]

    /// Creates a registry; later clients with the same id replace earlier ones.
    public init(clients: [RegisteredClient]) {
        self.clients = Dictionary(clients.map { ($0.clientID, $0) }, uniquingKeysWith: { _, last in last })
    }

    /// The client with this id.
    public func client(id: String) async throws -> RegisteredClient? { clients[id] }
}
