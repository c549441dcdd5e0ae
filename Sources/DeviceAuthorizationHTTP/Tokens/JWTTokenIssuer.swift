import Crypto
import Foundation
import JWTKit
import Logging

/// Issues ES256-signed JWT access tokens (RFC 9068) with `iss`, `sub`, `aud`, `client_id`,
/// `scope`, `iat`, `exp` and `jti`, and publishes the public key as a JWKS.
///
/// Every token has an `aud` (RFC 9068 §2.2 requires one): the client's own audience when it has
/// one (``TokenRequest/audience``), else the issuer's default audience, else the issuer itself.
///
/// ```swift
/// let issuer = try await JWTTokenIssuer(issuer: "https://auth.example.com", privateKeyPEM: pem)
/// let token = try await issuer.issueToken(for: TokenRequest(userID: "alice", clientID: "tv", scopes: ["profile"], grantID: id))
/// ```
public struct JWTTokenIssuer: TokenIssuer {
    /// The claims of an access token.
    public struct Claims: JWTPayload, Equatable {
        /// `iss`: the authorization server.
        public var iss: IssuerClaim
        /// `sub`: the user.
        public var sub: SubjectClaim
        /// `client_id`: the client the token was issued to (RFC 9068).
        public var clientID: String
        /// `scope`: space-separated scopes.
        public var scope: String
        /// `iat`: issue time.
        public var iat: IssuedAtClaim
        /// `exp`: expiry.
        public var exp: ExpirationClaim
        /// `jti`: a unique id.
        public var jti: IDClaim
        /// `aud`: the resource server(s) the token is for.
        public var aud: AudienceClaim?
        /// `sid`: the refresh family the token was issued with (absent without one), so a
        /// revocation of the family reaches its access tokens.
        public var sid: String?

        enum CodingKeys: String, CodingKey {
            case iss, sub, scope, iat, exp, jti, aud, sid
            case clientID = "client_id"
        }

        /// Creates claims.
        public init(
            iss: IssuerClaim, sub: SubjectClaim, clientID: String, scope: String, iat: IssuedAtClaim, exp: ExpirationClaim, jti: IDClaim,
            aud: AudienceClaim?, sid: String? = nil
        ) {
            self.iss = iss
            self.sub = sub
            self.clientID = clientID
            self.scope = scope
            self.iat = iat
            self.exp = exp
            self.jti = jti
            self.aud = aud
            self.sid = sid
        }

        /// Checks the expiry.
        public func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
        }
    }

    private let keys: JWTKeyCollection
    private let keyID: String
    private let publicKey: ES256PublicKey
    private let issuer: String
    private let audience: String
    private let lifetime: Duration

    /// Creates an issuer with a private key in PEM (`-----BEGIN PRIVATE KEY-----` or `EC PRIVATE KEY`).
    /// - Parameters:
    ///   - issuer: the `iss` claim (the server's public URL).
    ///   - privateKeyPEM: a P-256 private key; `nil` makes an ephemeral key (development only).
    ///   - audience: the default `aud` claim (`nil`: the issuer), for clients without their own.
    ///   - lifetime: token lifetime (1 hour).
    /// - Throws: ``DeviceAuthorizationHTTPError`` with ``DeviceAuthorizationHTTPError/Code/signingKey``.
    public init(issuer: String, privateKeyPEM: String?, audience: String? = nil, lifetime: Duration = .seconds(3600)) async throws {
        let privateKey: ES256PrivateKey
        if let privateKeyPEM {
            do {
                privateKey = try ES256PrivateKey(pem: privateKeyPEM)
            } catch {
                throw DeviceAuthorizationHTTPError(.signingKey, "the signing key is not a P-256 (ES256) private key in PEM", underlying: error)
            }
        } else {
            privateKey = ES256PrivateKey()
        }
        self.publicKey = privateKey.publicKey
        guard let parameters = publicKey.parameters else {
            throw DeviceAuthorizationHTTPError(.signingKey, "the signing key has no public parameters")
        }
        // RFC 7638 thumbprint: a stable key id that changes with the key.
        let canonical = #"{"crv":"P-256","kty":"EC","x":"\#(parameters.x)","y":"\#(parameters.y)"}"#
        self.keyID = Data(SHA256.hash(data: Array(canonical.utf8))).base64URLEncoded
        self.keys = JWTKeyCollection()
        await keys.add(ecdsa: privateKey, kid: JWKIdentifier(string: keyID))
        self.issuer = issuer
        self.audience = audience ?? issuer
        self.lifetime = lifetime
    }

    /// Signs a token for a redeemed grant.
    public func issueToken(for request: TokenRequest) async throws -> IssuedToken {
        // Whole seconds: many JWT libraries reject fractional NumericDate values.
        let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        let seconds = Int(lifetime.components.seconds)
        let claims = Claims(
            iss: IssuerClaim(value: issuer),
            sub: SubjectClaim(value: request.userID),
            clientID: request.clientID,
            scope: request.scopes.joined(separator: " "),
            iat: IssuedAtClaim(value: now),
            exp: ExpirationClaim(value: now.addingTimeInterval(TimeInterval(seconds))),
            jti: IDClaim(value: request.tokenID ?? UUID().uuidString.lowercased()),
            aud: AudienceClaim(value: [request.audience ?? audience]),
            sid: request.familyID
        )
        var header = JWTHeader()
        header.typ = "at+jwt"
        let token = try await keys.sign(claims, kid: JWKIdentifier(string: keyID), header: header)
        return IssuedToken(accessToken: token, expiresIn: seconds, scopes: request.scopes, tokenID: claims.jti.value)
    }

    /// The configured token lifetime.
    public var maximumTokenLifetime: Duration { lifetime }

    /// The claims of an unexpired token signed by this issuer's key with this issuer's `iss`.
    public func verifyToken(_ token: String) async -> VerifiedAccessToken? {
        guard token.utf8.count <= 8192, let claims = try? await keys.verify(token, as: Claims.self), claims.iss.value == issuer else { return nil }
        return VerifiedAccessToken(
            tokenID: claims.jti.value, userID: claims.sub.value, clientID: claims.clientID,
            scopes: claims.scope.split(separator: " ").map(String.init), issuedAt: claims.iat.value,
            expiresAt: claims.exp.value, audience: claims.aud?.value ?? [], issuer: claims.iss.value, familyID: claims.sid)
    }

    /// The public key as a JWKS (`kty` EC, `crv` P-256, `alg` ES256, `use` sig).
    public func jsonWebKeySet() async throws -> [String: any Sendable]? {
        guard let parameters = publicKey.parameters else { return nil }
        let key: [String: any Sendable] = [
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "kid": keyID, "x": parameters.x, "y": parameters.y,
        ]
        return ["keys": [key]]
    }
}
