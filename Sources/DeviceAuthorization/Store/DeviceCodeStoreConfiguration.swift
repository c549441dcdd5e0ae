import RedisClient

/// Settings of a ``DeviceCodeStore``. Every API node sharing one Redis must use the same
/// ``keyPrefix`` and ``secret``.
public struct DeviceCodeStoreConfiguration: Sendable {
    /// Prefix of every key the store writes (`da` → `da:{tag}:d:…`).
    public var keyPrefix: String
    /// Secret for the keyed hashes of user codes and callers (HMAC-SHA256), at least 32 bytes.
    public var secret: [UInt8]
    /// Default lifetime of a grant (RFC 8628 `expires_in`).
    public var lifetime: Duration
    /// Default minimum polling interval in seconds (RFC 8628 `interval`).
    public var interval: Int
    /// The highest interval in seconds `slow_down` raises a grant's interval to (+5 s each time);
    /// an interval issued above it is kept as issued.
    public var maxInterval: Int
    /// How long a record stays after expiry so a late poll still learns `expired_token`.
    public var gracePeriod: Duration
    /// How much earlier than the interval a poll may arrive and still be accepted (latency jitter).
    public var pollTolerance: Duration
    /// Failed user-code lookups allowed per caller (for example per client IP) in ``callerWindow``.
    public var maxFailuresPerCaller: Int
    /// Window of the per-caller failure counter.
    public var callerWindow: Duration
    /// Failed user-code lookups allowed per signed-in person in ``userWindow``.
    public var maxFailuresPerUser: Int
    /// Window of the per-person failure counter.
    public var userWindow: Duration
    /// Failed user-code lookups allowed from everyone together in ``globalWindow``.
    public var maxFailuresGlobal: Int
    /// Window of the global failure counter.
    public var globalWindow: Duration
    /// How many fresh user codes `issue` tries when a code is already taken.
    public var userCodeAttempts: Int
    /// A refresh token unused this long dies (the family record's TTL; ``RefreshTokenStore``).
    public var refreshIdleLifetime: Duration
    /// A refresh family dies this long after its device grant was redeemed, however often it
    /// was refreshed.
    public var refreshAbsoluteLifetime: Duration
    /// How many of a family's newest access tokens it remembers, to denylist them when the
    /// family is revoked (bounds the record's size).
    public var maxAccessTokensPerFamily: Int
    /// Copies of every approval, denial and redemption that must confirm it before it counts
    /// (`WAIT`, or `WAITAOF`), or `nil` (the default; right for a single Redis without replicas).
    ///
    /// - An approval or denial that is not confirmed in time throws
    ///   ``DeviceAuthorizationError/Code/notDurable``: it was made on the primary and stays if
    ///   the primary does, but the person is told it is not confirmed.
    /// - A redemption that is not confirmed in time, through
    ///   ``DeviceCodeStore/poll(deviceCode:clientID:origin:answer:)`` with a retry window, answers
    ///   ``TokenPollResult/unconfirmed(grantID:)`` (the token endpoint: 503, retry): the minted answer
    ///   waits, sealed, for the device's next poll, which gets it if the primary stayed, or mints
    ///   again if a failover lost the redemption; one token either way. It is held back at most
    ///   ``unconfirmedRedemptionHold`` after the redemption, then sent unconfirmed (so a replica
    ///   outage delays logins but never loses them). Through
    ///   ``DeviceCodeStore/poll(deviceCode:clientID:)`` (or with the window off) it still returns
    ///   its token: withholding it would lose the login. Both are counted in
    ///   `deviceauth_durability_shortfalls_total` and logged with the grant id.
    /// Confirmed writes survive the primary's loss as long as a replica that has them is promoted
    /// (Sentinel and Cluster promote the most up-to-date replica); this is not strong consistency.
    public var durability: RedisDurability?
    /// How long a redeemed grant's token answer is kept, sealed, for a device whose answer was
    /// lost (a timeout, a node that died mid-request): a poll of the same device code and client
    /// from the same address in this window gets the same answer again, counted in
    /// `deviceauth_grants_redelivered_total`. Any other poll of a redeemed code is a replay.
    /// Used by ``DeviceCodeStore/poll(deviceCode:clientID:origin:answer:)``; `.zero` turns it off
    /// (the poll redeems in one step, and a lost answer is a lost login). At most 10 minutes.
    public var redemptionRetryWindow: Duration
    /// How long a redeemed answer that fewer Redis copies than ``durability`` asks confirmed is
    /// held back (the device is told to retry: 503 `temporarily_unavailable`) before it is sent anyway; `.zero`:
    /// never held (the token goes out at once, counted as a shortfall). 10 s by default.
    public var unconfirmedRedemptionHold: Duration

