import DeviceAuthorization
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import RedisClient

/// The OAuth endpoints: `POST /oauth/device_authorization` (RFC 8628 §3.1–3.2), `POST /oauth/token`
/// (RFC 8628 §3.4–3.5, and the refresh-token grant of RFC 6749 §6), and in `TokenManagement.swift`
/// `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662).
///
/// Where a poll is decided: ``token(_:_:)`` hands the device code to `DeviceCodeStore.poll`, whose
/// one script (`StoreScripts`) checks the code, the client, the interval (`slow_down`) and the
/// status, and redeems an approved grant; this type only turns its outcome into the answer.
struct OAuthController: Sendable {
    let store: DeviceCodeStore
    let refreshTokens: RefreshTokenStore
    let tokens: any TokenIssuer
    let configuration: DeviceAuthorizationHTTPConfiguration
    let clientAuthenticator: ClientAuthenticator
    let rateLimiter: RequestRateLimiter

    static var deviceCodeGrantType: String { DeviceAuthorizationRoutes.deviceCodeGrantType }
    static var refreshTokenGrantType: String { DeviceAuthorizationRoutes.refreshTokenGrantType }

    func addRoutes(to router: Router<DeviceAuthorizationRequestContext>) {
        router.post("/oauth/device_authorization") { request, context in await self.deviceAuthorization(request, context) }
        router.post("/oauth/token") { request, context in await self.token(request, context) }
        router.post("/oauth/revoke") { request, context in await self.revoke(request, context) }
        router.post("/oauth/introspect") { request, context in await self.introspect(request, context) }
    }

