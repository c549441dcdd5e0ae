/// The answer to a token-endpoint poll (RFC 8628 §3.5), decided atomically in Redis.
public enum PollOutcome: Sendable, Hashable {
    /// The person has not decided yet; poll again after the interval.
    case authorizationPending
    /// The device polled too early; the interval is now `newInterval` seconds for this and all
    /// later polls.
    case slowDown(newInterval: Int)
    /// The person denied the request.
    case accessDenied
    /// The grant expired before it was approved or redeemed.
    case expiredToken
    /// The device code is unknown, belongs to another client, or was already redeemed.
    case invalidGrant(InvalidGrantReason)
    /// Approved: issue a token now. This outcome happens at most once per grant.
    case authorized(userID: String, scopes: [String], grantID: String)

    /// The RFC 6749 / RFC 8628 `error` value for this outcome, or `nil` on success.
    public var oauthError: String? {
        switch self {
        case .authorizationPending: "authorization_pending"
        case .slowDown: "slow_down"
        case .accessDenied: "access_denied"
        case .expiredToken: "expired_token"
        case .invalidGrant: "invalid_grant"
        case .authorized: nil
        }
    }
}

/// Why a poll got `invalid_grant`.
public enum InvalidGrantReason: String, Sendable, Hashable {
    /// No such device code (never issued, malformed, or gone after expiry and grace).
    case unknown
    /// The device code was issued to another client.
    case wrongClient
    /// The code was already exchanged for a token: a replay. Token issuers may revoke.
    case alreadyRedeemed
    /// The record says "approved" but its approval MAC is missing or wrong: someone wrote to
    /// Redis without the node secret. No token; logged with the grant id and counted
    /// (`deviceauth_grants_forged_total`).
    case forged
}

/// An approved grant whose token answer the token endpoint is asked to mint
/// (``DeviceCodeStore/poll(deviceCode:clientID:origin:answer:)``).
public struct ApprovedGrant: Sendable, Hashable {
    /// The approving user.
    public var userID: String
    /// The granted scopes.
    public var scopes: [String]
    /// The grant's id (safe to log).
    public var grantID: String
}

/// What the token endpoint sends for a poll that may redeem.
public enum TokenPollResult: Sendable, Hashable {
    /// Not approved: answer with this outcome (never ``PollOutcome/authorized(userID:scopes:grantID:)``).
    case outcome(PollOutcome)
    /// Send this token answer.
    case answer(TokenAnswer)
    /// The grant was redeemed with the answer this poll minted, but fewer Redis copies confirmed
    /// it than ``DeviceCodeStoreConfiguration/durability`` asks: tell the device to poll again
    /// shortly (the token endpoint answers 503 `temporarily_unavailable`, `Retry-After: 2`) and keep what was minted (the answer waits, sealed, for the device's next poll; after a
    /// failover that lost it, that poll mints again). Never discard the minted refresh family here.
    case unconfirmed(grantID: String)
}

/// A token answer (the bytes of the RFC 6749 §5.1 body) and where it came from.
public struct TokenAnswer: Sendable, Hashable {
    /// Where the answer came from.
    public enum Source: Sendable, Hashable {
        /// Minted by this poll, which redeemed the grant.
        case minted
        /// Minted by an earlier poll of this device code from the same address, within the
        /// retry window: that poll's answer was lost (or it is still on its way).
        case redelivered
        /// This poll minted an answer, but a concurrent poll from the same address redeemed
        /// first: its answer is sent, and the one this poll minted must be discarded (its
        /// refresh family revoked).
        case concurrentRedemption
    }

    /// The answer's bytes.
    public var body: [UInt8]
    /// The grant's id (safe to log).
    public var grantID: String
    /// Where it came from.
    public var source: Source
}
