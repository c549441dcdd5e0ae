import Foundation
import Logging
import Metrics
import RedisClient

/// Runs the RFC 8628 device-code lifecycle on Redis, atomically across any number of API nodes.
///
/// Every decision is one Lua script using the Redis server's clock:
/// - ``issue(clientID:scopes:lifetime:interval:origin:)`` writes the grant's one record, at a key
///   derived from its user code (only if none is there, so two grants never share a user code);
/// - ``lookup(userCode:attempt:)`` finds a grant for the verification page, with exact brute-force
///   limits (each attempt is charged before it is answered);
/// - ``approve(userCode:userID:grantID:)`` / ``deny(userCode:grantID:)`` compare-and-set from pending only;
/// - ``poll(deviceCode:clientID:)`` is the token endpoint in **one round trip**: rate limit
///   (`slow_down`, +5 s), poll time, outcome, and single-use redemption.
///
/// The reference model's fine-grained methods (``authorize(_:userID:)``, ``deny(_:)``,
/// ``checkRateLimit(_:intervalSeconds:)``, ``updatePollTime(_:)``) exist too, each atomic; token
/// endpoints should use ``poll(deviceCode:clientID:)``, which does their work in one step.
///
/// ```swift
/// let store = DeviceCodeStore(client: redis, configuration: .init(secret: secret))
/// let issued = try await store.issue(clientID: "tv-app", scopes: ["profile"])
/// try await store.approve(userCode: issued.userCode, userID: "alice")
/// let outcome = try await store.poll(deviceCode: issued.deviceCode, clientID: "tv-app")
/// // .authorized(userID: "alice", scopes: ["profile"], grantID: …) — once; then .invalidGrant
/// ```
public final class DeviceCodeStore: Sendable {
    /// The settings the store was created with.
    public let configuration: DeviceCodeStoreConfiguration
    let client: RedisClient
    /// Internal (not private) so tests can build the keys an attacker with Redis access would write.
    let keys: KeySchema
    let seal: AnswerSeal
    let logger: Logger
    let metrics = StoreMetrics()

    /// Creates a store on `client`.
    public init(client: RedisClient, configuration: DeviceCodeStoreConfiguration, logger: Logger = Logger(label: "deviceauth.store")) {
        self.client = client
        self.configuration = configuration
        self.keys = KeySchema(prefix: configuration.keyPrefix, secret: configuration.secret)
        self.seal = AnswerSeal(secret: configuration.secret)
        self.logger = logger
    }

    // MARK: - Issuing

    /// Issues a new grant: a device code (256 random bits) and a user code (RFC 8628 §6.1).
    /// - Parameters:
    ///   - clientID: the OAuth client asking.
    ///   - scopes: requested scopes (already validated by the caller).
    ///   - lifetime: overrides the configured lifetime (per-client settings).
    ///   - interval: overrides the configured polling interval in seconds.
    ///   - origin: the address the device asked from, as this node saw it, for the confirmation
    ///     page (``DeviceCode/requestOrigin``). At most its first 64 bytes are stored (cut at a
    ///     character boundary); `nil` or empty stores nothing.
    /// - Throws: ``DeviceAuthorizationError`` (``DeviceAuthorizationError/Code/invalidArgument``,
    ///   ``DeviceAuthorizationError/Code/userCodeSpaceExhausted``) or ``RedisError``.
    public func issue(clientID: String, scopes: [String], lifetime: Duration? = nil, interval: Int? = nil, origin: String? = nil) async throws -> IssuedDeviceCode {
        try await issue(clientID: clientID, scopes: scopes, lifetime: lifetime, interval: interval, origin: origin, userCodes: { UserCode.generate() })
    }

    /// At most 64 bytes of an origin, cut between Unicode scalars (never inside one).
    static func truncatedOrigin(_ origin: String?) -> String {
        guard let origin else { return "" }
        var result = String.UnicodeScalarView()
        var bytes = 0
        for scalar in origin.unicodeScalars {
            bytes += UTF8.width(scalar)
            guard bytes <= 64 else { break }
            result.append(scalar)
        }
        return String(result)
    }