    func deviceAuthorization(_ request: Request, _ context: DeviceAuthorizationRequestContext) async -> Response {
        do {
            let form = try await readForm(request)
            let client = try await clientAuthenticator.authenticate(request: request, form: form) {
                RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            }
            let scopes = try OAuthScopes.resolve(form["scope"], for: client)
            try await limitDeviceAuthorizations(client: client, request: request, context)
            // The address the device asked from, for the confirmation page (RFC 8628 §5.4).
            let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
            let issued = try await store.issue(
                clientID: client.clientID, scopes: scopes, lifetime: client.codeLifetime, interval: client.pollingInterval,
                origin: origin.clientIP)
            context.logger.info("issued device code", metadata: ["grant_id": "\(issued.grantID)", "client_id": "\(client.clientID)"])
            let verificationURI = configuration.publicBaseURL + "/device"
            let complete =
                verificationURI + "?user_code="
                + (issued.userCode.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? issued.userCode)
                .replacingOccurrences(of: "%2D", with: "-")
            return JSONResponse.make(
                body: DeviceAuthorizationBody(
                    deviceCode: issued.deviceCode, userCode: issued.userCode, verificationURI: verificationURI,
                    verificationURIComplete: complete, expiresIn: issued.expiresIn, interval: issued.interval))
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
                case .limited(_, let retryAfter) = rateLimiter.knownLimit([bucket])
            {
                throw OAuthError.rateLimited("too many unknown device codes from this address", retryAfter: retryAfter)
            }
            // An oversized code cannot exist: answered like an unknown one without asking Redis.
            guard deviceCode.utf8.count <= 256 else { return try await answer(.invalidGrant(.unknown), client: client, request, context) }
            // What this poll minted, if it did: discarded unless this poll's answer is the one sent.
            var minted: (family: IssuedRefreshToken?, tokenID: String?)?
            // The origin is worked out only for an approved or redeemed code (pending polls skip it).
            let result = try await store.poll(
                deviceCode: deviceCode, clientID: client.clientID,
                origin: RequestOrigin(
                    request: request, peerAddress: context.peerIPAddress,
                    trustedProxies: configuration.trustedProxies
                ).clientIP
            ) { grant in
                var family: IssuedRefreshToken?
                let planned = plannedAccessToken()
                if client.issuesRefreshToken(scopes: grant.scopes) {
                    // Before the access token, so the family knows its jti: revoking the family
                    // then denylists this first token too.
                    family = try await refreshTokens.createFamily(
                        clientID: client.clientID, userID: grant.userID, scopes: grant.scopes,
                        idleLifetime: client.refreshIdleLifetime, absoluteLifetime: client.refreshAbsoluteLifetime,
                        accessToken: planned)
                }
                let (body, tokenID) = try await tokenAnswer(
                    TokenRequest(
                        userID: grant.userID, clientID: client.clientID, scopes: grant.scopes, grantID: grant.grantID,
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
                context.logger.notice(
                    "token answer kept for the next poll: the redemption is not on enough Redis copies yet",
                    metadata: ["grant_id": "\(grantID)", "client_id": "\(client.clientID)"])
                throw OAuthError.notConfirmedYet
            case .answer(let tokenAnswer):
                switch tokenAnswer.source {
                case .minted:
                    // The jti ties a token seen later (a resource server's log, a leak) to its grant.
                    context.logger.info(
                        "issued access token",
                        metadata: [
                            "grant_id": "\(tokenAnswer.grantID)", "client_id": "\(client.clientID)",
                            "jti": "\(minted?.tokenID ?? "-")", "refresh": "\(minted?.family != nil)",
                        ])
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
            context.logger.warning(
                "could not revoke the refresh family of an answer not sent; it expires unused",
                metadata: ["family_id": "\(family.familyID)", "error": "\(type(of: error))"])
        }
    }

    /// `grant_type=refresh_token` (RFC 6749 §6) for an authenticated client: one rotation script.
    func refresh(form: FormBody, client: RegisteredClient, _ context: DeviceAuthorizationRequestContext) async throws -> Response {
        guard let presented = form["refresh_token"], !presented.isEmpty else { throw OAuthError.invalidRequest("missing parameter 'refresh_token'") }
        var requested: [String]?
        if let scope = form["scope"] {
            requested = try OAuthScopes.parse(scope)
            // A scope the client may no longer ask for is refused even if the family has it.
            if let denied = requested?.first(where: { !client.allowedScopes.contains($0) }) {
                throw OAuthError("invalid_scope", "scope '\(String(denied.prefix(64)))' is not allowed for this client")
            }
        }
        let planned = plannedAccessToken()
        // An oversized token cannot be one of ours: answered like an unknown one without asking Redis.
        let outcome: RefreshOutcome =
            presented.utf8.count <= 256
            ? try await refreshTokens.refresh(token: presented, clientID: client.clientID, scopes: requested, accessToken: planned)
            : .invalidGrant(.unknown)
        switch outcome {
        case .rotated(let rotated):
            let scopes = rotated.scopes.filter { client.allowedScopes.contains($0) }
            return try await tokenResponse(
                TokenRequest(
                    userID: rotated.userID, clientID: client.clientID, scopes: scopes, grantID: rotated.familyID,
                    audience: client.audience, tokenID: planned.tokenID, familyID: rotated.familyID),
                refreshToken: rotated.token, context)
        case .invalidScope:
            throw OAuthError("invalid_scope", "a refresh may ask for some of the granted scopes, never for more")
        case .invalidGrant(let reason):
            if reason != .unknown {
                context.logger.notice("invalid_grant", metadata: ["reason": "\(reason.rawValue)", "client_id": "\(client.clientID)"])
            }
            throw OAuthError(
                "invalid_grant",
                reason == .reused
                    ? "the refresh token was already used; the grant is revoked"
                    : "the refresh token is not valid for this client")
        }
    }

    /// A fresh `jti` and the latest `exp` a token minted now can have.
    func plannedAccessToken() -> AccessTokenReference {
        AccessTokenReference(
            tokenID: UUID().uuidString.lowercased(),
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
        let body = TokenBody(
            accessToken: token.accessToken, tokenType: token.tokenType, expiresIn: token.expiresIn,
            scope: token.scopes.isEmpty ? nil : token.scopes.joined(separator: " "), refreshToken: refreshToken)
        return (JSONResponse.encode(body), token.tokenID)
    }

    /// ``tokenAnswer(_:refreshToken:_:)`` as a response, logged with its `jti`.
    func tokenResponse(_ tokenRequest: TokenRequest, refreshToken: String?, _ context: DeviceAuthorizationRequestContext) async throws -> Response {
        let (body, tokenID) = try await tokenAnswer(tokenRequest, refreshToken: refreshToken, context)
        // The jti ties a token seen later (a resource server's log, a leak) to its grant.
        context.logger.info(
            "issued access token",
            metadata: [
                "grant_id": "\(tokenRequest.grantID)", "client_id": "\(tokenRequest.clientID)",
                "jti": "\(tokenID ?? "-")", "refresh": "\(refreshToken != nil)",
            ])
        return JSONResponse.make(bytes: body)
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
        context.logger.notice(
            "device authorization rate limit reached",
            metadata: ["limit": "\(perClient ? "client" : "ip")", "client_id": "\(client.clientID)"])
        throw OAuthError.rateLimited(
            perClient ? "too many device authorization requests for this client" : "too many device authorization requests from this address",
            retryAfter: retryAfter)
    }

    /// The per-IP bucket of unknown device codes, or `nil` when that limit is off.
    func unknownDeviceCodeBucket(_ request: Request, _ context: DeviceAuthorizationRequestContext) -> RateLimitBucket? {
        guard let limit = configuration.rateLimits.unknownDeviceCodesPerIP else { return nil }
        let origin = RequestOrigin(request: request, peerAddress: context.peerIPAddress, trustedProxies: configuration.trustedProxies)
        return RateLimitBucket(name: "tku", subject: origin.rateLimitKey, limit: limit)
    }

    // MARK: - Requests

    func readForm(_ request: Request) async throws(OAuthError) -> FormBody {
        do {
            return try await FormBody.read(from: request, limit: configuration.maxBodySize, maxParameters: configuration.maxFormParameters)
        } catch {
            throw OAuthError.from(error)
        }
    }

    /// The answer to a failed OAuth request (``OAuthError/answer(to:logger:)``).
    func oauthErrorResponse(_ error: any Error, _ context: DeviceAuthorizationRequestContext) -> Response {
        OAuthError.answer(to: error, logger: context.logger)
    }
}
