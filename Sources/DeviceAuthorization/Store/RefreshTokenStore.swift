import Crypto
import Foundation
import Logging
import Metrics
import RedisClient

/// Refresh tokens on Redis (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14),
/// revocation (RFC 7009) and the Redis side of introspection (RFC 7662).
///
/// A device grant redeemed with a refresh token starts a **family**: one Redis hash that holds
/// the keyed hash of the one live refresh token, the client, user and scopes, and the family's
/// recent access tokens. ``refresh(token:clientID:scopes:accessToken:)`` is one script (one round
/// trip): the presented token is checked against the live one and replaced by a new one, so racing
/// refreshes of one token on any number of nodes rotate it exactly once. Presenting a token that
/// was already rotated is **reuse**: the family is revoked (every token of it fails from then on,
/// the newest too) and its access tokens are denylisted until they expire.
///
/// Idle and absolute lifetimes are the family record's native TTL. Tokens are never stored: only
/// 96 bits of HMAC(node secret, token). A token is `<family>.<random>.<mac>`: 64 random bits
/// (hex) naming the family (the routing tag of its keys), 256 random bits, and a 128-bit MAC under
/// the node secret, checked before Redis is asked.
///
/// ```swift
/// let refresh = RefreshTokenStore(client: redis, configuration: storeConfiguration)
/// let issued = try await refresh.createFamily(clientID: "tv", userID: "alice", scopes: ["profile"])
/// let outcome = try await refresh.refresh(token: issued.token, clientID: "tv")
/// // .rotated(…) once; the old token then gets .invalidGrant(.reused) and revokes the family
/// ```
public final class RefreshTokenStore: Sendable {
    /// The settings the store was created with (its refresh lifetimes, prefix and secret).
    public let configuration: DeviceCodeStoreConfiguration
    private let client: RedisClient
    let keys: KeySchema
    private let logger: Logger
    private let metrics = RefreshMetrics()

    /// Creates a store on `client`; every node must use the same key prefix and secret.
    public init(client: RedisClient, configuration: DeviceCodeStoreConfiguration, logger: Logger = Logger(label: "deviceauth.refresh")) {
        self.client = client
        self.configuration = configuration
        self.keys = KeySchema(prefix: configuration.keyPrefix, secret: configuration.secret)
        self.logger = logger
    }

    // MARK: - Issuing and rotating

