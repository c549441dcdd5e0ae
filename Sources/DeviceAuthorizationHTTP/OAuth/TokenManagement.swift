import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662).
///
/// Revocation is for the client a token was issued to (authenticated as at the token endpoint;
/// a public client by its `client_id`): a refresh token revokes its whole family, an access token
/// goes on a denylist in Redis until its `exp`. Unknown, expired or malformed tokens get 200 too
/// (RFC 7009 §2.2); a token of another client gets 400 `unauthorized_client` and nothing changes.
///
/// Introspection is for **confidential clients** (resource servers are registered as clients with
/// a secret): public clients get 401 `invalid_client`, since anyone can claim a public client's
/// id and would so get a token-validity oracle. A confidential client may introspect any token of
/// this server, as a resource server must.
extension OAuthController {
    func revoke(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let form = try await readForm(request)
            let client = try await clientAuthenticator.authenticate(request: request, form: form) {
                RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            }
            guard let token = form["token"], !token.isEmpty else { throw OAuthError.invalidRequest("missing parameter 'token'") }
            // `token_type_hint` is accepted and ignored, any value (RFC 7009 §2.1 lets the server
            // search every type): a refresh token is recognised by its MAC, an access token by
            // its signature, each without a Redis round trip.
            if token.utf8.count <= 8192 {
                if refreshTokens.familyKey(forToken: token) != nil {
                    switch try await refreshTokens.revoke(refreshToken: token, clientID: client.clientID) {
                    case .wrongClient: throw Self.notYourToken
                    case .revoked:
                        context.logger.info("revoked refresh token family", metadata: ["client_id": "\(client.clientID)"])
                    case .unknown: break
                    }
                } else if let access = await tokens.verifyToken(token) {
                    guard access.clientID == client.clientID else { throw Self.notYourToken }
                    try await refreshTokens.revokeAccessToken(tokenID: access.tokenID, familyID: access.familyID, expiresAt: access.expiresAt)
                    context.logger.info("revoked access token", metadata: ["client_id": "\(client.clientID)", "jti": "\(access.tokenID)"])
                }
            }
            return Self.emptyOK
        } catch {
            return oauthErrorResponse(error, context)
        }
    }

    func introspect(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let form = try await readForm(request)
            let client = try await clientAuthenticator.authenticate(request: request, form: form) {
                RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            }
            guard client.isConfidential else {
                throw OAuthError.invalidClient("introspection is for confidential clients (resource servers with a secret)")
            }
            guard let token = form["token"], !token.isEmpty else { throw OAuthError.invalidRequest("missing parameter 'token'") }
            guard token.utf8.count <= 8192 else { return Self.inactive }
            if refreshTokens.familyKey(forToken: token) != nil {
                guard let info = try await refreshTokens.introspect(refreshToken: token) else { return Self.inactive }
                let body = IntrospectionBody(
                    active: true, tokenType: "refresh_token", clientID: info.clientID, subject: info.userID,
                    issuedAt: Int(info.issuedAt.timeIntervalSince1970), expiresAt: Int(info.expiresAt.timeIntervalSince1970), issuer: configuration.issuer,
                    scope: info.scopes.isEmpty ? nil : info.scopes.joined(separator: " "), sessionID: info.familyID)
                return JSONResponse.make(body: body)
            }
            guard let access = await tokens.verifyToken(token),
                try await !refreshTokens.isAccessTokenRevoked(tokenID: access.tokenID, familyID: access.familyID)
            else { return Self.inactive }
            let body = IntrospectionBody(
                active: true, tokenType: "Bearer", clientID: access.clientID, subject: access.userID, tokenID: access.tokenID,
                issuedAt: Int(access.issuedAt.timeIntervalSince1970), expiresAt: Int(access.expiresAt.timeIntervalSince1970), issuer: access.issuer,
                audience: access.audience, scope: access.scopes.isEmpty ? nil : access.scopes.joined(separator: " "), sessionID: access.familyID)
            return JSONResponse.make(body: body)
        } catch {
            return oauthErrorResponse(error, context)
        }
    }

    static var notYourToken: OAuthError { OAuthError("unauthorized_client", "the token was issued to another client") }

    /// RFC 7009 §2.2: 200 with no content to speak of.
    static var emptyOK: Response { JSONResponse.make(body: EmptyBody()) }

    /// RFC 7662 §2.2: nothing but `active: false` for a token that is not active, whatever the reason.
    static var inactive: Response { JSONResponse.make(body: IntrospectionBody.inactive) }
}
