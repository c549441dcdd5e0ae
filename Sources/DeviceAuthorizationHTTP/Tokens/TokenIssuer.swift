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

    /// Creates a request.
    public init(userID: String, clientID: String, scopes: [String], grantID: String, audience: String? = nil) {
        self.userID = userID
        self.clientID = clientID
        self.scopes = scopes
        self.grantID = grantID
        self.audience = audience
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
}

extension TokenIssuer {
    /// No key set by default.
    public func jsonWebKeySet() async throws -> [String: any Sendable]? { nil }
}
