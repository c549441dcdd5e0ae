import Foundation

/// A device authorization grant as stored in Redis, mirroring the reference model's `DeviceCode`.
///
/// Values are snapshots: change a grant through ``DeviceCodeStore``, whose every mutation is one
/// atomic Lua script. The plaintext device code is not part of this value (Redis never holds it);
/// ``grantID`` identifies the grant in logs instead.
public struct DeviceCode: Sendable, Hashable {
    /// Identifier of the grant: a hash of the device code, safe to log.
    public var grantID: String
    /// The user code as shown to people, `XXXX-XXXX`.
    public var userCode: String
    /// The stored status. ``status(at:)`` also reports `expired` for a pending code past its expiry.
    public var status: DeviceCodeStatus
    /// Whether the grant was already exchanged for a token (single-use redemption).
    public var isRedeemed: Bool
    /// When the grant expires (Redis server time).
    public var expiresAt: Date
    /// When the device's last accepted poll happened, or `nil` before the first poll.
    public var lastPolledAt: Date?
    /// The approving user, once authorized.
    public var userID: String?
    /// The OAuth client the grant was issued to.
    public var clientID: String
    /// The requested scopes.
    public var scopes: [String]
    /// The current polling interval in seconds (grows by 5 with every `slow_down`).
    public var interval: Int
    /// When the grant was issued (Redis server time).
    public var createdAt: Date
    /// The Redis server's time when this snapshot was read.
    public var observedAt: Date
    /// The address the device asked from, as the issuing node saw it (at most 64 bytes), or `nil`
    /// when the issuer did not pass one. For the confirmation page (RFC 8628 §5.4): a person can
    /// notice that the request did not come from their own network.
    public var requestOrigin: String?

    /// Whether the grant is past its expiry at `date`, as the reference model's `isExpired`.
    public func isExpired(at date: Date) -> Bool { date >= expiresAt }

    /// Whether the grant still waits for a decision at `date`: pending and not expired.
    public func isPending(at date: Date) -> Bool { status == .pending && !isExpired(at: date) }

    /// The status including expiry: `expired` for an undecided grant past its expiry.
    public func status(at date: Date) -> DeviceCodeStatus {
        if status == .pending && isExpired(at: date) { return .expired }
        return status
    }

    /// The status as of ``observedAt`` (Redis server time), so every API node agrees.
    public var currentStatus: DeviceCodeStatus { status(at: observedAt) }
}

/// What ``DeviceCodeStore/issue(clientID:scopes:lifetime:interval:origin:)`` returns to the device.
public struct IssuedDeviceCode: Sendable, Hashable {
    /// The secret the device polls with. Shown once; Redis only holds its hash.
    public var deviceCode: String
    /// The code a person types, `XXXX-XXXX`.
    public var userCode: String
    /// Seconds until the codes expire.
    public var expiresIn: Int
    /// Minimum seconds between polls.
    public var interval: Int
    /// When the codes expire (Redis server time).
    public var expiresAt: Date
    /// Identifier of the grant, safe to log.
    public var grantID: String
}

/// Who tries a user code on the verification page, for the brute-force limits of
/// ``DeviceCodeStore/lookup(userCode:attempt:)``.
public struct LookupAttempt: Sendable, Hashable {
    /// The caller's address buckets, each limited by
    /// ``DeviceCodeStoreConfiguration/maxFailuresPerCaller`` on its own: for example the IPv4
    /// address, or for IPv6 its /64 and its /48 (so one host cannot rotate through its /64, and one
    /// site not through its /48). Only keyed hashes of them reach Redis.
    public var callers: [String]
    /// The signed-in person, limited by ``DeviceCodeStoreConfiguration/maxFailuresPerUser``, or
    /// `nil` before sign-in.
    public var userID: String?

    /// Creates an attempt.
    public init(callers: [String], userID: String? = nil) {
        self.callers = callers
        self.userID = userID
    }
}