    /// Creates a configuration.
    /// - Parameters:
    ///   - keyPrefix: prefix of all keys.
    ///   - secret: HMAC key shared by all nodes (≥ 32 bytes).
    ///   - lifetime: default grant lifetime (600 s).
    ///   - interval: default polling interval in seconds (5).
    ///   - maxInterval: cap of the interval `slow_down` raises (60 s, as the reference).
    ///   - gracePeriod: time a record outlives its expiry (300 s).
    ///   - pollTolerance: accepted earliness of a poll (500 ms).
    ///   - maxFailuresPerCaller: failed lookups per caller per window (10).
    ///   - callerWindow: per-caller window (15 min).
    ///   - maxFailuresPerUser: failed lookups per signed-in person per window (20).
    ///   - userWindow: per-person window (15 min).
    ///   - maxFailuresGlobal: failed lookups of everyone per window (1000).
    ///   - globalWindow: global window (1 min).
    ///   - userCodeAttempts: retries on user-code collisions (8).
    ///   - refreshIdleLifetime: idle lifetime of refresh tokens (14 days).
    ///   - refreshAbsoluteLifetime: absolute lifetime of a refresh family (90 days).
    ///   - maxAccessTokensPerFamily: access tokens a family remembers for revocation (16).
    ///   - durability: acknowledgements decisions and redemptions wait for (`nil`: none).
    ///   - redemptionRetryWindow: how long a lost token answer can be fetched again (60 s).
    ///   - unconfirmedRedemptionHold: how long an unconfirmed redemption's answer is held back (10 s).
    public init(
        keyPrefix: String = "da",
        secret: [UInt8],
        lifetime: Duration = .seconds(600),
        interval: Int = 5,
        maxInterval: Int = 60,
        gracePeriod: Duration = .seconds(300),
        pollTolerance: Duration = .milliseconds(500),
        maxFailuresPerCaller: Int = 10,
        callerWindow: Duration = .seconds(900),
        maxFailuresPerUser: Int = 20,
        userWindow: Duration = .seconds(900),
        maxFailuresGlobal: Int = 1000,
        globalWindow: Duration = .seconds(60),
        userCodeAttempts: Int = 8,
        refreshIdleLifetime: Duration = .seconds(14 * 86_400),
        refreshAbsoluteLifetime: Duration = .seconds(90 * 86_400),
        maxAccessTokensPerFamily: Int = 16,
        durability: RedisDurability? = nil,
        redemptionRetryWindow: Duration = .seconds(60),
        unconfirmedRedemptionHold: Duration = .seconds(10)
    ) {
        self.unconfirmedRedemptionHold = unconfirmedRedemptionHold
        self.durability = durability
        self.redemptionRetryWindow = redemptionRetryWindow
        self.refreshIdleLifetime = refreshIdleLifetime
        self.refreshAbsoluteLifetime = refreshAbsoluteLifetime
        self.maxAccessTokensPerFamily = maxAccessTokensPerFamily
        self.keyPrefix = keyPrefix
        self.secret = secret
        self.lifetime = lifetime
        self.interval = interval
        self.maxInterval = maxInterval
        self.gracePeriod = gracePeriod
        self.pollTolerance = pollTolerance
        self.maxFailuresPerCaller = maxFailuresPerCaller
        self.callerWindow = callerWindow
        self.maxFailuresPerUser = maxFailuresPerUser
        self.userWindow = userWindow
        self.maxFailuresGlobal = maxFailuresGlobal
        self.globalWindow = globalWindow
        self.userCodeAttempts = userCodeAttempts
    }
}