    /// Starts a family for a just-redeemed grant and returns its first refresh token.
    /// - Parameters:
    ///   - clientID: the client the grant was redeemed by; only it may refresh.
    ///   - userID: the approving user.
    ///   - scopes: the granted scopes; refreshes may narrow them, never widen them.
    ///   - idleLifetime: a token unused this long dies (default ``DeviceCodeStoreConfiguration/refreshIdleLifetime``).
    ///   - absoluteLifetime: the family dies this long after it started, however used
    ///     (default ``DeviceCodeStoreConfiguration/refreshAbsoluteLifetime``).
    ///   - accessToken: the access token issued with it, denylisted if the family is revoked.
    /// - Throws: ``DeviceAuthorizationError`` (`invalidArgument`) or ``RedisError``.
    public func createFamily(
        clientID: String, userID: String, scopes: [String], idleLifetime: Duration? = nil, absoluteLifetime: Duration? = nil,
        accessToken: AccessTokenReference? = nil
    ) async throws -> IssuedRefreshToken {
        let idle = idleLifetime ?? configuration.refreshIdleLifetime
        let absolute = absoluteLifetime ?? configuration.refreshAbsoluteLifetime
        guard idle > .zero, absolute > .zero, absolute <= .seconds(3660 * 86_400) else {
            throw DeviceAuthorizationError(.invalidArgument, "refresh lifetimes must be positive and at most 10 years")
        }
        guard !clientID.isEmpty, clientID.utf8.count <= 256, !userID.isEmpty, scopes.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
            throw DeviceAuthorizationError(.invalidArgument, "a family needs a client id (1…256 bytes), a user id and scopes without spaces")
        }
        let scopeText = scopes.joined(separator: " ")
        let access = Self.accessArguments(accessToken)
        for _ in 0..<4 {
            let familyID = hexString(randomBytes(8))
            let token = makeToken(familyID: familyID)
            let mac = keys.familyMAC(familyID: familyID, clientID: clientID, userID: userID, scopes: scopeText)
            let expires =
                try await client.eval(
                    RefreshScripts.create, keys: [keys.familyKey(familyID)],
                    arguments: [keys.refreshTokenID(token), clientID, userID, scopeText, idle.milliseconds, absolute.milliseconds, mac, access.id, access.exp]
                ).int ?? 0
            guard expires != 0 else { continue }
            metrics.families.increment()
            return IssuedRefreshToken(token: token, familyID: familyID, expiresAt: Date(milliseconds: expires))
        }
        throw DeviceAuthorizationError(.invalidArgument, "no free refresh family id after 4 attempts")
    }

    /// Exchanges a refresh token for a new one, in one round trip (RFC 6749 §6).
    /// - Parameters:
    ///   - token: the presented refresh token.
    ///   - clientID: the authenticated client; a token of another client gets `wrongClient`.
    ///   - scopes: the scopes asked for (`nil`: the family's); each must be one of the family's.
    ///   - accessToken: the access token that will be issued with the new refresh token, kept in
    ///     the family (the newest ``DeviceCodeStoreConfiguration/maxAccessTokensPerFamily``) so a
    ///     revocation can denylist it.
    /// - Returns: ``RefreshOutcome/rotated(_:)`` at most once per token; ``RefreshOutcome/invalidScope``
    ///   when `scopes` asks for more than the family has (nothing changes); else
    ///   ``RefreshOutcome/invalidGrant(_:)``. ``RefreshFailure/reused`` means the family was just
    ///   revoked (counted in `deviceauth_refresh_reuse_detected_total` and logged with the family id).
    public func refresh(token: String, clientID: String, scopes: [String]? = nil, accessToken: AccessTokenReference? = nil) async throws -> RefreshOutcome {
        metrics.requests.increment()
        let scopes = scopes?.isEmpty == true ? nil : scopes
        guard let familyID = verifiedFamilyID(of: token) else {
            metrics.failures.increment()
            return .invalidGrant(.unknown)
        }
        if let scopes, !scopes.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) { return .invalidScope }
        let newToken = makeToken(familyID: familyID)
        let access = Self.accessArguments(accessToken)
        let reply = try await client.eval(
            RefreshScripts.rotate, keys: [keys.familyKey(familyID), keys.familyDenylistKey(familyID)],
            arguments: [
                keys.refreshTokenID(token), clientID, scopes?.joined(separator: " ") ?? "", keys.refreshTokenID(newToken),
                access.id, access.exp, max(1, configuration.maxAccessTokensPerFamily),
            ])
        let parts = (reply.array ?? []).map { $0.string ?? "" }
        switch parts.first {
        case "rotated" where parts.count == 5:
            let (userID, familyScopes, mac) = (parts[1], parts[2], parts[3])
            guard KeySchema.macsEqual(mac, keys.familyMAC(familyID: familyID, clientID: clientID, userID: userID, scopes: familyScopes)) else {
                metrics.failures.increment()
                logger.error(
                    "Forged refresh family in Redis: its MAC is missing or wrong; no token issued. Someone wrote to Redis without the node secret",
                    metadata: ["family_id": "\(familyID)", "client_id": "\(clientID)"])
                return .invalidGrant(.forged)
            }
            metrics.rotations.increment()
            let family = familyScopes.split(separator: " ").map(String.init)
            return .rotated(
                RotatedRefreshToken(
                    token: newToken, familyID: familyID, userID: userID, scopes: scopes ?? family, familyScopes: family,
                    expiresAt: Date(milliseconds: Int(parts[4]) ?? 0)))
        case "invalid_scope":
            return .invalidScope
        case "reused":
            metrics.failures.increment()
            metrics.reuses.increment()
            metrics.revocations.increment()
            logger.warning(
                "Refresh token reuse: a rotated refresh token was presented again; the whole family is revoked",
                metadata: ["family_id": "\(familyID)", "client_id": "\(clientID)"])
            return .invalidGrant(.reused)
        case "wrong_client":
            metrics.failures.increment()
            return .invalidGrant(.wrongClient)
        case "expired":
            metrics.failures.increment()
            return .invalidGrant(.expired)
        default:
            metrics.failures.increment()
            return .invalidGrant(.unknown)
        }
    }

    // MARK: - Revocation

    /// Revokes the family of a refresh token (RFC 7009 §2.1): any of its tokens, live or rotated,
    /// revokes it, and its recent access tokens are denylisted until they expire.
    /// - Returns: ``RevocationOutcome``; an unknown or malformed token is `.unknown` (RFC 7009:
    ///   the endpoint answers 200 all the same).
    public func revoke(refreshToken token: String, clientID: String) async throws -> RevocationOutcome {
        guard let familyID = verifiedFamilyID(of: token) else { return .unknown }
        let reply = try await client.eval(
            RefreshScripts.revoke, keys: [keys.familyKey(familyID), keys.familyDenylistKey(familyID)],
            arguments: [keys.refreshTokenID(token), clientID])
        switch reply.string {
        case "revoked":
            metrics.revocations.increment()
            logger.notice("refresh family revoked", metadata: ["family_id": "\(familyID)", "client_id": "\(clientID)"])
            return .revoked
        case "wrong_client": return .wrongClient
        default: return .unknown
        }
    }

    /// Denylists one access token until its expiry (RFC 7009 for access tokens).
    /// - Parameters:
    ///   - tokenID: its `jti`.
    ///   - familyID: its refresh family (the `sid` claim), when it has one: the entry then sits
    ///     with the family's.
    ///   - expiresAt: its `exp`; the entry lives until a minute after.
    public func revokeAccessToken(tokenID: String, familyID: String?, expiresAt: Date) async throws {
        guard let key = denylistKey(tokenID: tokenID, familyID: familyID) else {
            throw DeviceAuthorizationError(.invalidArgument, "a jti is 1…128 characters from A-Z a-z 0-9 . _ - and a family id 16 hex digits")
        }
        _ = try await client.eval(RefreshScripts.denylist, keys: [key], arguments: [tokenID, Int(expiresAt.timeIntervalSince1970.rounded(.up))])
        metrics.revocations.increment()
    }

    /// Whether an access token is on a denylist (revoked itself, or by its family).
    public func isAccessTokenRevoked(tokenID: String, familyID: String?) async throws -> Bool {
        guard let key = denylistKey(tokenID: tokenID, familyID: familyID) else { return true }
        return try await client.eval(RefreshScripts.isDenylisted, keys: [key], arguments: [tokenID]).int == 1
    }

    // MARK: - Introspection

    /// What introspection may say about a refresh token: `nil` unless it is its family's live
    /// token, unexpired (idle and absolute) and the family record is intact.
    public func introspect(refreshToken token: String) async throws -> RefreshTokenInfo? {
        guard let familyID = verifiedFamilyID(of: token) else { return nil }
        let parts = (try await client.eval(RefreshScripts.read, keys: [keys.familyKey(familyID)], arguments: [keys.refreshTokenID(token)]).array ?? [])
            .map { $0.string ?? "" }
        guard parts.count == 7,
            KeySchema.macsEqual(parts[3], keys.familyMAC(familyID: familyID, clientID: parts[0], userID: parts[1], scopes: parts[2]))
        else { return nil }
        return RefreshTokenInfo(
            familyID: familyID, clientID: parts[0], userID: parts[1], scopes: parts[2].split(separator: " ").map(String.init),
            issuedAt: Date(milliseconds: Int(parts[4]) ?? 0), expiresAt: Date(milliseconds: Int(parts[5]) ?? 0))
    }

    // MARK: - Operations

    /// The Redis key of a token's family record (for operators, tests and benchmarks), or `nil`
    /// when the token is malformed or not one of this deployment's.
    public func familyKey(forToken token: String) -> String? {
        verifiedFamilyID(of: token).map { keys.familyKey($0) }
    }

    /// A standing rotation of `token`'s family for benchmarks: the rotation script (its Redis
    /// function name and SHA-1), keys and arguments, with the new token id equal to the presented
    /// one, so `redis-benchmark` can send the same call again and again and every call runs the
    /// whole rotation (client, expiry, token and scope checks; the writes; the TTL) as a refresh does.
    public func standingRotation(token: String, clientID: String, accessTokenID: String = "bench-jti") -> (function: String, sha1: String, keys: [String], arguments: [String])? {
        guard let familyID = verifiedFamilyID(of: token) else { return nil }
        let id = keys.refreshTokenID(token)
        return (
            RefreshScripts.rotate.functionName, RefreshScripts.rotate.sha1, [keys.familyKey(familyID), keys.familyDenylistKey(familyID)],
            [id, clientID, "", id, accessTokenID, "\(Int(Date().timeIntervalSince1970) + 86_400)", "\(max(1, configuration.maxAccessTokensPerFamily))"]
        )
    }

    // MARK: - Tokens

    /// `<family>.<random>.<mac>`: 16 hex, 43 and 22 base64url characters.
    func makeToken(familyID: String) -> String {
        let random = Base64URL.encode(randomBytes(32))
        return familyID + "." + random + "." + Base64URL.encode(keys.refreshTokenMAC(familyID: familyID, random: random))
    }

    /// The family id of a token this deployment issued (its MAC checks), else `nil`.
    func verifiedFamilyID(of token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count == 16, parts[1].utf8.count == 43, parts[2].utf8.count == 22,
            parts[0].utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        else { return nil }
        let expected = Base64URL.encode(keys.refreshTokenMAC(familyID: parts[0], random: parts[1]))
        guard KeySchema.macsEqual(String(parts[2]), expected) else { return nil }
        return String(parts[0])
    }

    private func denylistKey(tokenID: String, familyID: String?) -> String? {
        guard Self.isValidTokenID(tokenID) else { return nil }
        guard let familyID else { return keys.accessTokenDenylistKey(tokenID: tokenID) }
        guard familyID.utf8.count == 16, familyID.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
        return keys.familyDenylistKey(familyID)
    }

    /// A `jti` the scripts can keep in a space-separated list and a hash field name.
    static func isValidTokenID(_ id: String) -> Bool {
        (1...128).contains(id.utf8.count)
            && id.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 46 || $0 == 95 }
    }

    private static func accessArguments(_ reference: AccessTokenReference?) -> (id: String, exp: Int) {
        guard let reference, isValidTokenID(reference.tokenID) else { return ("", 0) }
        return (reference.tokenID, Int(reference.expiresAt.timeIntervalSince1970.rounded(.up)))
    }
}