    /// `issue` with a user-code source, so tests can force collisions.
    func issue(clientID: String, scopes: [String], lifetime: Duration?, interval: Int?, origin: String? = nil, userCodes: () -> String) async throws -> IssuedDeviceCode {
        guard !clientID.isEmpty, clientID.utf8.count <= 256 else {
            throw DeviceAuthorizationError(.invalidArgument, "client_id must be 1…256 bytes")
        }
        guard scopes.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
            throw DeviceAuthorizationError(.invalidArgument, "scopes must be non-empty and contain no spaces")
        }
        let lifetime = lifetime ?? configuration.lifetime
        let interval = interval ?? configuration.interval
        // The upper bounds keep millisecond arithmetic (here and in the scripts) far from overflow.
        guard lifetime > .zero, lifetime <= .seconds(366 * 86_400), (0...86_400).contains(interval) else {
            throw DeviceAuthorizationError(.invalidArgument, "lifetime must be positive and at most 366 days, interval 0…86400 seconds")
        }
        for _ in 0..<max(1, configuration.userCodeAttempts) {
            let userCode = userCodes()
            let (tag, id) = keys.userCodeDigest(userCode)
            let (deviceCode, digest) = keys.makeDeviceCode(tag: tag, id: id)
            let expires =
                try await client.eval(
                    StoreScripts.issue,
                    keys: [keys.deviceKey(tag: tag, id: id)],
                    arguments: [
                        digest, lifetime.milliseconds, configuration.gracePeriod.milliseconds, interval, clientID, scopes.joined(separator: " "),
                        OriginEncoding.encode(Self.truncatedOrigin(origin)),
                    ]
                ).int ?? 0
            if expires == 0 {
                metrics.userCodeCollisions.increment()
                continue
            }
            metrics.issued.increment()
            return IssuedDeviceCode(
                deviceCode: deviceCode,
                userCode: UserCode.display(userCode),
                expiresIn: Int(lifetime.milliseconds / 1000),
                interval: interval,
                expiresAt: Date(milliseconds: expires),
                grantID: keys.grantID(tag: tag, id: id, digest: digest)
            )
        }
        throw DeviceAuthorizationError(.userCodeSpaceExhausted, "no free user code after \(configuration.userCodeAttempts) attempts")
    }

    // MARK: - The reference model's methods, each atomic

    /// The grant of a device code, or `nil` when unknown (reference: find by device code).
    public func find(deviceCode: String) async throws -> DeviceCode? {
        guard let (tag, id, digest) = keys.decode(deviceCode: deviceCode) else { return nil }
        return try await read(tag: tag, id: id, digest: digest, userCode: nil)
    }

    /// Reference `authorize(userID:)`: pending → authorized, atomically.
    public func authorize(_ code: DeviceCode, userID: String) async throws {
        try await decide(grant: code, status: "a", userID: userID)
        metrics.approved.increment()
    }

    /// Reference `deny()`: pending → denied, atomically.
    public func deny(_ code: DeviceCode) async throws {
        try await decide(grant: code, status: "d", userID: "")
        metrics.denied.increment()
    }

    /// Reference `checkRateLimit(intervalSeconds:)`: `true` when the device polled earlier than
    /// `intervalSeconds` after its last accepted poll; the stored interval then grows by 5 s.
    public func checkRateLimit(_ code: DeviceCode, intervalSeconds: Int) async throws -> Bool {
        let grant = try record(of: code)
        let reply = try await client.eval(
            StoreScripts.checkRateLimit, keys: [grant.key],
            arguments: [intervalSeconds, configuration.pollTolerance.milliseconds, configuration.maxInterval, grant.digest])
        if reply.int == -1 { throw DeviceAuthorizationError(.notFound, "the grant no longer exists") }
        return reply.int == 1
    }

    /// Reference `updatePollTime()`: records an accepted poll now (Redis time).
    public func updatePollTime(_ code: DeviceCode) async throws {
        let grant = try record(of: code)
        let reply = try await client.eval(StoreScripts.updatePollTime, keys: [grant.key], arguments: [grant.digest])
        if reply.int != 1 { throw DeviceAuthorizationError(.notFound, "the grant no longer exists") }
    }

    private func record(of code: DeviceCode) throws -> (key: String, digest: String) {
        guard let grant = keys.grant(code.grantID) else {
            throw DeviceAuthorizationError(.invalidArgument, "malformed grant id")
        }
        return grant
    }

    /// The snapshot's client and scopes are what the approval MAC covers; the script refuses
    /// (`grantChanged`) if the record holds others.
    private func decide(grant code: DeviceCode, status: String, userID: String) async throws {
        let grant = try record(of: code)
        var arguments: [any RedisArgument] = [grant.digest, status, userID]
        if status == "a" {
            arguments += approvalArguments(grantID: code.grantID, userID: userID, clientID: code.clientID, scopes: code.scopes.joined(separator: " "))
        }
        try await runDecision(keys: [grant.key], arguments: arguments, grantID: code.grantID)
    }

    // MARK: - Reading records

    /// The record at (`tag`, `id`) if its device-code digest is `digest` (`""`: any).
    func read(tag: String, id: String, digest: String, userCode: String?) async throws -> DeviceCode? {
        let fields = try await client.eval(StoreScripts.read, keys: [keys.deviceKey(tag: tag, id: id)], arguments: [digest]).array ?? []
        guard fields.count == 11 else { return nil }
        let text = fields.map { $0.string ?? "" }
        let statusCode = text[2]
        let status: DeviceCodeStatus =
            switch statusCode {
            case "a", "r": .authorized
            case "d": .denied
            default: .pending
            }
        return DeviceCode(
            grantID: keys.grantID(tag: tag, id: id, digest: text[0]),
            userCode: userCode.map(UserCode.display) ?? "",
            status: status,
            isRedeemed: statusCode == "r",
            expiresAt: Date(milliseconds: Int(text[5]) ?? 0),
            lastPolledAt: Int(text[6]).map { Date(milliseconds: $0) },
            userID: text[8].isEmpty ? nil : text[8],
            clientID: text[3],
            scopes: text[4].split(separator: " ").map(String.init),
            interval: Int(text[7]) ?? configuration.interval,
            createdAt: Date(milliseconds: Int(text[9]) ?? 0),
            observedAt: Date(milliseconds: Int(text[1]) ?? 0),
            requestOrigin: (fields[10].bytes).flatMap { $0.isEmpty ? nil : OriginEncoding.decode($0) }
        )
    }

    // MARK: - Operations

    /// SHA-1 of the poll script, so benchmarks can run the same script with `redis-benchmark`.
    public static var pollScriptSHA1: String { StoreScripts.poll.sha1 }

    /// The Redis key of a device code's record (for operators and benchmarks), or `nil` when the
    /// code is malformed.
    public func recordKey(forDeviceCode deviceCode: String) -> String? {
        guard let (tag, id, _) = keys.decode(deviceCode: deviceCode) else { return nil }
        return keys.deviceKey(tag: tag, id: id)
    }
}

