import Foundation

/// What a token issuer is asked to mint: one approved, just-redeemed device grant.
public struct TokenRequest: Sendable, Hashable {
    /// The approving user (`sub`).
    public var userID: String
    /// The client the grant was issued to.
    public var clientID: String
    /// The granted scopes.
    public var scopes: [String]
    /// The grant's id (safe to log; lets an issuer revoke tokens on replay).
    public var grantID: String
    /// The audience the client's tokens are for (``RegisteredClient/audience``); `nil`: the
    /// issuer's default.
    public var audience: String?
    /// The token id (`jti`) the token must carry, when the server chose it beforehand: a refresh
    /// family records it in the same Redis step that rotates, so revoking the family can denylist
    /// it. An issuer that ignores it leaves such tokens off the denylist. `nil`: the issuer's own.
    public var tokenID: String?
    /// The refresh family the token belongs to (claim `sid`), when there is one; `nil` otherwise.
    public var familyID: String?

    /// Creates a request.
    public init(
        userID: String, clientID: String, scopes: [String], grantID: String, audience: String? = nil, tokenID: String? = nil,
        familyID: String? = nil
    ) {
        self.userID = userID
        self.clientID = clientID
        self.scopes = scopes
        self.grantID = grantID
        self.audience = audience
        self.tokenID = tokenID
        self.familyID = familyID
    }
}

/// A minted access token (RFC 6749 §5.1).
public struct IssuedToken: Sendable, Hashable {
    /// The `access_token`.
    public var accessToken: String
    /// The `token_type` (`Bearer`).
    public var tokenType: String
    /// Seconds until the token expires.
    public var expiresIn: Int
    /// The granted scopes.
    public var scopes: [String]
    /// The token's own id (a JWT's `jti`), safe to log with the grant id so a token seen later
    /// can be traced to its grant; `nil` when the issuer has none.
    public var tokenID: String?

    /// Creates a token answer.
    public init(accessToken: String, tokenType: String = "Bearer", expiresIn: Int, scopes: [String], tokenID: String? = nil) {
        self.accessToken = accessToken
        self.tokenType = tokenType
        self.expiresIn = expiresIn
        self.scopes = scopes
        self.tokenID = tokenID
    }
}

/// Mints access tokens for redeemed device grants. Implement it to hand out opaque tokens or to
/// call another service.
public protocol TokenIssuer: Sendable {
    /// Mints a token; called exactly once per approved grant.
    func issueToken(for request: TokenRequest) async throws -> IssuedToken

    /// The JSON Web Key Set served at `/.well-known/jwks.json`, or `nil` when tokens are not
    /// verifiable with public keys (the endpoint then answers 404).
    func jsonWebKeySet() async throws -> [String: any Sendable]?

    /// The longest an issued token lives: how long a revoked token's `jti` stays on the denylist.
    var maximumTokenLifetime: Duration { get }

    /// The claims of a token this issuer minted and that has not expired, for introspection
    /// (RFC 7662); `nil` for anything else (then introspection answers `active: false`).
    func verifyToken(_ token: String) async -> VerifiedAccessToken?
}

extension TokenIssuer {
    /// No key set by default.
    public func jsonWebKeySet() async throws -> [String: any Sendable]? { nil }

    /// One day by default: long enough for the usual access-token lifetimes.
    public var maximumTokenLifetime: Duration { .seconds(86_400) }

    /// Nothing is verifiable by default.
    public func verifyToken(_ token: String) async -> VerifiedAccessToken? { nil }
}

/// The claims of a verified access token (RFC 7662 §2.2 members).
public struct VerifiedAccessToken: Sendable, Hashable {
    /// `jti`.
    public var tokenID: String
    /// `sub`.
    public var userID: String
    /// `client_id`.
    public var clientID: String
    /// `scope`.
    public var scopes: [String]
    /// `iat`.
    public var issuedAt: Date
    /// `exp`.
    public var expiresAt: Date
    /// `aud`.
    public var audience: [String]
    /// `iss`.
    public var issuer: String
    /// `sid`: the refresh family, when the token has one.
    public var familyID: String?

    /// Creates the claims.
    public init(
        tokenID: String, userID: String, clientID: String, scopes: [String], issuedAt: Date, expiresAt: Date, audience: [String],
        issuer: String, familyID: String? = nil
    ) {
        self.tokenID = tokenID
        self.userID = userID
        self.clientID = clientID
        self.scopes = scopes
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.audience = audience
        self.issuer = issuer
        self.familyID = familyID
    }
}