/// An access token as a family remembers it, to denylist it when the family is revoked.
public struct AccessTokenReference: Sendable, Hashable {
    /// Its `jti` (1…128 characters from `A-Z a-z 0-9 . _ -`; others are not remembered).
    public var tokenID: String
    /// Its `exp` (or later).
    public var expiresAt: Date

    /// Creates a reference.
    public init(tokenID: String, expiresAt: Date) {
        self.tokenID = tokenID
        self.expiresAt = expiresAt
    }
}

/// A new family's first refresh token.
public struct IssuedRefreshToken: Sendable, Hashable {
    /// The `refresh_token` to hand to the client (never stored).
    public var token: String
    /// The family id (safe to log; the `sid` of the family's access tokens).
    public var familyID: String
    /// The family's absolute expiry.
    public var expiresAt: Date
}

/// A successful rotation.
public struct RotatedRefreshToken: Sendable, Hashable {
    /// The new `refresh_token`; the presented one is dead.
    public var token: String
    /// The family id.
    public var familyID: String
    /// The approving user.
    public var userID: String
    /// The scopes of the new access token (the requested ones, or the family's).
    public var scopes: [String]
    /// The family's scopes, which the new refresh token keeps (RFC 6749 §6).
    public var familyScopes: [String]
    /// The family's absolute expiry.
    public var expiresAt: Date
}