extension Date {
    init(milliseconds: Int) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}

/// Counters of the lifecycle, through swift-metrics (exported by whatever backend the app
/// bootstraps, e.g. Prometheus).
struct StoreMetrics: Sendable {
    let issued = Counter(label: "deviceauth_grants_issued_total")
    let approved = Counter(label: "deviceauth_grants_approved_total")
    let denied = Counter(label: "deviceauth_grants_denied_total")
    let redeemed = Counter(label: "deviceauth_grants_redeemed_total")
    let replays = Counter(label: "deviceauth_grants_replayed_total")
    /// Token answers sent again within the retry window (a poll whose first answer was lost).
    let redelivered = Counter(label: "deviceauth_grants_redelivered_total")
    let forged = Counter(label: "deviceauth_grants_forged_total")
    let slowDowns = Counter(label: "deviceauth_polls_slow_down_total")
    let expiredPolls = Counter(label: "deviceauth_polls_expired_total")
    let lockouts = Counter(label: "deviceauth_user_code_lockouts_total")
    let userCodeCollisions = Counter(label: "deviceauth_user_code_collisions_total")
    /// Decisions (`decide`) and redemptions (`redeem`) that fewer copies confirmed than
    /// ``DeviceCodeStoreConfiguration/durability`` asks for.
    func durabilityShortfalls(_ operation: String) -> Counter {
        Counter(label: "deviceauth_durability_shortfalls_total", dimensions: [("operation", operation)])
    }
}