/// The answer to a refresh.
public enum RefreshOutcome: Sendable, Hashable {
    /// Rotated: issue the new pair.
    case rotated(RotatedRefreshToken)
    /// The requested scopes are not all the family's (RFC 6749 `invalid_scope`); nothing changed.
    case invalidScope
    /// RFC 6749 `invalid_grant`.
    case invalidGrant(RefreshFailure)
}

/// Why a refresh got `invalid_grant`.
public enum RefreshFailure: String, Sendable, Hashable {
    /// Malformed, never issued, revoked, or expired by its idle lifetime.
    case unknown
    /// Issued to another client; nothing changed.
    case wrongClient = "wrong_client"
    /// Already rotated: the family has just been revoked (RFC 9700 §4.14.2).
    case reused
    /// The family's absolute lifetime is over.
    case expired
    /// The family record's MAC is wrong: written by someone without the node secret.
    case forged
}

/// The answer to a refresh-token revocation.
public enum RevocationOutcome: Sendable, Hashable {
    /// The family is revoked.
    case revoked
    /// No such live family (already revoked, expired, never issued).
    case unknown
    /// The token belongs to another client; nothing changed.
    case wrongClient
}

/// A live refresh token, for introspection (RFC 7662).
public struct RefreshTokenInfo: Sendable, Hashable {
    /// The family id.
    public var familyID: String
    /// The client it was issued to.
    public var clientID: String
    /// The approving user.
    public var userID: String
    /// The family's scopes.
    public var scopes: [String]
    /// When the family started.
    public var issuedAt: Date
    /// When the token expires (idle or absolute, whichever is first) unless rotated before.
    public var expiresAt: Date
}

/// Counters of refresh tokens, through swift-metrics.
struct RefreshMetrics: Sendable {
    let families = Counter(label: "deviceauth_refresh_families_total")
    let requests = Counter(label: "deviceauth_refresh_requests_total")
    let rotations = Counter(label: "deviceauth_refresh_rotations_total")
    let failures = Counter(label: "deviceauth_refresh_failures_total")
    let reuses = Counter(label: "deviceauth_refresh_reuse_detected_total")
    let revocations = Counter(label: "deviceauth_revocations_total")
}
